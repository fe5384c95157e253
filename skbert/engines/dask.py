"""BertVectorizer features of a Dask collection of texts.

:func:`transform` turns a Dask Series (or a one-column Dask DataFrame, or a
Dask Bag) of texts into a Dask array or DataFrame of features, lazily, with
no ``meta=`` to give: the number and names of the output columns come from
the fitted vectorizer (:meth:`~skbert.BertVectorizer.get_feature_names_out`),
without running the model. :func:`fill` only fills the feature store.

The vectorizer is fitted once on the client and shipped to the workers as
one small task input (model name and settings, never weights); each worker
process loads the model once, through skbert's process-wide registry, and
only if some text misses the store.

With ``memory=`` set, equal texts are embedded once across the whole
collection: each partition's texts are checked and deduplicated, the unique
texts are hash-partitioned by Dask's own shuffle (``drop_duplicates`` with
``split_out``), so that equal texts meet in one partition, each of those
partitions is embedded into the store by one worker, and only then is every
input partition assembled from the store, in the input's order and index.
Without ``memory``, each partition is embedded on its own (duplicates within
a partition are embedded once, duplicates across partitions once per
partition).
"""

import numpy as np
import pandas as pd

from ._common import (
    TASK_COLUMNS,
    check_partition,
    fill_store,
    fill_totals,
    fitted_vectorizer,
    store_vectorizer,
    transform_texts,
)

__all__ = ["transform", "fill"]

_TEXT = "text"


def _report_meta():
    return pd.DataFrame(
        {name: pd.Series([], dtype=object if name == "error" else "int64") for name in TASK_COLUMNS}
    )


def _feature_meta(vectorizer):
    names = [str(n) for n in vectorizer.get_feature_names_out()]
    return pd.DataFrame(np.zeros((0, len(names)), dtype=np.float32), columns=names)


# ----------------------------------------------------------- on the workers
def _labels(part):
    return part.index.tolist()


def _number(partition_info):
    return "?" if partition_info is None else partition_info["number"]


def _unique_checked(part, partition_info=None):
    """A partition's distinct texts (a pandas Series), after checking every row."""
    texts = check_partition(
        part.tolist(),
        partition=_number(partition_info),
        labels=_labels(part),
    )
    return pd.Series(list(dict.fromkeys(texts)), dtype=object, name=_TEXT)


def _fill_partition(unique, vectorizer):
    """Embed one partition of the globally unique texts into the store."""
    report = fill_store(vectorizer, unique.tolist())
    return pd.DataFrame({name: [report[name]] for name in TASK_COLUMNS}).astype(
        _report_meta().dtypes.to_dict()
    )


def _fill_report(parts):
    """The fill's report from its tasks' reports (raises if the store failed)."""
    return fill_totals(pd.concat(parts).to_dict("records"))


def _features(part, vectorizer, after=None, partition_info=None, columns=None):
    """Features of one input partition: a DataFrame with the partition's index.

    ``after`` is the fill's report: a dependency only, so that the partition
    is read from a complete store.
    """
    texts = check_partition(part.tolist(), partition=_number(partition_info), labels=_labels(part))
    X = transform_texts(vectorizer, texts)
    return pd.DataFrame(X, columns=columns, index=part.index)


# ---------------------------------------------------------------- client
def _bag_records(part, number):
    """One Bag partition as ``(text,)`` records, checked before any conversion."""
    (number,) = number
    return [(text,) for text in check_partition(list(part), partition=number)]


def _text_series(texts):
    """The collection as a Dask Series of texts (a Bag's rows checked on the way)."""
    import dask.bag as db
    import dask.dataframe as dd

    if isinstance(texts, db.Bag):
        # Checked before Dask turns them into strings (an int would become "5").
        n = texts.npartitions
        numbers = db.from_sequence(range(n), npartitions=n)
        records = texts.map_partitions(_bag_records, numbers)
        meta = pd.DataFrame({_TEXT: pd.Series([], dtype=object)})
        return records.to_dataframe(meta=meta)[_TEXT]
    if isinstance(texts, dd.DataFrame):
        if len(texts.columns) != 1:
            raise ValueError(
                f"Expected a Dask Series of texts or a one-column DataFrame; got "
                f"a DataFrame with columns {list(texts.columns)}. Select the text "
                "column, e.g. df['text']."
            )
        return texts[texts.columns[0]]
    if isinstance(texts, dd.Series):
        return texts
    raise TypeError(
        "Expected a Dask Series, a one-column Dask DataFrame or a Dask Bag of "
        f"texts, got {type(texts).__name__} instead. For in-memory texts, call "
        "vectorizer.transform directly."
    )


def _fill_frame(vectorizer, texts):
    """A lazy DataFrame of per-partition fill reports (one row per partition).

    Its columns are :data:`skbert.engines._common.TASK_COLUMNS`.
    """
    unique = texts.map_partitions(
        _unique_checked, meta=pd.Series([], dtype=object, name=_TEXT), partition_info=True
    )
    # Equal texts meet in one output partition (Dask's hash shuffle), so
    # each unique text is embedded by exactly one task.
    unique = unique.drop_duplicates(split_out=max(1, texts.npartitions))
    return unique.map_partitions(_fill_partition, vectorizer, meta=_report_meta())


def fill(vectorizer, texts):
    """Embed every unique text of a Dask collection into the feature store, now.

    Each unique text is embedded once across all workers; texts already in
    the store are read, not embedded. A later
    :class:`~sklearn.model_selection.GridSearchCV` on any machine that reaches
    the store, or :func:`transform`, reads them without the model.

    Parameters
    ----------
    vectorizer : BertVectorizer
        With ``memory`` set (a folder that every worker reaches, or a store
        URL). Fitted once on the client if it is not fitted yet.
    texts : dask Series, one-column dask DataFrame or dask Bag of str

    Returns
    -------
    report : dict
        ``texts`` (unique texts), ``hits`` (already stored) and ``misses``
        (embedded now), summed over the workers.

    Raises
    ------
    ValueError
        When ``memory`` is None, or (at compute time) for a missing text,
        naming its partition, row and index label.
    OSError
        When the store could not be used or written on some worker (a
        missing bucket, no credentials or permission there): the texts
        embedded there are not stored. The message gives the cause (which
        the workers' warnings only show in their logs).
    """
    vec = store_vectorizer(vectorizer)
    reports = _fill_frame(vec, _text_series(texts)).compute()
    return fill_totals(reports.to_dict("records"))


def transform(vectorizer, texts, *, output="array"):
    """Features of a Dask collection of texts, lazily.

    Parameters
    ----------
    vectorizer : BertVectorizer
        Fitted once on the client if it is not fitted yet (one that learns
        whitening or a scalar mix must be fitted first). With ``memory`` set,
        a store that every worker reaches.
    texts : dask Series, one-column dask DataFrame or dask Bag of str
        One text per row. Missing values raise (at compute time) a
        ValueError naming the partition, the row within it and its index
        label.
    output : {"array", "dataframe"}, default="array"
        A Dask array of shape ``(n_texts, n_features_out)`` (row chunks of
        unknown size, one per partition; call ``compute_chunk_sizes()`` if
        you need them), or a Dask DataFrame with the feature names as
        columns and the input's index.

    Returns
    -------
    features : dask.array.Array or dask.dataframe.DataFrame of float32
        Equal to ``vectorizer.transform`` of the computed texts, row for row.

    Notes
    -----
    With ``memory`` set, computing the result first embeds every unique
    text once across the workers into the store (see :func:`fill`), then
    assembles each partition from the store; the input partitions stay in
    the workers' memory until then.

    Examples
    --------
    >>> import dask.dataframe as dd, pandas as pd
    >>> from skbert import BertVectorizer
    >>> from skbert.engines.dask import transform
    >>> texts = dd.from_pandas(pd.Series(["a text", "another", "a text"]), npartitions=2)
    >>> X = transform(BertVectorizer(tiny_model), texts)
    >>> X.compute(scheduler="sync").shape
    (3, 32)
    """
    if output not in ("array", "dataframe"):
        raise ValueError(f"output must be 'array' or 'dataframe'; got {output!r}.")
    vec = fitted_vectorizer(vectorizer)
    series = _text_series(texts)
    meta = _feature_meta(vec)
    # The fill's report is an input of every partition's task: a barrier, so
    # that partitions are read from a complete store (it raises the fill's
    # OSError when the store failed on a worker).
    after = None
    if vec.memory is not None:
        import dask

        after = dask.delayed(_fill_report, pure=True)(_fill_frame(vec, series).to_delayed())
    frame = series.map_partitions(
        _features, vec, after, columns=list(meta.columns), meta=meta, partition_info=True
    )
    return frame if output == "dataframe" else frame.to_dask_array()
