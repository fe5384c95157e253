"""BertVectorizer features of a Spark DataFrame column.

:func:`transform` adds an ``array<float>`` column of features to a Spark
DataFrame with :meth:`~pyspark.sql.DataFrame.mapInPandas`; :func:`fill` only
fills the feature store.

The vectorizer is fitted once on the driver and shipped to the executors
inside the task's Python function (model name and settings, a few
kilobytes, never weights); each executor's Python worker loads the model
once, through skbert's process-wide registry, and only if some text misses
the store (Spark reuses its Python workers across tasks, see
``spark.python.worker.reuse``).

With ``memory=`` set, equal texts are embedded once across the whole
DataFrame: each partition's texts are checked and deduplicated, the unique
texts are deduplicated globally by Spark's own hash shuffle
(``distinct``) and spread over ``num_partitions`` partitions, each of which
is embedded into the store by one task; only then is the DataFrame
assembled from the store, partition by partition, in its own order.
Without ``memory``, each partition is embedded on its own.

A missing value (null) in the text column raises a ValueError in the
executor that names the partition (``TaskContext.partitionId()``, as
``pyspark.sql.functions.spark_partition_id()`` gives it), the row within it
and the row's other columns (the first 6; :func:`fill` reads the scalar
ones among them); Spark reports it to the driver as a
:class:`pyspark.errors.PythonException` carrying that message.
"""

import numpy as np

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

_REPORT_SCHEMA = "texts long, hits long, misses long, failed long, error string"


# ----------------------------------------------------------- on the workers
def _partition_id():
    from pyspark import TaskContext

    context = TaskContext.get()
    return "?" if context is None else context.partitionId()


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _checked_batches(batches, column, *, describe_others=False):
    """Yield ``(batch, texts)`` for one partition's pandas batches, every row checked.

    Rows are numbered from the start of the partition, across Arrow batches.
    """
    partition = _partition_id()
    offset = 0
    for batch in batches:
        describe = None
        others = [c for c in batch.columns if c != column][:6]
        if describe_others and others:

            def describe(i, batch=batch, others=others):
                values = {c: _plain(batch[c].iloc[i]) for c in others}
                return f"other columns: {values!r:.200}"

        texts = check_partition(
            batch[column].tolist(),
            partition=partition,
            describe=describe,
            row=lambda i, start=offset: start + i,
        )
        yield batch, texts
        offset += len(batch)


def _unique_checked(batches, column):
    """A partition's distinct texts, after checking every row.

    The batches hold the text column and a few small columns that name a bad
    row (see :func:`_describing_columns`).
    """
    import pandas as pd

    seen = set()
    for _, texts in _checked_batches(batches, column, describe_others=True):
        new = [t for t in dict.fromkeys(texts) if t not in seen]
        seen.update(new)
        if new:
            yield pd.DataFrame({column: pd.Series(new, dtype=object)})


def _fill_partition(batches, vectorizer, column):
    """Embed one partition of the globally unique texts into the store."""
    import pandas as pd

    report = dict(zip(TASK_COLUMNS, (0, 0, 0, 0, "")))
    for batch in batches:
        counts = fill_store(vectorizer, [str(t) for t in batch[column].tolist()])
        for name in TASK_COLUMNS:
            if name == "error":  # the first cause stands
                report[name] = report[name] or counts[name]
            else:
                report[name] += counts[name]
    yield pd.DataFrame({name: [report[name]] for name in TASK_COLUMNS})


def _features(batches, vectorizer, column, output_col):
    """One partition's batches with ``output_col`` added (float32 arrays)."""
    for batch, texts in _checked_batches(batches, column, describe_others=True):
        X = transform_texts(vectorizer, texts)
        batch = batch.copy()
        batch[output_col] = list(X)
        yield batch


# ---------------------------------------------------------------- driver
def _check_column(df, input_col):
    from pyspark.sql.types import StringType

    if input_col not in df.columns:
        raise ValueError(
            f"The DataFrame has no column {input_col!r}; its columns are {df.columns}. "
            "Pass input_col= the name of the text column."
        )
    dtype = df.schema[input_col].dataType
    if not isinstance(dtype, StringType):
        raise TypeError(
            f"The column {input_col!r} holds {dtype.simpleString()}, not string: "
            "BertVectorizer expects texts. Cast it first if that is what you mean."
        )


def _describing_columns(df, input_col):
    """The columns a fill ships with the texts: up to 6 scalar ones, to name a bad row.

    The same columns as :func:`transform`'s messages name (its first 6 other
    columns), less those that could be large (arrays, maps, structs, binary):
    the fill reads the text column and these only.
    """
    from pyspark.sql.types import (
        BinaryType,
        BooleanType,
        DateType,
        NumericType,
        StringType,
        TimestampType,
    )

    scalar = (NumericType, BooleanType, StringType, DateType, TimestampType)
    others = [f for f in df.schema.fields if f.name != input_col][:6]
    return [
        f.name
        for f in others
        if isinstance(f.dataType, scalar) and not isinstance(f.dataType, BinaryType)
    ]


def _default_partitions(df):
    try:
        return max(1, int(df.sparkSession.sparkContext.defaultParallelism))
    except Exception:  # Spark Connect has no SparkContext on the client
        return None


def fill(vectorizer, df, *, input_col="text", num_partitions=None):
    """Embed every unique text of a DataFrame column into the feature store, now.

    Each unique text is embedded once across all executors; texts already in
    the store are read, not embedded. A later
    :class:`~sklearn.model_selection.GridSearchCV` on any machine that reaches
    the store, or :func:`transform`, reads them without the model.

    Parameters
    ----------
    vectorizer : BertVectorizer
        With ``memory`` set (a folder that every executor reaches, or a
        store URL). Fitted once on the driver if it is not fitted yet.
    df : pyspark.sql.DataFrame
    input_col : str, default="text"
        The column of texts (string).
    num_partitions : int, default=None
        Partitions (tasks) of the unique texts to embed; None uses the
        cluster's default parallelism (one per executor core).

    Returns
    -------
    report : dict
        ``texts`` (unique texts), ``hits`` (already stored) and ``misses``
        (embedded now), summed over the tasks.

    Raises
    ------
    ValueError
        When ``memory`` is None or ``input_col`` is not a column. A missing
        text fails the Spark job with a ValueError naming its partition, its
        row within the partition and the row's other columns (the first 6,
        where they are scalars).
    OSError
        When the store could not be used or written on some executor (a
        missing bucket, no credentials or permission there): the texts
        embedded there are not stored. The message gives the cause (which
        the executors' warnings only show in their logs).
    """
    vec = store_vectorizer(vectorizer, worker="executor")
    _check_column(df, input_col)
    column = input_col

    def unique_checked(batches):
        return _unique_checked(batches, column)

    def fill_partition(batches):
        return _fill_partition(batches, vec, column)

    shipped = [column] + _describing_columns(df, column)
    checked = df.select(*[f"`{c}`" for c in shipped]).mapInPandas(
        unique_checked, schema=f"`{column}` string"
    )
    # Equal texts meet in one partition of Spark's hash shuffle: each
    # unique text is embedded by exactly one task.
    unique = checked.distinct()
    num_partitions = num_partitions or _default_partitions(df)
    if num_partitions:
        unique = unique.repartition(num_partitions)
    rows = unique.mapInPandas(fill_partition, schema=_REPORT_SCHEMA).collect()
    return fill_totals((row.asDict() for row in rows), worker="executor")


def transform(vectorizer, df, *, input_col="text", output_col="features", num_partitions=None):
    """Add a column of BERT features to a Spark DataFrame.

    With ``memory`` set, every unique text is first embedded once across
    the executors into the store (:func:`fill`, run now); the DataFrame
    returned (lazy) then reads each partition from the store. Without
    ``memory``, each partition is embedded where it is.

    Parameters
    ----------
    vectorizer : BertVectorizer
        Fitted once on the driver if it is not fitted yet (one that learns
        whitening or a scalar mix must be fitted first).
    df : pyspark.sql.DataFrame
    input_col : str, default="text"
        The column of texts (string).
    output_col : str, default="features"
        The column added: ``array<float>`` of ``n_features_out`` values per
        row, equal to ``vectorizer.transform`` of the row's text.
    num_partitions : int, default=None
        Partitions of the fill's unique texts (see :func:`fill`).

    Returns
    -------
    df : pyspark.sql.DataFrame
        The input's columns, rows and partitions, and ``output_col``.
    """
    from pyspark.sql.types import ArrayType, FloatType, StructField, StructType

    vec = fitted_vectorizer(vectorizer)
    _check_column(df, input_col)
    if output_col in df.columns:
        raise ValueError(
            f"The DataFrame already has a column {output_col!r}; pass another output_col=."
        )
    if vec.memory is not None:
        fill(vec, df, input_col=input_col, num_partitions=num_partitions)
    schema = StructType(
        list(df.schema.fields)
        + [StructField(output_col, ArrayType(FloatType(), containsNull=False), nullable=False)]
    )

    def features(batches):
        return _features(batches, vec, input_col, output_col)

    return df.mapInPandas(features, schema=schema)
