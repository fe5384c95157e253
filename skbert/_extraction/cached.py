"""Extraction through the feature cache: look up every text, run the model on misses only.

The feature store (:mod:`skbert._cache`) keeps, per text, the pooled
statistics of *every* hidden state (see :mod:`skbert._extraction.pooling`), so
that any later choice of layers, layer combination, pooling or special-token
handling is assembled from the store without running the model again. Three
kinds of entries exist:

``"base"``
    ``(n_hidden_states, 5, hidden)``: cls, mean, mean_content, max,
    max_content; always computed.
``"attn"``
    ``(n_hidden_states, 2, hidden)``: the attention-pooling slots; computed
    only when a configuration needs them (attention maps cost more), for the
    texts that lack them.
``"pos"``
    ``(n_hidden_states, 6, hidden)``: the last-token, position-weighted-mean
    and mean-over-square-root-length slots; computed only when a
    configuration needs them, for the texts that lack them. A kind of its
    own, so that entries written before these poolings existed keep their
    shape and are never misread.

The namespace key (see :func:`namespace_fields`) holds everything that
changes these values: the model's content fingerprint (weights,
configuration, tokenizer), ``max_length``, the compute dtype and the storage
dtype. Batch size, device and verbosity are not part of it.
"""

import contextlib
import contextvars
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from .._cache import memory as _memory_layer
from .._cache import open_store
from .._model import backend as _backend
from ..exceptions import FeatureCacheWarning
from .batches import CHUNK_TEXTS, iter_statistics
from .pooling import STAT_GROUPS, n_stats_for

logger = logging.getLogger(__name__)

__all__ = [
    "iter_cached_statistics",
    "namespace_fields",
    "store_problem",
    "unlocked_misses",
    "warn_unfingerprinted",
    "CHUNK_BYTES",
]

#: Cached entries are read in chunks of about this many bytes.
CHUNK_BYTES = 32 << 20
#: The optional entry kinds (statistic groups of :mod:`skbert._extraction.pooling`).
_OPTIONAL_KINDS = ("attn", "pos")
#: Texts claimed and computed together (see :func:`_compute_misses`): the
#: extraction's tokenisation chunk, so batches are planned as without claims.
CLAIM_TEXTS = CHUNK_TEXTS
#: Whether misses are computed under the namespace lock (see :func:`unlocked_misses`).
_LOCK_MISSES = contextvars.ContextVar("skbert_lock_misses", default=True)


@contextlib.contextmanager
def unlocked_misses():
    """Compute misses without the namespace lock, in this context.

    The lock only saves work (processes wanting the same texts wait and then
    read them); entries are content-addressed, so correctness never needs it.
    The distributed engines give each worker texts that no other worker
    embeds (:mod:`skbert.engines`), and the lock would only serialise them.
    """
    token = _LOCK_MISSES.set(False)
    try:
        yield
    finally:
        _LOCK_MISSES.reset(token)


def namespace_fields(spec, *, max_length, dtype, **settings):
    """Everything that changes the stored statistics, or None if unknown.

    Parameters
    ----------
    spec : skbert._model.backend.ModelSpec
    max_length : int
        The resolved token limit.
    dtype : str
        Compute dtype of the forward pass.
    **settings
        Further tokenisation settings that change the values (JSON values).

    Returns
    -------
    fields : dict or None
        None when the model's content cannot be fingerprinted.
    """
    fingerprint = _backend.model_fingerprint(spec)
    if fingerprint is None:
        return None
    info = _backend.model_info(spec)
    return {
        "model": fingerprint,
        "n_hidden_states": info.n_hidden_states,
        "hidden_size": info.hidden_size,
        "max_length": int(max_length),
        "dtype": str(dtype),
        **settings,
    }


def iter_cached_statistics(texts, spec, store, *, load):
    """Yield pooled statistics like :func:`skbert._extraction.batches.iter_statistics`, cached.

    Parameters
    ----------
    texts : list of str
        Unique texts (token windows when ``spec.pretokenized``: each is keyed
        by its exact token ids, so ``store.fields`` should say so, a
        namespace of its own).
    spec : skbert._extraction.ExtractionSpec
        What to yield. ``spec.slots`` is ignored: every statistic of every
        hidden state is computed and stored. ``spec.pool_skip`` must be in
        ``store.fields``, since every statistic changes with it.
    store : skbert._extraction.StoreSpec
        Where and under which key the statistics are stored.
    load : callable
        Returns the :class:`skbert._model.backend.LoadedModel`; called only
        when some text misses.

    Yields
    ------
    positions, stats, counts
        As :func:`skbert._extraction.batches.iter_statistics`, with ``stats``
        of shape ``(batch, len(spec.layers), n_stats, hidden)`` (``n_stats``
        from :func:`skbert._extraction.pooling.n_stats_for`).

    Returns
    -------
    report : dict
        What the cache did in this call (the generator's return value, as
        ``yield from`` gives it): ``hits``, ``misses``, ``damaged``,
        ``written``, ``bytes_read``, ``bytes_written``, ``memory_hits`` and
        ``store_error``: None, or why the store could not be used or written
        (so that what was computed may not be stored), e.g. ``"cannot write
        to s3://bucket/x/skbert-features-v1 (PermissionError: ...)"``.
    """
    report = dict(
        hits=0, misses=0, damaged=0, written=0, bytes_read=0, bytes_written=0, store_error=None
    )
    yield from _cached(texts, spec, store, load, report)
    return report


def _cached(texts, spec, store, load, report):
    """The body of :func:`iter_cached_statistics`; fills ``report`` as it goes."""
    layers, attention, positional = spec.layers, spec.attention, spec.positional
    n_hidden_states, hidden_size = store.n_hidden_states, store.hidden_size
    memory, cache_dtype = store.memory, store.dtype
    cache = open_store(
        memory, dtype=cache_dtype, max_bytes=store.max_bytes, storage_options=store.storage_options
    )
    ns = cache.namespace(store.fields, store.meta)
    # What this process read or wrote is served again from memory.
    ns = _memory_layer.wrap(ns, store=memory, dtype=cache_dtype)
    try:
        select = np.asarray(layers, dtype=np.intp)
        n_stats = n_stats_for(attention, positional)
        wanted = {"attn": attention, "pos": positional}
        kinds = ["base"] + [k for k in _OPTIONAL_KINDS if wanted[k]]
        shapes = {
            kind: (n_hidden_states, stop - start, hidden_size)
            for kind, (start, stop) in STAT_GROUPS.items()
        }
        key_texts = [_window_key(w) for w in texts] if spec.pretokenized else texts
        keys = {kind: ns.keys(kind, key_texts) for kind in kinds}
        per_text = 4 * len(layers) * hidden_size * n_stats
        chunk = max(1, CHUNK_BYTES // max(per_text, 1))

        def lookup(positions):
            """Yield the cached texts among ``positions``; return the rest."""
            missing, had = [], {kind: [] for kind in kinds}
            for start in range(0, len(positions), chunk):
                pos = positions[start : start + chunk]
                found = np.ones(len(pos), dtype=bool)
                stats = np.full(
                    (len(pos), len(select), n_stats, hidden_size), np.nan, dtype=np.float32
                )
                present, counts = {}, None
                for kind in kinds:
                    found_k, stats_k, counts_k = ns.read(
                        kind, [keys[kind][i] for i in pos], shapes[kind], select=select
                    )
                    lo, hi = STAT_GROUPS[kind]
                    stats[:, :, lo:hi] = stats_k
                    if counts is None:
                        counts = counts_k
                    present[kind] = found_k
                    found &= found_k
                missing.extend(pos[~found])
                for kind in kinds:
                    had[kind].extend(present[kind][~found])
                if found.any():
                    report["hits"] += int(found.sum())
                    yield pos[found], stats[found], counts[found]
            return (
                np.asarray(missing, dtype=np.int64),
                {kind: np.asarray(v, dtype=bool) for kind, v in had.items()},
            )

        missing, had = yield from lookup(np.arange(len(texts)))
        if len(missing):

            # Every hidden state and statistic is computed (and stored); the
            # progress bar is the claims' when there is one.
            every = replace(spec, layers=tuple(range(n_hidden_states)), slots=None)

            def compute(positions, had, claims=None, bar=None):
                return _compute(
                    [texts[i] for i in positions],
                    positions,
                    had,
                    replace(every, verbose=spec.verbose and bar is None),
                    ns=ns,
                    keys=keys,
                    # The model must be the one the key names (see _backend.check_loaded).
                    load=lambda: _backend.check_loaded(load(), store.fields["model"]),
                    select=select,
                    report=report,
                    cache_dtype=cache_dtype,
                    claims=claims,
                    bar=bar,
                )

            yield from _compute_misses(
                missing,
                ns=ns,
                lookup=lookup,
                compute=compute,
                claim_keys=keys["base"],
                coordinate=_LOCK_MISSES.get(),
                verbose=spec.verbose,
            )
    finally:
        report["damaged"] += len(cache.damaged)
        report["written"] = cache.written
        report["bytes_read"] = cache.bytes_read
        report["bytes_written"] = cache.bytes_written
        report["memory_hits"] = getattr(ns, "memory_hits", 0)
        cache.close(summary=dict(report, namespace=ns.name))
        # After close: publishing the last buffered entries may fail there.
        report["store_error"] = store_problem(cache)


def store_problem(cache):
    """Why the store ``cache`` could not be used or written in this call, or None.

    The caller's process warns once (:class:`FeatureCacheWarning`); this
    string says it again wherever the call's report goes (a distributed
    fill's client, see :mod:`skbert.engines`).
    """
    where = getattr(cache, "location", None) or str(getattr(cache, "root", "the feature store"))
    if cache.write_error is not None:
        exc = cache.write_error
        return f"cannot write to {where} ({type(exc).__name__}: {exc})"
    if not cache.usable:
        return getattr(cache, "unusable_reason", None) or f"cannot use {where}"
    return None


def _compute_misses(missing, *, ns, lookup, compute, claim_keys, coordinate, verbose):
    """Compute the texts at positions ``missing``, sharing the work with other processes.

    Texts are claimed and computed in groups of :data:`CLAIM_TEXTS` (see
    :class:`skbert._cache.local.Claims`): a group's texts that another live
    process claimed are left to it, and read once its claim is released; a
    claim that makes no progress for ``SKBERT_CACHE_WAIT`` seconds is given
    up on with a :class:`FeatureCacheWarning`, and its texts computed here.
    So a process never waits for texts it does not need, and waits for the
    ones it needs at most one group's computation while their claimer
    progresses. Stores without claims fall back to their ``lock()``.
    """
    claims = ns.claims() if coordinate and hasattr(ns, "claims") else None
    if claims is None:
        with ns.lock() if coordinate else contextlib.nullcontext():
            # Another process may have computed some while we waited.
            missing, had = yield from lookup(missing)
            if len(missing):
                yield from compute(missing, had)
        return
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(missing), unit="text", desc="BERT features")
    pending = [int(i) for i in missing]
    waiting = {}  # claim of another process -> positions it holds
    try:
        while pending or waiting:
            if pending:
                group = np.asarray(pending[:CLAIM_TEXTS], dtype=np.int64)
                del pending[:CLAIM_TEXTS]
                mine, others = claims.take([claim_keys[i] for i in group])
                for name, idx in others.items():
                    waiting.setdefault(name, []).extend(group[idx].tolist())
                group = group[mine]
                if len(group):
                    try:
                        # Another process may have computed some since the lookup.
                        group, had = yield from _counted(lookup(group), bar)
                        if len(group):
                            yield from compute(group, had, claims, bar=bar)
                    finally:
                        claims.release()
                continue
            released, stuck = claims.wait(list(waiting))
            if stuck:
                n_stuck = sum(len(waiting[name]) for name in stuck)
                warnings.warn(
                    f"skbert feature cache: another process claimed {n_stuck} of the texts "
                    f"this call needs in {ns.path} and made no progress on them for "
                    f"{claims.wait_seconds:g} s (stopped or stuck); computing them here. "
                    "Set SKBERT_CACHE_WAIT (seconds) to wait longer.",
                    FeatureCacheWarning,
                    stacklevel=3,
                )
            back = [i for name in released | stuck for i in waiting.pop(name)]
            # What the other process published is read; the rest is claimed again.
            back, _ = yield from _counted(lookup(np.asarray(back, dtype=np.int64)), bar)
            pending.extend(back.tolist())
    finally:
        claims.close()
        if bar is not None:
            bar.close()


def _counted(gen, bar):
    """Forward ``gen``'s items and return value, counting its texts on ``bar``."""
    try:
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            if bar is not None:
                bar.update(len(item[0]))
            yield item
    finally:
        gen.close()


def _compute(
    miss_texts, missing, had, spec, *, ns, keys, load, select, report, cache_dtype, claims, bar
):
    """Run the model on ``miss_texts``, store every kind a text lacked, yield ``select``."""
    def write(positions, orig, stats, counts):
        # Keep the kinds already cached (e.g. base statistics computed
        # without attention maps); write only those a text lacked.
        for kind in keys:
            new = ~had[kind][positions]
            if new.any():
                lo, hi = STAT_GROUPS[kind]
                ns.write(
                    kind,
                    [keys[kind][i] for i in orig[new]],
                    stats[new, :, lo:hi],
                    counts[new],
                )

    loaded = load()
    if claims is not None:
        claims.touch()  # loading can take a while: it is progress
    # Entries are written by one background thread while the model runs the
    # next batch (at most one batch waits), and all are written before the
    # claim (or lock) is released, so processes waiting on it find them.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="skbert-cache-write") as writer:
        pending = None
        for positions, stats, counts in iter_statistics(miss_texts, loaded, spec):
            orig = missing[positions]
            report["misses"] += len(orig)
            if pending is not None:
                pending.result()
            pending = writer.submit(write, positions, orig, stats, counts)
            if claims is not None:
                claims.touch()
            out = np.ascontiguousarray(stats[:, select])
            if cache_dtype != "float32":
                # What a later call reads back: computed and cached values
                # are bitwise equal (the entry stores this very rounding).
                out = out.astype(cache_dtype).astype(np.float32)
            if bar is not None:
                bar.update(len(orig))
            yield orig, out, counts
        if pending is not None:
            pending.result()


def _window_key(window):
    """The cache key text of a token window: its exact token ids."""
    ids, _ = window
    return "ids:" + " ".join(map(str, ids))


def warn_unfingerprinted(spec):
    """Warn that ``spec``'s content is unknown, so caching is off for it."""
    warnings.warn(
        f"skbert feature cache: cannot identify the content of model "
        f"{spec.name!r} (revision {spec.revision!r}): no weight files found "
        "locally, or its hub commit is not in the local Hugging Face cache. "
        "Features are computed without caching.",
        FeatureCacheWarning,
        stacklevel=4,
    )
