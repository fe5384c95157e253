"""The ``skbert`` command line.

Each sub-command lives in its own module (:mod:`.embed`, :mod:`.cache`,
:mod:`.probe`) and registers its parser through one ``add_*_parser``
function, listed in :data:`SUBCOMMANDS`; :mod:`._common` holds the one mapping
from options to BertVectorizer's parameters. This module only wires them and
turns expected errors into one-line messages with a non-zero exit code.
"""

import logging
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

