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

from ..exceptions import TruncationWarning

__all__ = [
    "CHUNK_AGGS",
    "TruncationWarning",
    "plan_chunks",
    "aggregate_chunks",
    "split_documents",
    "count_truncated",
    "special_template",
]

CHUNK_AGGS = ("mean", "token_mean", "max", "first")
#: Documents chunked together: their windows share length-sorted batches, and
#: memory holds at most this many documents' chunk statistics.
DOC_BLOCK = 1024


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


def _word_starts(enc, i, n):
    try:
        word_ids = enc.word_ids(i)
    except (ValueError, AttributeError):  # slow tokenizers know no words
        return [True] * n
    return [
        j == 0 or word_ids[j] is None or word_ids[j] != word_ids[j - 1] for j in range(n)
    ]


def _content_tokens(tokenizer, texts):
    """Whole texts tokenised without special tokens or truncation."""
    return tokenizer(
        list(texts),
        add_special_tokens=False,
        truncation=False,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )


def special_template(tokenizer):
    """The special tokens a tokenizer puts before and after one sequence.

    Read off the tokenizer's own output for a one-word text, so it holds for
    any single-sequence template (BERT's ``[CLS] x [SEP]``, RoBERTa's
    ``<s> x </s>``, ...).

    Returns
    -------
    prefix, suffix : tuple of int
    """
    enc = tokenizer("a", return_special_tokens_mask=True, return_token_type_ids=False)
    ids, mask = list(enc["input_ids"]), list(enc["special_tokens_mask"])
    n_prefix = next((i for i, m in enumerate(mask) if not m), len(mask))
    n_suffix = next((i for i, m in enumerate(reversed(mask)) if not m), 0)
    return tuple(ids[:n_prefix]), tuple(ids[len(ids) - n_suffix :])


def split_documents(tokenizer, texts, *, chunk_size, chunk_overlap):
    """Split each text into token windows ready for the model.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    texts : list of str
    chunk_size : int
        Tokens per window, special tokens included.
    chunk_overlap : int
        Content tokens shared by consecutive windows.

    Returns
    -------
    windows : list of list of (tuple, tuple)
        Per text, its windows as ``(input_ids, special_tokens_mask)`` with the
        special tokens added as the tokenizer adds them to one sequence. A
        text that fits in one window gets the same ids as ``tokenizer(text)``.
    """
    prefix, suffix = special_template(tokenizer)
    content = chunk_size - len(prefix) - len(suffix)
    enc = _content_tokens(tokenizer, texts)
    head, tail = (1,) * len(prefix), (1,) * len(suffix)
    out = []
    for i, ids in enumerate(enc["input_ids"]):
        starts = _word_starts(enc, i, len(ids))
        windows = []
        for start, end in plan_chunks(starts, content, chunk_overlap):
            piece = tuple(ids[start:end])
            windows.append((prefix + piece + suffix, head + (0,) * len(piece) + tail))
        out.append(windows)
    return out


def count_truncated(tokenizer, texts, max_length):
    """How many ``texts`` have more than ``max_length`` tokens.

    Only texts whose UTF-8 size could exceed the limit are tokenised: every
    token of WordPiece, BPE and SentencePiece vocabularies covers at least
    one byte, so shorter texts cannot be truncated.
    """
    prefix, suffix = special_template(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    candidates = [t for t in texts if len(t) > budget or len(t.encode("utf-8", "surrogatepass")) > budget]
    if not candidates:
        return 0
    enc = _content_tokens(tokenizer, candidates)
    return sum(len(ids) > budget for ids in enc["input_ids"])
