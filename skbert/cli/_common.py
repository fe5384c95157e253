"""What the sub-commands share: the parser class, option types, and the one
mapping from command-line options to BertVectorizer's parameters."""

import argparse
import re
import sys
import warnings

from .._cache import open_store
from .._extraction.assembly import POOLINGS
from .._model.backend import DEFAULT_MODEL
from .._vectorizer import BertVectorizer
from ..exceptions import CLIError
from ..probing import table_columns

__all__ = [
    "ArgumentParser",
    "layers_arg",
    "add_vectorizer_options",
    "extraction_params",
    "vectorizer_from_args",
    "table_rows",
    "fmt_c",
    "cache_problem",
    "checked_memory",
]


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


def layers_arg(value):
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
    group = parser.add_argument_group("representation (BertVectorizer parameters)")
    group.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local folder (default: %(default)s, bundled offline)")
    group.add_argument("--revision", default=None, help="hub revision to load")
    group.add_argument("--layers", type=layers_arg, default=-1, help="layer index, comma-separated indices, or 'all' (default: -1, the last)")
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


def extraction_params(args):
    """BertVectorizer parameters of the options every sub-command shares.

    How texts become statistics: revision, special tokens, max length, batch
    size, device, dtype, remote code. An option left at its default is left
    to BertVectorizer's own default.
    """
    params = dict(
        revision=args.revision,
        exclude_special_tokens=args.exclude_special_tokens,
        max_length=args.max_length,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )
    if args.batch_size is not None:
        params["batch_size"] = args.batch_size
    return params


def vectorizer_from_args(args, **overrides):
    """The BertVectorizer the options of :func:`add_vectorizer_options` describe."""
    params = dict(
        extraction_params(args),
        model_name=args.model,
        layers=args.layers,
        layer_agg=args.layer_agg,
        pooling=args.pooling,
        whitening=args.whitening,
        n_components=args.n_components,
        normalize=args.normalize,
        memory=args.memory,
        verbose=not getattr(args, "quiet", False),
    )
    params.update(overrides)
    return BertVectorizer(**params)


def table_rows(table):
    """A probe table as a list of dicts (DataFrame or structured array)."""
    cols = table_columns(table)
    n = len(cols["layer"])
    return [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in cols.items()} for i in range(n)]


def fmt_c(c):
    """A regularisation strength as the tables print it."""
    return f"{c:g}"


def cache_problem(memory):
    """Why the feature cache folder ``memory`` cannot be used, or None.

    Asks the store itself (it creates the folder if needed and refuses a
    file, an unwritable place, a link or a folder others can write to), so
    the command line judges a folder exactly as BertVectorizer would. A URL
    is left to the store.
    """
    if memory is None or "://" in str(memory):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = open_store(memory)
    if getattr(store, "usable", True):
        return None
    for w in caught:
        text = str(w.message)
        text = text.removeprefix("skbert feature cache: ")
        return text.split("; features are computed without caching")[0]
    return f"cannot use {memory}"


def checked_memory(memory, *, explicit):
    """``memory`` if usable; else an error (``explicit``) or None with one line on stderr.

    A folder given with ``--memory`` that cannot be used ends the command
    (exit status 2) before any work; the command line's default folder that
    cannot be used gives one ``skbert: warning:`` line and the command runs
    without a cache.
    """
    problem = cache_problem(memory)
    if problem is None:
        return memory
    if explicit:
        raise CLIError(
            f"--memory {memory}: {problem}; give a folder you can write to, or --no-cache.",
            exit_code=2,
        )
    print(
        f"skbert: warning: the default feature cache {memory} cannot be used ({problem}); "
        "running without a cache (set --memory DIR or $SKBERT_CACHE, or --no-cache).",
        file=sys.stderr,
    )
    return None
