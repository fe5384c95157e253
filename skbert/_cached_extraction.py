"""Extraction through the feature cache: look up every text, run the model on misses only.

The cache (:mod:`skbert._cache`) stores, per text, the pooled statistics of
*every* hidden state (see :mod:`skbert._pooling`), so that any later choice of
layers, layer combination, pooling or special-token handling is assembled
from the cache without running the model again. Two kinds of entries exist:

``"base"``
    ``(n_hidden_states, 5, hidden)``: cls, mean, mean_content, max,
    max_content; always computed.
``"attn"``
    ``(n_hidden_states, 2, hidden)``: the attention-pooling slots; computed
    only when a configuration needs them (attention maps cost more), for the
    texts that lack them.

The namespace key (see :func:`namespace_fields`) holds everything that
changes these values: the model's content fingerprint (weights,
configuration, tokenizer), ``max_length``, the compute dtype and the storage
dtype. Batch size, device and verbosity are not part of it.
"""

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _backend
from ._cache import FeatureCache, FeatureCacheWarning
from ._extraction import iter_statistics
from ._pooling import N_ALL_STATS, N_BASE_STATS

logger = logging.getLogger(__name__)

__all__ = [
    "iter_cached_statistics",
    "namespace_fields",
    "warn_unfingerprinted",
    "CHUNK_BYTES",
]

#: Cached entries are read in chunks of about this many bytes.
CHUNK_BYTES = 32 << 20
_N_ATTN_STATS = N_ALL_STATS - N_BASE_STATS


def namespace_fields(spec, *, max_length, dtype, **settings):
    """Everything that changes the stored statistics, or None if unknown.

    Parameters
    ----------
    spec : skbert._backend.ModelSpec
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


def iter_cached_statistics(
    texts,
    *,
    memory,
    fields,
    meta,
    load,
    layers,
    attention,
    n_hidden_states,
    hidden_size,
    max_length,
    batch_size,
    max_batch_tokens,
    dtype,
    verbose,
    cache_dtype="float32",
    max_bytes=None,
    report=None,
    pretokenized=False,
):
    """Yield pooled statistics like :func:`skbert._extraction.iter_statistics`, cached.

    Parameters
    ----------
    texts : list of str
        Unique texts.
    memory : str or path-like
        The cache folder.
    fields : dict
        The namespace key, from :func:`namespace_fields`.
    meta : dict
        A JSON description of the model for ``cache info``.
    load : callable
        Returns the :class:`skbert._backend.LoadedModel`; called only when
        some text misses.
    layers : list of int
        Hidden states to yield, in this order.
    attention : bool
        Whether the attention slots are needed.
    report : dict, optional
        Filled with ``hits``, ``misses``, ``damaged``, ``written`` and byte
        counts of this call.
    pretokenized : bool, default=False
        ``texts`` are token windows ``(input_ids, special_tokens_mask)`` (see
        :mod:`skbert._chunking`); each is keyed by its exact token ids, so
        ``fields`` should say so (a namespace of its own).

    Yields
    ------
    positions, stats, counts
        As :func:`skbert._extraction.iter_statistics`, with ``stats`` of
        shape ``(batch, len(layers), 5 or 7, hidden)``.
    """
    report = {} if report is None else report
    report.update(hits=0, misses=0, damaged=0, written=0, bytes_read=0, bytes_written=0)
    cache = FeatureCache(memory, dtype=cache_dtype, max_bytes=max_bytes)
    ns = cache.namespace(fields, meta)
    try:
        select = np.asarray(layers, dtype=np.intp)
        base_shape = (n_hidden_states, N_BASE_STATS, hidden_size)
        attn_shape = (n_hidden_states, _N_ATTN_STATS, hidden_size)
        key_texts = [_window_key(w) for w in texts] if pretokenized else texts
        base_keys = ns.keys("base", key_texts)
        attn_keys = ns.keys("attn", key_texts) if attention else None
        per_text = 4 * len(layers) * hidden_size * (N_ALL_STATS if attention else N_BASE_STATS)
        chunk = max(1, CHUNK_BYTES // max(per_text, 1))

        def lookup(positions):
            """Yield the cached texts among ``positions``; return the rest."""
            missing, has_base = [], []
            for start in range(0, len(positions), chunk):
                pos = positions[start : start + chunk]
                found, stats, counts = ns.read(
                    "base", [base_keys[i] for i in pos], base_shape, select=select
                )
                base_found = found.copy()
                if attention:
                    found_a, stats_a, _ = ns.read(
                        "attn", [attn_keys[i] for i in pos], attn_shape, select=select
                    )
                    found &= found_a
                    stats = np.concatenate([stats, stats_a], axis=2)
                missing.extend(pos[~found])
                has_base.extend(base_found[~found])
                if found.any():
                    report["hits"] += int(found.sum())
                    yield pos[found], stats[found], counts[found]
            return np.asarray(missing, dtype=np.int64), np.asarray(has_base, dtype=bool)

        missing, has_base = yield from lookup(np.arange(len(texts)))
        if len(missing):
            with ns.lock():
                # Another process may have computed some while we waited.
                missing, has_base = yield from lookup(missing)
                if len(missing):
                    yield from _compute(
                        [texts[i] for i in missing],
                        missing,
                        has_base,
                        ns=ns,
                        base_keys=base_keys,
                        attn_keys=attn_keys,
                        load=load,
                        select=select,
                        attention=attention,
                        n_hidden_states=n_hidden_states,
                        max_length=max_length,
                        batch_size=batch_size,
                        max_batch_tokens=max_batch_tokens,
                        dtype=dtype,
                        verbose=verbose,
                        report=report,
                        pretokenized=pretokenized,
                    )
    finally:
        report["damaged"] += len(cache.damaged)
        report["written"] = cache.written
        report["bytes_read"] = cache.bytes_read
        report["bytes_written"] = cache.bytes_written
        cache.close(summary=dict(report, namespace=ns.name))


def _compute(
    miss_texts,
    missing,
    has_base,
    *,
    ns,
    base_keys,
    attn_keys,
    load,
    select,
    attention,
    n_hidden_states,
    max_length,
    batch_size,
    max_batch_tokens,
    dtype,
    verbose,
    report,
    pretokenized=False,
):
    def write(positions, orig, stats, counts):
        # Keep base statistics already cached (computed without attention maps).
        new_base = ~has_base[positions]
        if new_base.any():
            ns.write(
                "base",
                [base_keys[i] for i in orig[new_base]],
                stats[new_base, :, :N_BASE_STATS],
                counts[new_base],
            )
        if attention:
            ns.write("attn", [attn_keys[i] for i in orig], stats[:, :, N_BASE_STATS:], counts)

    loaded = load()
    # Entries are written by one background thread while the model runs the
    # next batch (at most one batch waits), and all are written before the
    # namespace lock is released, so processes waiting on it find them.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="skbert-cache-write") as writer:
        pending = None
        for positions, stats, counts in iter_statistics(
            miss_texts,
            loaded,
            layers=list(range(n_hidden_states)),
            attention=attention,
            max_length=max_length,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            dtype=dtype,
            verbose=verbose,
            pretokenized=pretokenized,
        ):
            orig = missing[positions]
            report["misses"] += len(orig)
            if pending is not None:
                pending.result()
            pending = writer.submit(write, positions, orig, stats, counts)
            yield orig, np.ascontiguousarray(stats[:, select]), counts
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
