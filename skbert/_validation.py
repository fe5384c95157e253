"""Validation of raw text input: the first step of every skbert data path.

Everything downstream (cache, model, pooling) receives a plain ``list`` of
``str``; this module is the only place that knows about numpy arrays, pandas
objects and the ways they can be wrong.
"""

import collections.abc
import math
import numbers
import re

import numpy as np

__all__ = ["check_texts", "check_elements"]

# Any UTF-16 surrogate code point: Python str can hold one (from
# errors="surrogateescape" decoding, or a JSON "\\ud800" escape), UTF-8 and
# the tokenizers cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")

# Containers whose iteration order is undefined (sets) or ambiguous (mappings
# iterate keys, not values): features would not line up with targets.
_UNORDERED = (collections.abc.Set, collections.abc.Mapping, collections.abc.MappingView)


def _is_container(value):
    """A list, array, Series, ...: never "missing", always "not a string"."""
    if isinstance(value, (str, bytes)):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return hasattr(value, "__len__") or hasattr(value, "__iter__")


def _is_missing(value):
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return math.isnan(value)
    if _is_container(value):
        return False
    # pandas.NA / NaT compare as "not equal to themselves" or raise on bool().
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return True


def _from_arrow(obj):
    """Whether ``obj`` is a pyarrow object (judged by its type: pyarrow is never imported)."""
    return type(obj).__module__.split(".")[0] == "pyarrow"


def _column_to_list(column):
    """A pandas / polars / pyarrow / array-API column (1-D) as a list."""
    if hasattr(column, "iloc"):  # pandas Series: positional, NA kept as pd.NA
        return column.to_numpy(dtype=object).tolist()
    for name in ("to_list", "to_pylist", "tolist"):  # polars, pyarrow, others
        method = getattr(column, name, None)
        if callable(method):
            return list(method())
    return list(np.asarray(column, dtype=object).ravel())


def _frame_columns(X):
    """Column names of a dataframe-like object, or None if X is not one."""
    shape = getattr(X, "shape", None)
    if isinstance(X, np.ndarray) or shape is None or len(shape) != 2:
        return None
    for name in ("columns", "column_names"):  # pandas/polars, pyarrow
        columns = getattr(X, name, None)
        if columns is not None:
            return list(columns)
    return None


def _first_column(X, columns):
    if hasattr(X, "iloc"):  # pandas: positional, works with duplicated names
        return X.iloc[:, 0]
    to_series = getattr(X, "to_series", None)  # polars
    if callable(to_series):
        return to_series(0)
    column = getattr(X, "column", None)  # pyarrow.Table
    if callable(column):
        return column(0)
    return X[columns[0]]


def _column_hint(n_columns, select="X['text']"):
    return (
        f"Select one text column (e.g. {select}), or, to combine {n_columns} "
        "columns, use a ColumnTransformer with one transformer per text column, "
        "e.g. ColumnTransformer([('title', BertVectorizer(), 'title'), "
        "('body', BertVectorizer(), 'body')])."
    )


def check_texts(X, *, estimator_name="BertVectorizer", ensure_min_samples=0):
    """Turn ``X`` into a list of ``str``, with clear errors for bad input.

    Parameters
    ----------
    X : iterable of str
        A list or tuple of str, a 1-D numpy array, a pandas or polars Series,
        a pyarrow string Array or ChunkedArray, a one-column pandas, polars or
        pyarrow table (or any dataframe exposing ``shape`` and ``columns``),
        or a 2-D array with one column.
    estimator_name : str, default="BertVectorizer"
        Used in error messages.
    ensure_min_samples : int, default=0
        Minimum number of texts; ``fit`` methods pass 1, as scikit-learn's
        ``check_array`` does.

    Returns
    -------
    texts : list of str

    Raises
    ------
    ValueError
        For a bare string, a 2-D input with several columns, too few texts,
        a missing value (None / NaN / NA) at some index, or a text holding a
        UTF-16 surrogate code point (not valid Unicode).
    TypeError
        For an unordered container (set, dict, dict views) or an element
        that is not a string.
    """
    if isinstance(X, (str, bytes)):
        raise ValueError(
            "Iterable over raw text documents expected, string object received."
        )
    if X is None:
        raise ValueError(
            f"{estimator_name} expected an iterable of str, got None instead."
        )
    if isinstance(X, _UNORDERED):
        kind = type(X).__name__
        fix = (
            "list(X.values())"
            if isinstance(X, collections.abc.Mapping)
            else "list(X)" if isinstance(X, collections.abc.MappingView) else "sorted(X)"
        )
        raise TypeError(
            f"{estimator_name} expects an ordered sequence of texts (list, tuple, "
            f"1-D array, Series or one-column DataFrame); got a {kind}, whose "
            "order is undefined or ambiguous, so the features would not line "
            f"up with targets or other columns. Pass an explicit order, e.g. {fix}."
        )
    # Dataframes (pandas, polars, pyarrow, ...): one column only, as produced
    # by a ColumnTransformer given a list of one column name.
    columns = _frame_columns(X)
    if columns is not None:
        if X.shape[1] != 1:
            raise ValueError(
                f"{estimator_name} expects a 1-D sequence of texts or a single "
                f"column; got a DataFrame of shape {tuple(X.shape)}. "
                + _column_hint(X.shape[1])
            )
        X = _first_column(X, columns)
    if _from_arrow(X) and callable(getattr(X, "to_pylist", None)):
        # A pyarrow Array or ChunkedArray (a Table's column, HF datasets'
        # with_format("arrow")): iterating gives Arrow scalars, to_pylist gives
        # str, and None for a null (refused below, as any missing value).
        texts = X.to_pylist()
    elif isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        elif X.ndim != 1:
            hint = _column_hint(X.shape[1], "X[:, 0]") if X.ndim == 2 else "Pass one column of texts."
            raise ValueError(
                f"{estimator_name} expects a 1-D sequence of texts; got an array "
                f"of shape {X.shape}. " + hint
            )
        texts = X.tolist()
    elif hasattr(X, "iloc") or (
        getattr(X, "shape", None) is not None and len(X.shape) == 1 and not isinstance(X, (list, tuple))
    ):
        # Series-like (pandas, polars, pyarrow arrays): native conversion.
        texts = _column_to_list(X)
    elif not hasattr(X, "__iter__"):
        raise TypeError(
            f"{estimator_name} expected an iterable of str, got "
            f"{type(X).__name__} instead."
        )
    else:
        texts = list(X)
    if len(texts) < ensure_min_samples:
        raise ValueError(
            f"Found array with {len(texts)} sample(s) (shape=({len(texts)},)) while "
            f"a minimum of {ensure_min_samples} is required by {estimator_name}."
        )
    return check_elements(texts, estimator_name=estimator_name)


def check_elements(texts, *, estimator_name="BertVectorizer", where=None):
    """Check that every element of the list ``texts`` is a valid ``str``.

    Parameters
    ----------
    texts : list
    estimator_name : str, default="BertVectorizer"
        Used in error messages.
    where : callable, default=None
        ``where(i)`` names element ``i`` in messages (e.g. a row of a
        partition); None names its index.

    Returns
    -------
    texts : list of str

    Raises
    ------
    ValueError
        For a missing value (None / NaN / NA) or a text holding a UTF-16
        surrogate code point.
    TypeError
        For an element that is not a string.
    """
    if where is None:
        def where(i):
            return f"index {i}"

    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) and _from_arrow(text) and callable(getattr(text, "as_py", None)):
            text = text.as_py()  # an Arrow scalar: str, or None for a null
        if isinstance(text, str):
            if not text.isascii():
                bad = _SURROGATE.search(text)
                if bad is not None:
                    raise ValueError(
                        f"Text at {where(i)} holds the surrogate code point "
                        f"U+{ord(bad.group()):04X} at position {bad.start()}, which is "
                        "not valid Unicode (typically bytes decoded with "
                        "errors='surrogateescape' or a broken JSON escape). Repair "
                        "or replace it before calling "
                        f"{estimator_name}, e.g. text.encode('utf-8', 'replace')"
                        ".decode('utf-8')."
                    )
            out.append(str(text))  # a str subclass becomes a plain str
            continue
        if _is_missing(text):
            raise ValueError(
                f"Text at {where(i)} is missing ({text!r}). Fill missing values "
                "(e.g. with '') or drop them before calling "
                f"{estimator_name}."
            )
        if _is_container(text):
            kind = type(text).__name__
            article = "an" if kind[:1].lower() in "aeiou" else "a"
            raise TypeError(
                f"{estimator_name} expects str elements; element at {where(i)} is "
                f"{article} {kind}, not a string. Pass a 1-D sequence "
                "with one text per sample (one column of texts)."
            )
        raise TypeError(
            f"{estimator_name} expects str elements; element at {where(i)} is "
            f"{type(text).__name__} ({text!r:.50}), not a string."
        )
    return out
