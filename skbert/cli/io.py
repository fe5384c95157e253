"""Files of the command line: texts (and labels) in, results out.

Inputs are plain text (one text per line), CSV, TSV (no quoting, as in the
shared data sets) and JSON Lines; errors are :class:`InputError` with a
one-line message. Outputs are written atomically (a temporary file next to the
target, then ``os.replace``) by :func:`atomic_output`; errors are
:class:`OutputError` naming the target, never the temporary file.
"""

import contextlib
import csv
import json
import os
import re
import sys
from pathlib import Path

from ..exceptions import InputError, OutputError

__all__ = ["InputError", "OutputError", "atomic_output", "check_output_path", "read_texts"]


def check_output_path(path):
    """Raise :class:`OutputError` (exit code 2) unless ``path``'s folder exists.

    The folder is not created: a mistyped folder is an error, as for ``cp``
    or :func:`numpy.save`. Commands call this before any work, so that a long
    run does not fail at its end.
    """
    folder = os.path.dirname(str(path)) or os.curdir
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise OutputError(f"cannot write {path}: the folder {folder} {what}.", exit_code=2)


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary name keeps ``path``'s suffix (writers such as
    :func:`numpy.save` or matplotlib's ``savefig`` go by it). On any error the
    temporary file is removed and an :class:`OutputError` names ``path``.
    """
    path = str(path)
    check_output_path(path)
    folder, name = os.path.split(path)
    stem, suffix = os.path.splitext(name)
    tmp = os.path.join(folder, f".{stem}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if not os.path.isdir(folder or os.curdir):
            raise OutputError(f"cannot write {path}: the folder {folder} does not exist.", exit_code=2) from None
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}.") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _format(path, fmt):
    if fmt != "auto":
        return fmt
    suffix = Path(str(path)).suffix.lower()
    return {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(
        suffix, "txt"
    )


def _pick(columns, wanted, default_names, what, path):
    if wanted is not None:
        if wanted not in columns:
            raise InputError(
                f"{path}: no {what} column {wanted!r}; columns are {', '.join(map(repr, columns))}."
            )
        return wanted
    for name in default_names:
        if name in columns:
            return name
    raise InputError(
        f"{path}: say which column holds the {what} with --{what}-column; "
        f"columns are {', '.join(map(repr, columns))}."
    )


def read_texts(path, *, text_column=None, label_column=None, fmt="auto", need_labels=False):
    """Read texts and optional labels from a file (``"-"`` is standard input).

    Parameters
    ----------
    path : str or path-like
    text_column, label_column : str, default=None
        Column names for CSV/TSV/JSONL. The text column defaults to ``text``
        (or ``sentence``); the label column to ``label`` when labels are needed.
    fmt : {"auto", "txt", "csv", "tsv", "jsonl"}, default="auto"
        ``"auto"`` decides by the file's suffix; anything else is plain text.
    need_labels : bool, default=False

    Returns
    -------
    texts : list of str
    labels : list or None
        In a CSV or TSV file, int when every label is an integer, else str;
        in JSON Lines, the JSON type (str, int, float or bool).
    """
    fmt = _format(path, fmt)
    try:
        if str(path) == "-":
            handle = sys.stdin
        else:
            handle = open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}.") from None
    try:
        with handle:
            if fmt == "txt":
                if need_labels:
                    raise InputError(f"{path}: a plain text file has no labels; use CSV, TSV or JSONL.")
                return [line.rstrip("\r\n") for line in handle], None
            if fmt == "jsonl":
                records = []
                for i, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(f"{path}: line {i} is not valid JSON ({exc.msg}).") from None
                    if not isinstance(rec, dict):
                        raise InputError(f"{path}: line {i} is not a JSON object.")
                    records.append(rec)
                columns = list(dict.fromkeys(k for rec in records for k in rec))
            else:
                if fmt == "tsv":
                    reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
                else:
                    reader = csv.reader(handle)
                try:
                    header = next(reader)
                except StopIteration:
                    raise InputError(f"{path}: the file is empty.") from None
                columns = header
                records = []
                for i, row in enumerate(reader, start=2):
                    if not row:
                        continue
                    if len(row) != len(header):
                        raise InputError(
                            f"{path}: line {i} has {len(row)} fields, the header has {len(header)}."
                        )
                    records.append(dict(zip(header, row)))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text.") from None
    if not records:
        raise InputError(f"{path}: no rows.")
    text_col = _pick(columns, text_column, ("text", "sentence"), "text", path)
    label_col = None
    if need_labels or label_column is not None:
        label_col = _pick(columns, label_column, ("label", "labels", "target", "y"), "label", path)
    texts, labels = [], [] if label_col else None
    for i, rec in enumerate(records):
        text = rec.get(text_col)
        if not isinstance(text, str):
            raise InputError(f"{path}: row {i + 1} has no text in column {text_col!r}.")
        texts.append(text)
        if label_col is not None:
            label = rec.get(label_col)
            if label is None or label == "":
                raise InputError(f"{path}: row {i + 1} has no label in column {label_col!r}.")
            labels.append(label)
    if labels is not None:
        labels = _typed_labels(labels, label_col, path, from_text=fmt != "jsonl")
    return texts, labels


_INT = re.compile(r"^[+-]?[0-9]+$")


def _typed_labels(labels, column, path, *, from_text):
    """Labels of one type, the type the file gives them.

    CSV and TSV fields are text: a column of integers ("0", "1") gives int
    labels, as pandas reads it, so that a model fitted on them predicts ints
    and ``model.score(texts, df[column])`` compares like with like; any other
    column stays str. JSON values keep their type (str, int, float or bool);
    a column mixing types, or holding lists or objects, is refused.
    """
    if from_text:
        if all(_INT.match(label) for label in labels):
            return [int(label) for label in labels]
        return labels
    kinds = {type(label) for label in labels}
    if not kinds <= {str, int, float, bool}:
        bad = next(i for i, label in enumerate(labels) if type(label) not in (str, int, float, bool))
        raise InputError(
            f"{path}: row {bad + 1} has a {type(labels[bad]).__name__} label in column "
            f"{column!r}; labels are strings or numbers."
        )
    if kinds == {int, float}:
        return [float(label) for label in labels]
    if len(kinds) > 1:
        names = " and ".join(sorted(k.__name__ for k in kinds))
        raise InputError(
            f"{path}: the labels in column {column!r} mix {names} values; give them one type."
        )
    return labels
