"""The ``skbert cache`` sub-command: ``info``, ``verify``, ``clear``, ``compact``, ``copy``.

``skbert.cli`` registers it with :func:`add_cache_parser`; each sub-command
calls the matching Python function (:func:`skbert.cache_info`,
:func:`skbert.cache_verify`, :func:`skbert.cache_clear`,
:func:`skbert.cache_compact`, :func:`skbert.cache_copy`). Every command takes
a directory or a URL (``s3://bucket/prefix``, ``gs://...``, ``file://...``).
"""

import datetime
import json
import sys

from .._cache import (
    cache_clear,
    cache_compact,
    cache_copy,
    cache_info,
    cache_verify,
    parse_size,
)

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
    commands = parser.add_subparsers(
        dest="cache_command", metavar="{info,verify,clear,compact,copy}"
    )
    commands.required = True
    info = commands.add_parser(
        "info", help="entries, size, models and the last call's hits and misses"
    )
    verify = commands.add_parser(
        "verify",
        help="check every entry; move damaged ones to quarantine (exit code 1 if any)",
    )
    clear = commands.add_parser("clear", help="remove the cached features")
    compact = commands.add_parser(
        "compact", help="merge a URL store's small segments into full ones"
    )
    copy = commands.add_parser(
        "copy",
        help="copy every entry of one store into another (e.g. a local cache into a bucket)",
    )
    for sub in (info, verify, clear, compact):
        sub.add_argument(
            "dir", metavar="DIR", help="the directory or URL given as memory=DIR"
        )
    copy.add_argument("dir", metavar="SRC", help="the store to copy from (directory or URL)")
    copy.add_argument("dst", metavar="DST", help="the store to copy into (directory or URL)")
    for sub in (info, verify, clear, compact, copy):
        sub.add_argument("--json", action="store_true", help="print the report as JSON")
        sub.add_argument(
            "-o",
            "--storage-option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="an option of a URL's fsspec file system, e.g. "
            "endpoint_url=http://localhost:9000 (repeatable; VALUE is parsed as JSON "
            "when it can be); credentials are best left to the environment",
        )
    clear.add_argument(
        "--max-bytes",
        type=_max_bytes,
        default=None,
        metavar="N",
        help="only evict least recently used entries until at most N bytes remain; "
        "N in bytes or with a binary unit: 500M, 1G, 1.5GiB",
    )
    parser.set_defaults(handler=run_cache_command)
    return parser


def _max_bytes(text):
    """``--max-bytes``: bytes, or a number with a binary unit (500M, 1G, 1.5GiB)."""
    import argparse

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _print_info(info, out):
    out.write(f"Feature cache {info['path']} (format {info['format']})\n")
    out.write(f"  entries: {info['entries']:,}  size: {_size(info['bytes'])}\n")
    if "segments" in info:
        out.write(f"  segments: {info['segments']:,}\n")
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


def _storage_options(args):
    options = {}
    for item in getattr(args, "storage_option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options or None


def run_cache_command(args, out=None):
    """Run ``skbert cache info|verify|clear|compact|copy`` for parsed ``args``; return the exit code.

    Exit codes: 0 on success, 1 when ``verify`` found damaged entries, 2 when
    the cache cannot be read (for example a symlink in place of the store).
    """
    out = sys.stdout if out is None else out
    command = args.cache_command
    try:
        options = _storage_options(args)
        if command == "info":
            report = cache_info(args.dir, storage_options=options)
        elif command == "verify":
            report = cache_verify(args.dir, storage_options=options)
        elif command == "clear":
            report = cache_clear(args.dir, max_bytes=args.max_bytes, storage_options=options)
        elif command == "compact":
            report = cache_compact(args.dir, storage_options=options)
        elif command == "copy":
            report = cache_copy(args.dir, args.dst, storage_options=options)
        else:  # pragma: no cover - argparse rejects it
            raise ValueError(f"unknown cache command {command!r}")
    except (OSError, ImportError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.filename and exc.strerror:
            message = f"{exc.filename}: {exc.strerror}"  # no "[Errno 2]"
        else:
            message = str(exc)
        sys.stderr.write(f"skbert cache {command}: error: {message}\n")
        return 2
    if args.json:
        out.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    elif command == "info":
        _print_info(report, out)
    elif command == "verify":
        where = (
            "removed, their intact entries published again"
            if report.get("store") == "segments"
            else "moved to quarantine"
        )
        out.write(
            f"Checked {report['checked']:,} entries in {report['path']}: {report['ok']:,} ok, "
            f"{len(report['damaged']):,} damaged ({where}), "
            f"{report['temporary_removed']:,} stale temporary files removed.\n"
        )
        for path in report["damaged"]:
            out.write(f"  damaged: {path}\n")
    elif command == "compact":
        out.write(
            f"Compacted {report['path']}: {report['segments_before']:,} -> "
            f"{report['segments_after']:,} segments ({report['segments_merged']:,} merged, "
            f"{report['duplicates_removed']:,} duplicate entries dropped; "
            f"{_size(report['bytes_before'])} -> {_size(report['bytes_after'])}).\n"
        )
    elif command == "copy":
        out.write(
            f"Copied {report['copied']:,} entries ({_size(report['bytes'])}) from "
            f"{report['src']} to {report['dst']}: {report['skipped']:,} already there, "
            f"{report['damaged']:,} damaged not copied, {report['segments']:,} segments "
            "written.\n"
        )
    else:
        out.write(
            f"Removed {report['removed']:,} entries from {report['path']} "
            f"({_size(report['bytes_before'])} -> {_size(report['bytes_after'])}).\n"
        )
    if command == "verify" and report["damaged"]:
        return 1
    return 0
