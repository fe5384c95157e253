"""The ``skbert`` command line.

Each sub-command lives in its own module (:mod:`.embed`, :mod:`.cache`,
:mod:`.probe`) and registers its parser through one ``add_*_parser``
function, listed in :data:`SUBCOMMANDS`; :mod:`._common` holds the one mapping
from options to BertVectorizer's parameters. This module only wires them and
turns expected errors into one-line messages with a non-zero exit code.
"""

import logging
import os
import sys

from .._version import __version__
from ..exceptions import CLIError, InputError, OutputError
from ._common import ArgumentParser
from .cache import add_cache_parser
from .embed import add_embed_parser
from .probe import add_probe_parsers

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

#: The registration functions of every sub-command, in ``skbert --help`` order.
SUBCOMMANDS = (add_embed_parser, add_cache_parser, add_probe_parsers)


def build_parser():
    """The ``skbert`` parser with every sub-command of :data:`SUBCOMMANDS`."""
    parser = ArgumentParser(
        prog="skbert",
        description="Frozen BERT features for scikit-learn: encode, probe layers, build baselines.",
    )
    parser.add_argument("--version", action="version", version=f"skbert {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


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
    try:
        code = int(handler(args) or 0)
        # Buffered output reaches a closed pipe here, not at exit.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`skbert cache info DIR | head`): stop quietly,
        # as Python's documentation recommends (signal module, "Note on
        # SIGPIPE"): point stdout at devnull so that the flush at exit does
        # not raise again, and exit 1.
        _silence_stdout()
        return 1
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


def _silence_stdout():
    """Send what is left of stdout to devnull (after a BrokenPipeError)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced, e.g. by pytest's capture
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)

