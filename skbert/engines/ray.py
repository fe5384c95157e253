"""BertVectorizer features of a Ray Data dataset.

:class:`BertEmbedder` is a callable class for
:meth:`ray.data.Dataset.map_batches`: each actor holds a fitted
:class:`~skbert.BertVectorizer`, loads the model once (through skbert's
process-wide registry, at its first miss of the feature store) and adds a
column of fixed-size float32 arrays. GPUs are requested per actor with
``map_batches``'s ``num_gpus``, actors with ``concurrency``.

:func:`embed` does the whole job: with ``memory=`` set it first embeds every
*unique* text once across the actors into the shared store (:func:`fill`:
the texts are checked, deduplicated with ``groupby(column)``, which sends
equal texts to one group, and embedded), then returns the lazy
``map_batches`` that assembles each batch from the store.

Ray Data numbers neither blocks nor batches. A missing text found by
:func:`fill` (so by :func:`embed` with ``memory`` set) is named by its row
in the dataset's order, found again on the driver in one more ordered pass
over the dataset, and by the row's other columns; one found by
:class:`BertEmbedder` (:func:`embed` without ``memory``, lazily) by its row
in the actor's batch and the row's other columns (keep an id column to find
it).
"""

import os

import numpy as np

from .._validation import check_elements
from .._vectorizer import BertVectorizer
from ._common import (
    TASK_COLUMNS,
    check_partition,
    fill_store,
    fill_totals,
    fitted_vectorizer,
    store_vectorizer,
    transform_texts,
)

__all__ = ["BertEmbedder", "embed", "fill"]


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _describe(batch, column):
    def describe(i):
        others = {k: _plain(v[i]) for k, v in list(batch.items())[:6] if k != column}
        return f"other columns: {others!r:.200}" if others else "no other columns"

    return describe


def _check_batch(batch, column, partition=None):
    if column not in batch:
        raise KeyError(
            f"The dataset has no column {column!r}; its columns are {list(batch)}. "
            "Pass column= the name of the text column."
        )
    return check_partition(
        batch[column].tolist(), partition=partition, what="batch", describe=_describe(batch, column)
    )


class BertEmbedder:
    """A ``map_batches`` callable class that adds BERT features to each batch.

    Parameters
    ----------
    vectorizer : BertVectorizer, default=None
        Fitted on the driver if it is not fitted yet (one that learns
        whitening or a scalar mix must be fitted first). None builds one from
        ``**params``.
    column : str, default="text"
        The column of texts.
    output_column : str, default="embedding"
        The column added: one float32 array of ``n_features_out`` values per
        row.
    **params
        :class:`~skbert.BertVectorizer` parameters, when ``vectorizer`` is None.

    Examples
    --------
    >>> import ray
    >>> from skbert.engines.ray import BertEmbedder
    >>> ds = ray.data.from_items([{"text": "a text"}, {"text": "another"}])  # doctest: +SKIP
    >>> ds = ds.map_batches(                                                  # doctest: +SKIP
    ...     BertEmbedder,
    ...     fn_constructor_kwargs={"model_name": tiny_model, "memory": "s3://bucket/cache"},
    ...     batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=2), num_gpus=1)
    """

    def __init__(self, vectorizer=None, *, column="text", output_column="embedding", **params):
        if vectorizer is None:
            vectorizer = BertVectorizer(**params)
        elif params:
            raise TypeError(
                f"Pass either a vectorizer or BertVectorizer parameters, not both "
                f"(got {sorted(params)})."
            )
        self.vectorizer = fitted_vectorizer(vectorizer)
        self.column = column
        self.output_column = output_column
        self._n_batches = 0

    def __call__(self, batch):
        """Add ``output_column`` to a batch (a dict of arrays, or a pandas DataFrame)."""
        self._n_batches += 1
        where = f"{self._n_batches - 1} of embedder process {os.getpid()}"
        if hasattr(batch, "iloc"):  # pandas batch format
            texts = _check_batch({k: batch[k].to_numpy() for k in batch.columns}, self.column, where)
            X = transform_texts(self.vectorizer, texts)
            batch = batch.copy()
            batch[self.output_column] = list(X)
            return batch
        texts = _check_batch(batch, self.column, where)
        batch = dict(batch)
        batch[self.output_column] = transform_texts(self.vectorizer, texts)
        return batch


class _StoreFiller:
    """A ``map_batches`` actor that embeds unique texts into the store, returning counts."""

    def __init__(self, vectorizer, column):
        self.vectorizer = vectorizer
        self.column = column

    def __call__(self, batch):
        report = fill_store(self.vectorizer, [str(t) for t in batch[self.column].tolist()])
        return {
            name: np.array([report[name]], dtype=object if name == "error" else np.int64)
            for name in TASK_COLUMNS
        }


def _checked_column(batch, column):
    return {column: np.array(_check_batch(batch, column), dtype=object)}


def _map_kwargs(concurrency, num_gpus, num_cpus, batch_size):
    """``map_batches`` arguments of an actor pool of ``concurrency`` actors."""
    from ray.data import ActorPoolStrategy

    if isinstance(concurrency, tuple):
        pool = ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[-1])
    else:
        pool = ActorPoolStrategy(size=int(concurrency))
    kwargs = {"batch_size": batch_size, "batch_format": "numpy", "compute": pool}
    if num_gpus is not None:
        kwargs["num_gpus"] = num_gpus
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    return kwargs


def fill(
    dataset,
    vectorizer,
    *,
    column="text",
    concurrency=1,
    num_gpus=None,
    num_cpus=None,
    batch_size=1024,
    num_partitions=None,
):
    """Embed every unique text of a dataset into the feature store, now.

    Parameters
    ----------
    dataset : ray.data.Dataset
    vectorizer : BertVectorizer
        With ``memory`` set to a store that every worker reaches.
    column : str, default="text"
    concurrency : int or tuple, default=1
        Number of embedding actors, or ``(min, max)`` for an autoscaling pool.
    num_gpus : float, default=None
        GPUs per actor.
    num_cpus : float, default=None
        CPUs per actor (Ray's default: 1). Leave some to the tasks that read
        and deduplicate the texts: actors that hold every CPU starve them.
    batch_size : int, default=1024
        Unique texts per actor call (the vectorizer batches the forward
        passes itself).
    num_partitions : int, default=None
        Partitions of the deduplicating shuffle (Ray's default when None).

    Returns
    -------
    report : dict
        ``texts`` (unique), ``hits`` (already stored) and ``misses`` (embedded).

    Raises
    ------
    ValueError
        When ``memory`` is None, or for a missing text (TypeError for one
        that is not a str), naming its row in the dataset's order and the
        row's other columns.
    OSError
        When the store could not be used or written in some actor (a
        missing bucket, no credentials or permission there): the texts
        embedded there are not stored. The message gives the cause (which
        the actors' warnings only show in their logs).
    """
    vec = store_vectorizer(vectorizer)
    checked = dataset.map_batches(
        _checked_column, fn_kwargs={"column": column}, batch_format="numpy"
    )
    # One row per distinct text: equal texts meet in one group.
    unique = checked.groupby(column, num_partitions=num_partitions).count()
    reports = unique.map_batches(
        _StoreFiller,
        fn_constructor_kwargs={"vectorizer": vec, "column": column},
        **_map_kwargs(concurrency, num_gpus, num_cpus, batch_size),
    )
    try:
        rows = reports.take_all()
    except Exception as exc:
        if not _is_bad_text(exc):
            raise
        # A batch's row number means nothing to the user: find the row in
        # the dataset's order (this raises), or fail as the workers did.
        _check_in_order(dataset, column)
        raise
    return fill_totals(rows)


def _is_bad_text(exc):
    """Whether a failed Ray job failed on a missing or non-str text (:func:`_check_batch`)."""
    return "Text at row " in str(exc) and " of a batch " in str(exc)


def _check_in_order(dataset, column):
    """Check the text column on the driver, numbering the rows in the dataset's order.

    Runs only after a worker found a bad text (one more pass over the
    dataset, in order); raises the ValueError (or TypeError) of the first
    bad row, named by its number in the dataset, as ``dataset.take_all()``
    lists the rows, and its other columns. Returns when every text is valid.
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    preserve = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    try:
        start = 0
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=4096):
            if column not in batch:
                return
            describe = _describe(batch, column)

            def where(i, start=start, describe=describe):
                return (
                    f"row {start + i} of the dataset (numbered from 0 in the dataset's "
                    f"order, as dataset.take_all() lists the rows; {describe(i)})"
                )

            check_elements(batch[column].tolist(), where=where)
            start += len(batch[column])
    finally:
        context.execution_options.preserve_order = preserve


def embed(
    dataset,
    vectorizer,
    *,
    column="text",
    output_column="embedding",
    concurrency=1,
    num_gpus=None,
    num_cpus=None,
    batch_size=256,
    num_partitions=None,
):
    """Add a column of BERT features to a dataset.

    With ``memory`` set, every unique text is first embedded once across the
    actors into the store (:func:`fill`, run now); the dataset returned
    (lazy) then reads each batch from the store. Without ``memory``, each
    batch is embedded by its actor (duplicates within a batch once).

    Parameters
    ----------
    dataset : ray.data.Dataset
    vectorizer : BertVectorizer
    column : str, default="text"
    output_column : str, default="embedding"
    concurrency : int or tuple, default=1
        Number of actors, each holding the model once, or ``(min, max)``.
    num_gpus : float, default=None
        GPUs per actor.
    num_cpus : float, default=None
        CPUs per actor (Ray's default: 1); leave some to the other tasks.
    batch_size : int, default=256
        Rows per actor call.
    num_partitions : int, default=None
        Partitions of the fill's deduplicating shuffle.

    Returns
    -------
    dataset : ray.data.Dataset
        The input's columns and ``output_column``: one float32 array of
        ``n_features_out`` values per row, equal to ``vectorizer.transform``.

    Raises
    ------
    ValueError, TypeError, OSError
        With ``memory`` set, as :func:`fill` (now). Without it, a bad text
        fails the lazy dataset when it runs, naming the row within its
        batch and the row's other columns.
    """
    vec = fitted_vectorizer(vectorizer)
    if vec.memory is not None:
        fill(
            dataset,
            vec,
            column=column,
            concurrency=concurrency,
            num_gpus=num_gpus,
            num_cpus=num_cpus,
            num_partitions=num_partitions,
        )
    return dataset.map_batches(
        BertEmbedder,
        fn_constructor_kwargs={"vectorizer": vec, "column": column, "output_column": output_column},
        **_map_kwargs(concurrency, num_gpus, num_cpus, batch_size),
    )
