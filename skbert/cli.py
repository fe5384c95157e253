"""The ``skbert`` command line.

Sub-commands register themselves through small ``add_*_parser`` functions so
that each lives next to the idea it belongs to; this module only wires them
and turns expected errors into one-line messages with a non-zero exit code.
"""

import argparse
import logging
import re
import sys

from ._assembly import POOLINGS

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """An error worth one line on stderr and a non-zero exit code.

    Parameters
    ----------
    message : str
    exit_code : int, default=1
        2 for a wrong option value (as argparse's usage errors), 1 otherwise.
    """

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


# A word that starts like a negative number ("-1", "-1,-2", "-.5", "-1e-3",
# "-1,x") is a value, never an option: no skbert option starts with a digit,
# and the option's type then judges the value. argparse's own test accepts only
# a single number, so ``--layers -1,-2`` (as documented) read "-1,-2" as an
# unknown option and failed with "expected one argument".
_NEGATIVE_NUMBER = re.compile(r"^-\.?\d")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser that reads ``-1,-2`` as a value, as it reads ``-1``.

    Sub-parsers are of the same class (``add_subparsers`` uses the parent's).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER


def _layers(value):
    if value == "all":
        return "all"
    try:
        parts = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an int, a comma-separated list of ints or 'all'; got {value!r}"
        ) from None
    return parts[0] if len(parts) == 1 else parts


def add_vectorizer_options(parser):
    """Options that map one to one onto BertVectorizer's parameters."""
    from ._backend import DEFAULT_MODEL

    group = parser.add_argument_group("representation (BertVectorizer parameters)")
    group.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local folder (default: %(default)s, bundled offline)")
    group.add_argument("--revision", default=None, help="hub revision to load")
    group.add_argument("--layers", type=_layers, default=-1, help="layer index, comma-separated indices, or 'all' (default: -1, the last)")
    group.add_argument("--layer-agg", default="concat", choices=["concat", "mean", "weighted"], help="how several layers combine (default: %(default)s)")
    group.add_argument("--pooling", default="mean", choices=("auto",) + POOLINGS, help="token pooling; auto follows the model's own sentence-transformers configuration (default: %(default)s)")
    group.add_argument("--exclude-special-tokens", action="store_true", help="leave [CLS]/[SEP] out of the pooling")
    group.add_argument("--whitening", default=None, choices=["center", "whiten", "abtt"], help="post-processing fitted on the input texts")
    group.add_argument("--n-components", type=int, default=None, help="whitening dimensions kept (whiten) or removed (abtt)")
    group.add_argument("--normalize", action="store_true", help="L2-normalise the vectors")
    group.add_argument("--max-length", type=int, default=None, help="maximum tokens per text (default: the model's limit, at most 512)")
    group.add_argument("--batch-size", type=int, default=None, help="maximum texts per forward pass (default: 64 on the CPU, 512 on a GPU)")
    group.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default: %(default)s)")
    group.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="compute dtype (default: %(default)s)")
    group.add_argument("--memory", default=None, metavar="DIR", help="feature cache directory (default: no cache)")
    group.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub to run")


def vectorizer_from_args(args, **overrides):
    from ._vectorizer import BertVectorizer

    params = dict(
        model_name=args.model,
        revision=args.revision,
        layers=args.layers,
        layer_agg=args.layer_agg,
        pooling=args.pooling,
        exclude_special_tokens=args.exclude_special_tokens,
        whitening=args.whitening,
        n_components=args.n_components,
        normalize=args.normalize,
        max_length=args.max_length,
        batch_size="auto" if args.batch_size is None else args.batch_size,
        device=args.device,
        dtype=args.dtype,
        memory=args.memory,
        trust_remote_code=args.trust_remote_code,
        verbose=not getattr(args, "quiet", False),
    )
    params.update(overrides)
    return BertVectorizer(**params)


# ----------------------------------------------------------------- embed
def _add_embed_parser(subparsers):
    p = subparsers.add_parser(
        "embed",
        help="encode texts into a .npy matrix",
        description=(
            "Encode texts with a frozen encoder and save the vectors as a float32 "
            ".npy array (one row per text, in input order). INPUT is a text file "
            "with one text per line, a CSV/TSV file with a header, JSON Lines, "
            "or '-' for standard input."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="texts: .txt, .csv, .tsv, .jsonl or '-'")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT.npy", help="where to write the vectors")
    p.add_argument("--text-column", default=None, help="column of the texts in CSV/TSV/JSONL (default: 'text')")
    p.add_argument("--format", default="auto", choices=["auto", "txt", "csv", "tsv", "jsonl"], help="input format (default: by suffix)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_vectorizer_options(p)
    p.set_defaults(handler=_run_embed)


def _run_embed(args):
    import numpy as np

    from ._io import atomic_output, check_output_path, read_texts

    out = args.output if args.output.endswith(".npy") else args.output + ".npy"
    check_output_path(out)
    texts, _ = read_texts(args.input, text_column=args.text_column, fmt=args.format)
    if not texts:
        raise CLIError(f"{args.input}: no texts to encode.")
    vec = vectorizer_from_args(args)
    X = vec.fit_transform(texts)
    with atomic_output(out) as tmp, open(tmp, "wb") as f:
        np.save(f, X)
    # The result line is not progress: -q does not hide it.
    print(f"wrote {X.shape[0]} x {X.shape[1]} float32 to {out}")
    return 0


# ------------------------------------------------------------------ main
def build_parser():
    from . import __version__

    parser = ArgumentParser(
        prog="skbert",
        description="Frozen BERT features for scikit-learn: encode, probe layers, build baselines.",
    )
    parser.add_argument("--version", action="version", version=f"skbert {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_embed_parser(subparsers)
    for module, func in _OPTIONAL_COMMANDS:
        try:
            mod = __import__(f"skbert.{module}", fromlist=[func])
        except ImportError:
            continue
        getattr(mod, func)(subparsers)
    return parser


# Sub-commands that live in their own modules: (module, registration function).
_OPTIONAL_COMMANDS = [
    ("_cache_cli", "add_cache_parser"),
    ("_probe_cli", "add_probe_parsers"),
]


def main(argv=None):
    """Run the ``skbert`` command line; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="skbert: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the report's command
    handler = getattr(args, "handler", None)
    if handler is None:
        if getattr(args, "default_handler", None) is not None:
            handler = args.default_handler
        else:
            parser.print_help()
            return 2
    from ._io import InputError, OutputError

    try:
        return int(handler(args) or 0)
    except (CLIError, InputError, OutputError) as exc:
        print(f"skbert: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except (ValueError, TypeError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"skbert: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("skbert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
