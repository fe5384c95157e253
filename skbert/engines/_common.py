"""What every engine does the same way: ship a fitted vectorizer, check texts, fill the store.

Nothing here imports an engine. A worker receives a fitted
:class:`~skbert.BertVectorizer` (kilobytes), and the model is loaded by
:mod:`skbert._model.backend`'s process-wide registry: once per worker process, and
only when some text misses the feature store.
"""

import copy

import numpy as np

from .._extraction.cached import unlocked_misses
from .._validation import check_elements
from .._vectorizer import BertVectorizer

__all__ = [
    "REPORT_COLUMNS",
    "TASK_COLUMNS",
    "fitted_vectorizer",
    "store_vectorizer",
    "check_partition",
    "fill_store",
    "fill_totals",
    "transform_texts",
]

#: The counts a fill reports (see :func:`fill_store`), summed over its tasks.
REPORT_COLUMNS = ("texts", "hits", "misses")
#: What each fill task reports to the client (see :func:`fill_store` and
#: :func:`fill_totals`): the counts, then how many of its embedded texts
#: met a store failure, and that failure ("" when none).
TASK_COLUMNS = REPORT_COLUMNS + ("failed", "error")


def fitted_vectorizer(vectorizer):
    """Return ``vectorizer`` fitted, for shipping to workers.

    A fitted vectorizer is returned as it is. An unfitted one is cloned and
    fitted without reading texts, which resolves the model's settings from its
    configuration (no weights, no forward pass), unless it must learn
    something from data (whitening, a scalar mix).

    Parameters
    ----------
    vectorizer : BertVectorizer

    Returns
    -------
    vectorizer : BertVectorizer
        Fitted.
    """
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(vectorizer, BertVectorizer):
        raise TypeError(
            f"Expected a skbert.BertVectorizer, got {type(vectorizer).__name__} instead."
        )
    try:
        check_is_fitted(vectorizer, "layers_")
        return vectorizer
    except NotFittedError:
        pass
    if vectorizer._needs_data():
        raise ValueError(
            f"This BertVectorizer learns from training texts "
            f"(whitening={vectorizer.whitening!r}, layer_agg={vectorizer.layer_agg!r}): "
            "fit it on the client first, e.g. vectorizer.fit(sample_texts), and "
            "pass the fitted vectorizer."
        )
    # Without whitening or a scalar mix, fit reads no text: it resolves the
    # layers, token limit and device from the model's configuration.
    return clone(vectorizer).fit([""])


def store_vectorizer(vectorizer, worker="worker"):
    """:func:`fitted_vectorizer` for a fill, which needs a feature store.

    Raises
    ------
    ValueError
        When ``memory`` is None; the message says every ``worker`` must reach
        the store.
    """
    vec = fitted_vectorizer(vectorizer)
    if vec.memory is None:
        raise ValueError(
            "fill writes the feature store: pass a BertVectorizer with memory= "
            f"set to a folder (or store URL) that every {worker} reaches."
        )
    return vec


def check_partition(
    values, *, partition, labels=None, what="partition", describe=None, row=None
):
    """Return ``values`` as a list of str, or say which row of which partition is bad.

    Parameters
    ----------
    values : iterable
        The texts of one partition (block, batch).
    partition : int, str or None
        Names the partition in messages (None: the engine has no number for it).
    labels : sequence, optional
        The rows' index labels, named in messages next to their positions.
    what : str, default="partition"
        What a partition is called by the engine ("partition", "batch").
    describe : callable, optional
        ``describe(i)`` returns more words on row ``i`` (e.g. its other
        columns), called only for a bad row.
    row : callable, optional
        ``row(i)`` is the row's number in messages, when row ``i`` of
        ``values`` is not row ``i`` of the partition (a partition that arrives
        in several batches). Default: ``i``.

    Returns
    -------
    texts : list of str

    Raises
    ------
    ValueError
        For a missing value (None, NaN, pandas.NA).
    TypeError
        For a value that is not a str.
    """
    texts = values if isinstance(values, list) else list(values)

    def where(i):
        n = i if row is None else row(i)
        place = f"row {n} of a {what}" if partition is None else f"row {n} of {what} {partition}"
        if labels is not None:
            place += f" (index label {labels[i]!r})"
        if describe is not None:
            place += f" ({describe(i)})"
        return place

    return check_elements(texts, where=where)


def fill_store(vectorizer, texts):
    """Embed ``texts`` into the vectorizer's feature store; return the task's report.

    Meant for texts that no other worker embeds at the same time (a
    partition of the globally unique texts): the misses are computed
    without waiting for the namespace lock, so workers fill in parallel.

    A store that cannot be used or written here (no such bucket, no
    credentials in this worker, a folder it cannot write) makes the worker
    compute without storing, with one warning in the worker's own log only:
    the report carries the cause to the client, where :func:`fill_totals`
    raises.

    Returns
    -------
    report : dict
        ``texts``, ``hits`` and ``misses`` (unique texts) of this call;
        ``failed``: the misses when the store failed in this call (their
        features may not be stored), else 0; ``error``: why ("" when
        nothing failed).
    """
    if not texts:
        return dict(zip(TASK_COLUMNS, (0, 0, 0, 0, "")))
    vec = copy.copy(vectorizer)  # last_cache_stats_ is per call, not shared by threads
    with unlocked_misses():
        vec._pooled(texts)
    try:
        stats = vec.last_cache_stats_
    except AttributeError:
        # No store at all: the model's content cannot be fingerprinted, so
        # nothing is keyed (the worker warned with FeatureCacheWarning).
        stats = {
            "misses": len(texts),
            "store_error": (
                f"nothing is cached for model {vec.model_name!r}: its content cannot be "
                "identified on the worker (no weight files found locally, or its hub "
                "commit is not in the worker's Hugging Face cache)"
            ),
        }
    hits, misses = int(stats.get("hits", 0)), int(stats.get("misses", 0))
    error = stats.get("store_error") or ""
    failed = misses if error else 0
    return dict(zip(TASK_COLUMNS, (len(texts), hits, misses, failed, error)))


def fill_totals(reports, worker="worker"):
    """Sum the task reports of a fill; raise if any text could not be stored.

    Parameters
    ----------
    reports : iterable of mapping
        One per fill task, with the :data:`TASK_COLUMNS`.
    worker : str, default="worker"
        What the engine calls a worker, for the message.

    Returns
    -------
    report : dict
        ``texts``, ``hits`` and ``misses``, summed.

    Raises
    ------
    OSError
        When some task embedded texts but the store failed there (a missing
        bucket, no credentials or no permission on a worker ...): the
        message gives the cause, how many texts are affected, and whether
        the fill stored nothing at all.
    """
    reports = list(reports)
    totals = {name: sum(int(r[name]) for r in reports) for name in REPORT_COLUMNS}
    failures = [(int(r["failed"]), str(r["error"])) for r in reports if int(r["failed"])]
    if not failures:
        return totals
    n_failed = sum(n for n, _ in failures)
    causes = list(dict.fromkeys(cause for _, cause in failures))
    n_tasks = len(failures)
    if n_failed >= totals["misses"]:
        what = (
            f"The fill stored nothing: the {n_failed} texts it embedded could not be "
            f"stored, in {n_tasks} of {len(reports)} tasks"
        )
    else:
        what = (
            f"The fill is incomplete: {n_failed} of the {totals['misses']} texts it "
            f"embedded were not all stored, in {n_tasks} of {len(reports)} tasks"
        )
    more = f" (and {len(causes) - 1} other cause{'s' if len(causes) > 2 else ''})" if len(causes) > 1 else ""
    raise OSError(
        f"{what}: {causes[0]}{more}. Every {worker} must reach and write the store "
        f"given as memory=: set the endpoint, credentials and permissions in the "
        f"{worker}s' environment (or pass cache_storage_options=). What was stored "
        "stays stored; a new fill embeds only the rest."
    )


def transform_texts(vectorizer, texts):
    """Features of ``texts``, shape (n, n_features_out), float32."""
    if not texts:
        return np.zeros((0, vectorizer._n_features_out), dtype=np.float32)
    vec = copy.copy(vectorizer)
    return vec.transform(texts)
