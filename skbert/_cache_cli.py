"""The ``skbert cache`` sub-command: ``info``, ``verify`` and ``clear`` a feature cache.

``skbert.cli`` registers it with :func:`add_cache_parser`; each sub-command
calls the matching Python function (:func:`skbert.cache_info`,
:func:`skbert.cache_verify`, :func:`skbert.cache_clear`).
"""

import datetime
import json
import sys

from ._cache import cache_clear, cache_info, cache_verify

__all__ = ["add_cache_parser", "run_cache_command"]


def add_cache_parser(subparsers):
    """Register the ``cache`` sub-command on an argparse ``subparsers`` object.

    The parser's ``handler`` default is :func:`run_cache_command`, which takes
    the parsed arguments and returns the exit code.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.

    Returns
    -------
    parser : argparse.ArgumentParser
        The ``cache`` parser.
    """
    parser = subparsers.add_parser(
        "cache",
        help="inspect, check or empty an on-disk feature cache",
        description=(
            "Inspect, check or empty the feature cache that BertVectorizer(memory=DIR) "
            "keeps in DIR."
        ),
    )
    commands = parser.add_subparsers(dest="cache_command", metavar="{info,verify,clear}")
    commands.required = True
    info = commands.add_parser(
        "info", help="entries, size, models and the last call's hits and misses"
    )
    verify = commands.add_parser(
        "verify",
        help="check every entry; move damaged ones to quarantine (exit code 1 if any)",
    )
    clear = commands.add_parser("clear", help="remove the cached features")
    for sub in (info, verify, clear):
        sub.add_argument("dir", metavar="DIR", help="the directory given as memory=DIR")
        sub.add_argument("--json", action="store_true", help="print the report as JSON")
    clear.add_argument(
        "--max-bytes",
        type=int,
        default=None,
        metavar="N",
        help="only evict least recently used entries until at most N bytes remain",
    )
    parser.set_defaults(handler=run_cache_command)
    return parser


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _print_info(info, out):
    out.write(f"Feature cache {info['path']} (format {info['format']})\n")
    out.write(f"  entries: {info['entries']:,}  size: {_size(info['bytes'])}\n")
    out.write(
        f"  quarantined files: {info['quarantined']}  temporary files: {info['temporary']}\n"
    )
    if info["models"]:
        out.write("  models:\n")
    for model in info["models"]:
        key = model.get("key") or {}
        kinds = ", ".join(
            f"{name} {k['entries']:,}" for name, k in sorted(model.get("kinds", {}).items())
        )
        out.write(
            f"    {model['namespace']}  {model.get('model_name', '?')}"
            f" (max_length {key.get('max_length', '?')}, dtype {key.get('dtype', '?')},"
            f" stored {key.get('storage_dtype', '?')}): {model['entries']:,} entries"
            f" [{kinds}], {_size(model['bytes'])}\n"
        )
    last = info.get("last_call")
    if last:
        when = last.get("time")
        when = (
            datetime.datetime.fromtimestamp(when).isoformat(timespec="seconds")
            if isinstance(when, (int, float))
            else "?"
        )
        out.write(
            f"  last call: {last.get('hits', '?')} hits, {last.get('misses', '?')} misses,"
            f" {last.get('damaged', 0)} damaged (pid {last.get('pid', '?')}, {when})\n"
        )


def run_cache_command(args, out=None):
    """Run ``skbert cache info|verify|clear`` for parsed ``args``; return the exit code.

    Exit codes: 0 on success, 1 when ``verify`` found damaged entries, 2 when
    the cache cannot be read (for example a symlink in place of the store).
    """
    out = sys.stdout if out is None else out
    command = args.cache_command
    try:
        if command == "info":
            report = cache_info(args.dir)
        elif command == "verify":
            report = cache_verify(args.dir)
        elif command == "clear":
            report = cache_clear(args.dir, max_bytes=args.max_bytes)
        else:  # pragma: no cover - argparse rejects it
            raise ValueError(f"unknown cache command {command!r}")
    except OSError as exc:
        sys.stderr.write(f"skbert cache {command}: {exc}\n")
        return 2
    if args.json:
        out.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    elif command == "info":
        _print_info(report, out)
    elif command == "verify":
        out.write(
            f"Checked {report['checked']:,} entries in {report['path']}: {report['ok']:,} ok, "
            f"{len(report['damaged']):,} damaged (moved to quarantine), "
            f"{report['temporary_removed']:,} stale temporary files removed.\n"
        )
        for path in report["damaged"]:
            out.write(f"  damaged: {path}\n")
    else:
        out.write(
            f"Removed {report['removed']:,} entries from {report['path']} "
            f"({_size(report['bytes_before'])} -> {_size(report['bytes_after'])}).\n"
        )
    if command == "verify" and report["damaged"]:
        return 1
    return 0
