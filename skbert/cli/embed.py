"""The ``skbert embed`` sub-command: texts in, a float32 ``.npy`` matrix out."""

import numpy as np

from ..exceptions import CLIError
from ._common import add_vectorizer_options, checked_memory, vectorizer_from_args
from .io import atomic_output, check_output_path, read_texts

__all__ = ["add_embed_parser", "run_embed"]


def add_embed_parser(subparsers):
    """Register the ``embed`` sub-command on an argparse ``subparsers`` object."""
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
    p.set_defaults(handler=run_embed)


def run_embed(args):
    """Encode ``args.input`` into ``args.output``; returns the exit code."""
    out = args.output if args.output.endswith(".npy") else args.output + ".npy"
    check_output_path(out)
    memory = checked_memory(args.memory, explicit=True)  # before any work
    texts, _ = read_texts(args.input, text_column=args.text_column, fmt=args.format)
    if not texts:
        raise CLIError(f"{args.input}: no texts to encode.")
    vec = vectorizer_from_args(args, memory=memory)
    X = vec.fit_transform(texts)
    with atomic_output(out) as tmp, open(tmp, "wb") as f:
        np.save(f, X)
    # The result line is not progress: -q does not hide it.
    print(f"wrote {X.shape[0]} x {X.shape[1]} float32 to {out}")
    return 0
