"""Validation of raw text input: the first step of every skbert data path.

Everything downstream (cache, model, pooling) receives a plain ``list`` of
``str``; this module is the only place that knows about numpy arrays, pandas
objects and the ways they can be wrong.
"""

import math
import numbers

import numpy as np

__all__ = ["check_texts"]


def _is_missing(value):
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return math.isnan(value)
    # pandas.NA / NaT compare as "not equal to themselves" or raise on bool().
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return True


def check_texts(X, *, estimator_name="BertVectorizer"):
    """Turn ``X`` into a list of ``str``, with clear errors for bad input.

    Parameters
    ----------
    X : iterable of str
        A list or tuple of str, a 1-D numpy array, a pandas Series, or a
        one-column pandas DataFrame (or 2-D array with one column).
    estimator_name : str, default="BertVectorizer"
        Used in error messages.

    Returns
    -------
    texts : list of str

    Raises
    ------
    ValueError
        For a bare string, a 2-D input with several columns, or a missing
        value (None / NaN) at some index.
    TypeError
        For an element that is not a string.
    """
    if isinstance(X, (str, bytes)):
        raise ValueError(
            "Iterable over raw text documents expected, string object received."
        )
    if X is None:
        raise ValueError(
            f"{estimator_name} expected an iterable of str, got None instead."
        )
    # pandas DataFrame: one column only (as produced by ColumnTransformer with a
    # list of one column name).
    if hasattr(X, "columns") and hasattr(X, "iloc"):
        if X.ndim != 2 or X.shape[1] != 1:
            raise ValueError(
                f"{estimator_name} expects a 1-D sequence of texts or a single "
                f"column; got a DataFrame of shape {X.shape}. Select one text "
                "column, e.g. X['text'], or use a ColumnTransformer."
            )
        X = X.iloc[:, 0]
    if hasattr(X, "iloc"):  # pandas Series: positional access
        X = X.to_numpy(dtype=object)
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        elif X.ndim != 1:
            raise ValueError(
                f"{estimator_name} expects a 1-D sequence of texts; got an array "
                f"of shape {X.shape}. Pass one column of texts."
            )
        X = X.tolist()
    elif not hasattr(X, "__iter__"):
        raise TypeError(
            f"{estimator_name} expected an iterable of str, got "
            f"{type(X).__name__} instead."
        )
    texts = list(X)
    for i, text in enumerate(texts):
        if isinstance(text, str):
            continue
        if isinstance(text, (list, tuple, np.ndarray)):
            raise ValueError(
                f"{estimator_name} expects a 1-D sequence of texts; element at "
                f"index {i} is a {type(text).__name__}. Pass one column of texts."
            )
        if _is_missing(text):
            raise ValueError(
                f"Text at index {i} is missing ({text!r}). Fill missing values "
                "(e.g. with '') or drop them before calling "
                f"{estimator_name}."
            )
        raise TypeError(
            f"{estimator_name} expects str elements; element at index {i} is "
            f"{type(text).__name__} ({text!r:.50})."
        )
    return [str(t) for t in texts]
