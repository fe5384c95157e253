"""Long documents: token-exact chunking and aggregation of chunk statistics.

A document longer than the model's window is split into windows of
``chunk_size`` tokens (special tokens included) that overlap by
``chunk_overlap`` content tokens; each window is encoded like a short text
and pooled; the chunks' pooled statistics are then aggregated into one set of
statistics per document. Pooling is a selection of statistic slots, so
aggregating statistics and then pooling equals pooling each chunk and then
aggregating, for every layer and pooling.

Windows end at word boundaries where possible: a window that would end inside
a run of word pieces ends before that word instead, unless the word alone is
longer than the window.
"""

import numpy as np

__all__ = ["CHUNK_AGGS", "plan_chunks", "aggregate_chunks"]

CHUNK_AGGS = ("mean", "token_mean", "max", "first")


def plan_chunks(word_starts, content_size, overlap):
    """Cut a token sequence into overlapping windows.

    Parameters
    ----------
    word_starts : sequence of bool
        For each content token (special tokens excluded), whether it begins
        a word (False for a continuation word piece such as ``##ing``).
    content_size : int
        Content tokens per window (the chunk size minus the special tokens).
    overlap : int
        Content tokens shared by consecutive windows, ``0 <= overlap < content_size``.

    Returns
    -------
    windows : list of (start, end)
        Half-open token ranges covering every token, in order.
    """
    n = len(word_starts)
    if content_size < 1:
        raise ValueError(f"content_size must be at least 1; got {content_size}.")
    if not 0 <= overlap < content_size:
        raise ValueError(f"overlap must be in [0, {content_size}); got {overlap}.")
    if n <= content_size:
        return [(0, n)]
    windows, start = [], 0
    while True:
        end = min(start + content_size, n)
        if end < n and not word_starts[end]:
            back = end
            while back > start and not word_starts[back]:
                back -= 1
            if back > start:
                end = back  # end before the word that would be split
        windows.append((start, end))
        if end >= n:
            return windows
        nxt = max(end - overlap, start + 1)
        aligned = nxt
        while aligned > start + 1 and not word_starts[aligned]:
            aligned -= 1
        start = aligned if word_starts[aligned] else nxt


def aggregate_chunks(stats, counts, chunk_agg):
    """Aggregate the statistics of one document's chunks.

    Parameters
    ----------
    stats : ndarray, shape (n_chunks, n_layers, n_stats, hidden)
    counts : ndarray of int, shape (n_chunks, 2)
        Real tokens and real non-special tokens of each chunk.
    chunk_agg : {"mean", "token_mean", "max", "first"}
        ``"mean"`` weighs chunks equally, ``"token_mean"`` by their number of
        non-special tokens, ``"max"`` takes the element-wise maximum,
        ``"first"`` keeps the first chunk.

    Returns
    -------
    stats : ndarray of float32, shape (n_layers, n_stats, hidden)
    counts : ndarray of int64, shape (2,)
        Token counts summed over chunks.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if chunk_agg == "first" or len(stats) == 1:
        return np.asarray(stats[0], dtype=np.float32), counts[0]
    total = counts.sum(axis=0)
    if chunk_agg == "max":
        return stats.max(axis=0).astype(np.float32), total
    if chunk_agg == "mean":
        return stats.mean(axis=0, dtype=np.float64).astype(np.float32), total
    if chunk_agg == "token_mean":
        w = np.maximum(np.asarray(counts, dtype=np.float64)[:, 1], 1.0)
        w /= w.sum()
        return np.einsum("c,clsh->lsh", w, stats.astype(np.float64)).astype(np.float32), total
    raise ValueError(f"chunk_agg must be one of {CHUNK_AGGS}; got {chunk_agg!r}.")
