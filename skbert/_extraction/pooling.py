"""Pure tensor functions: per-layer pooled statistics of one padded batch.

One forward pass gives every hidden state; from it this module computes, per
text and per layer, a small set of *statistics* from which every pooling the
vectorizer offers can be assembled without running the model again:

====  ==========================  =============================================
slot  name                        definition (over the layer's token vectors)
====  ==========================  =============================================
0     ``cls``                     vector of the first pooled token
1     ``mean``                    mean over real tokens (attention_mask == 1)
2     ``mean_content``            mean over real tokens that are not special
3     ``max``                     element-wise max over real tokens
4     ``max_content``             element-wise max over real non-special tokens
5     ``attention``               attention-weighted sum over real tokens
6     ``attention_content``       the same over real non-special tokens
7     ``last_token``              vector of the last real token
8     ``last_token_content``      vector of the last real non-special token
9     ``weighted_mean``           position-weighted mean: the ``k``-th real
                                  token has weight ``k`` (1, 2, ..., n)
10    ``weighted_mean_content``   the same over real non-special tokens (each
                                  keeps its position weight)
11    ``mean_sqrt_len``           sum over real tokens divided by the square
                                  root of their number
12    ``mean_sqrt_len_content``   the same over real non-special tokens
====  ==========================  =============================================

The slots form three groups (:data:`STAT_GROUPS`): ``"base"`` (0-4), always
computed; ``"attn"`` (5-6), computed only when attention maps are requested;
``"pos"`` (7-12), the poolings of sentence-transformers' ``lasttoken``,
``weightedmean`` and ``mean_sqrt_len_tokens`` modes, computed only when
asked for. A statistics array holds the slots up to the end of the last
group it computes; slots of groups it does not compute are NaN.

Padding never enters any statistic, on either padding side: "first" and
"last" mean the first and last *real* token, so left-padded batches (decoder
models) pool the same vectors as right-padded ones. A text with no content
token (the empty string) gets the statistics over all its real tokens in the
``*_content`` slots, so its vectors stay finite. ``pool_skip`` leaves the
first real tokens of every text out of every statistic (a prompt that the
model's pooling configuration excludes, as sentence-transformers does with
``include_prompt=False``); weighted means keep the original position weights
of the remaining tokens. Attention weights for hidden state ``l`` are those of
the transformer layer that produced it (``attentions[l - 1]``; the embedding
output, ``l = 0``, uses the first layer's): the attention each key token
receives, averaged over heads and over real query positions, then restricted
to the pooled tokens and normalised to sum to one.

All statistics are accumulated in float32 whatever the model's compute dtype.
torch is imported inside the functions so that importing skbert stays cheap.
"""

__all__ = [
    "STAT_SLOTS",
    "STAT_GROUPS",
    "N_BASE_STATS",
    "N_ALL_STATS",
    "n_stats_for",
    "pooled_statistics",
    "pool_tokens",
]

STAT_SLOTS = {
    "cls": 0,
    "mean": 1,
    "mean_content": 2,
    "max": 3,
    "max_content": 4,
    "attention": 5,
    "attention_content": 6,
    "last_token": 7,
    "last_token_content": 8,
    "weighted_mean": 9,
    "weighted_mean_content": 10,
    "mean_sqrt_len": 11,
    "mean_sqrt_len_content": 12,
}
#: Slot ranges ``(start, stop)`` of each group of statistics.
STAT_GROUPS = {"base": (0, 5), "attn": (5, 7), "pos": (7, 13)}
N_BASE_STATS = 5
N_ALL_STATS = 13


def n_stats_for(attention=False, positional=False):
    """Number of slots of a statistics array holding the requested groups."""
    if positional:
        return STAT_GROUPS["pos"][1]
    if attention:
        return STAT_GROUPS["attn"][1]
    return N_BASE_STATS


def _masked_mean(hidden, mask):
    import torch

    # hidden: (b, t, h) float32; mask: (b, t) bool
    weights = mask.to(hidden.dtype)
    total = torch.einsum("bth,bt->bh", hidden, weights)
    count = weights.sum(dim=1, keepdim=True).clamp_min(1.0)
    return total / count


def _masked_max(hidden, mask):
    filled = hidden.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    return filled.amax(dim=1)


def _received_attention(attn, real):
    """Attention each key receives, averaged over heads and real queries.

    attn: (b, heads, q, k); real: (b, t) bool. Returns (b, t) float32.
    """
    import torch

    attn = attn.float().mean(dim=1)  # (b, q, k)
    qmask = real.to(attn.dtype)
    received = torch.einsum("bqk,bq->bk", attn, qmask)
    return received / qmask.sum(dim=1, keepdim=True).clamp_min(1.0)


def _weighted_sum(hidden, received, mask):
    import torch

    weights = received * mask.to(received.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("bth,bt->bh", hidden, weights)


def _first_index(mask):
    """Position of the first True of each row (0 for an all-False row)."""
    import torch

    return mask.to(torch.int32).argmax(dim=1)


def _last_index(mask):
    """Position of the last True of each row (the last position for an all-False row)."""
    import torch

    t = mask.shape[1]
    return (t - 1) - mask.flip(1).to(torch.int32).argmax(dim=1)


def _gather_rows(hidden, index):
    """``hidden[b, index[b]]`` for every row ``b``."""
    import torch

    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, index.long()]


def _positions(real):
    """1-based position of every real token among its text's real tokens (0 on padding)."""
    import torch

    return torch.cumsum(real.to(torch.int64), dim=1).float() * real.float()


def _position_weighted_mean(hidden, positions, mask):
    import torch

    weights = positions * mask.to(positions.dtype)
    total = torch.einsum("bth,bt->bh", hidden, weights)
    return total / weights.sum(dim=1, keepdim=True).clamp_min(1e-9)


def _sum_over_sqrt_len(hidden, mask):
    import torch

    weights = mask.to(hidden.dtype)
    total = torch.einsum("bth,bt->bh", hidden, weights)
    return total / weights.sum(dim=1, keepdim=True).clamp_min(1.0).sqrt()


def _pooling_masks(attention_mask, special_tokens_mask, pool_skip=0):
    """Masks of the pooled tokens: ``(real, pooled, content)``.

    ``pooled`` is the real tokens minus the first ``pool_skip`` of each text
    (all real tokens again when none would remain); ``content`` the pooled
    tokens that are not special (the pooled tokens when none are).
    """
    import torch

    real = attention_mask.bool()
    pooled = real
    if pool_skip:
        rank = torch.cumsum(real.to(torch.int64), dim=1)
        pooled = real & (rank > int(pool_skip))
        none_left = (pooled.sum(dim=1) == 0).unsqueeze(1)
        pooled = torch.where(none_left, real, pooled)
    content = pooled & ~special_tokens_mask.bool()
    empty = (content.sum(dim=1) == 0).unsqueeze(1)
    content = torch.where(empty, pooled, content)
    return real, pooled, content


def pooled_statistics(
    hidden_states,
    attention_mask,
    special_tokens_mask,
    attentions=None,
    slots=None,
    *,
    positional=False,
    pool_skip=0,
):
    """Compute the pooled statistics of one padded batch.

    Parameters
    ----------
    hidden_states : sequence of torch.Tensor
        The hidden states to pool, each ``(batch, seq, hidden)``.
    attention_mask : torch.Tensor
        ``(batch, seq)``, 1 for real tokens, 0 for padding (on either side).
    special_tokens_mask : torch.Tensor
        ``(batch, seq)``, 1 for special tokens ([CLS], [SEP], ...).
    attentions : sequence of torch.Tensor or None
        One attention map ``(batch, heads, seq, seq)`` per hidden state, in
        the same order; when given, the attention slots are filled.
    slots : sequence of int, default=None
        Compute only these statistic slots; the others are NaN. None
        computes all of them.
    positional : bool, default=False
        Fill the ``"pos"`` slots (last token, position-weighted mean, mean
        over the square root of the length).
    pool_skip : int, default=0
        Leave the first ``pool_skip`` real tokens of each text out of every
        statistic (an excluded prompt).

    Returns
    -------
    stats : torch.Tensor
        float32 ``(batch, n_layers, n_stats, hidden)`` with ``n_stats`` from
        :func:`n_stats_for` (5, 7 with ``attentions``, 13 with
        ``positional``; slot order in the module docstring).
    counts : torch.Tensor
        int64 ``(batch, 2)``: real tokens, and real non-special tokens.
    """
    import torch

    real, pooled, content = _pooling_masks(attention_mask, special_tokens_mask, pool_skip)
    n_real = real.sum(dim=1)
    n_content = (real & ~special_tokens_mask.bool()).sum(dim=1)
    n_stats = n_stats_for(attentions is not None, positional)
    wanted = set(range(n_stats)) if slots is None else {int(s) for s in slots}
    # Right padding and nothing skipped: the first pooled token is at position 0.
    first = None if (not pool_skip and bool(real[:, 0].all())) else _first_index(pooled)
    if positional:
        positions = _positions(real)
        last, last_content = _last_index(pooled), _last_index(content)
    per_layer = []
    for i, hidden in enumerate(hidden_states):
        hidden = hidden.float()
        compute = [
            (lambda: hidden[:, 0]) if first is None else (lambda: _gather_rows(hidden, first)),
            lambda: _masked_mean(hidden, pooled),
            lambda: _masked_mean(hidden, content),
            lambda: _masked_max(hidden, pooled),
            lambda: _masked_max(hidden, content),
        ]
        if attentions is not None:
            received = _received_attention(attentions[i], real)
            compute.append(lambda: _weighted_sum(hidden, received, pooled))
            compute.append(lambda: _weighted_sum(hidden, received, content))
        else:
            compute.extend([None] * (n_stats - len(compute)) if positional else [])
        if positional:
            compute[STAT_GROUPS["pos"][0]:] = [
                lambda: _gather_rows(hidden, last),
                lambda: _gather_rows(hidden, last_content),
                lambda: _position_weighted_mean(hidden, positions, pooled),
                lambda: _position_weighted_mean(hidden, positions, content),
                lambda: _sum_over_sqrt_len(hidden, pooled),
                lambda: _sum_over_sqrt_len(hidden, content),
            ]
        skipped = None
        values = []
        for slot, fn in enumerate(compute):
            if fn is not None and slot in wanted:
                values.append(fn())
            else:
                if skipped is None:
                    skipped = hidden.new_full((hidden.shape[0], hidden.shape[2]), float("nan"))
                values.append(skipped)
        per_layer.append(torch.stack(values, dim=1))
    stats = torch.stack(per_layer, dim=1)
    counts = torch.stack([n_real, n_content], dim=1).long()
    return stats, counts


def pool_tokens(hidden, attention_mask, special_tokens_mask, pooling, exclude_special_tokens,
                attention=None):
    """Pool one layer's token vectors into one vector per text, differentiably.

    The training-time counterpart of :func:`pooled_statistics`: it computes
    only the requested pooling, with the same definitions (padding never
    enters; a text without content tokens falls back to all its real tokens),
    and keeps the autograd graph so that gradients reach the encoder.

    Parameters
    ----------
    hidden : torch.Tensor
        ``(batch, seq, hidden)`` token vectors of one hidden state.
    attention_mask, special_tokens_mask : torch.Tensor
        ``(batch, seq)`` masks as in :func:`pooled_statistics`.
    pooling : {"cls", "mean", "max", "attention", "mean_max", "last_token", \
            "weighted_mean", "mean_sqrt_len"}
    exclude_special_tokens : bool
        Pool over real non-special tokens only (not for ``"cls"``).
    attention : torch.Tensor, default=None
        ``(batch, heads, seq, seq)`` attention map, for ``"attention"``.

    Returns
    -------
    pooled : torch.Tensor
        float32 ``(batch, hidden)``, or ``(batch, 2 * hidden)`` for
        ``"mean_max"`` (mean then max).
    """
    import torch

    hidden = hidden.float()
    real, _, content = _pooling_masks(attention_mask, special_tokens_mask)
    if pooling == "cls":
        if bool(real[:, 0].all()):
            return hidden[:, 0]
        return _gather_rows(hidden, _first_index(real))
    mask = content if exclude_special_tokens else real
    if pooling == "mean":
        return _masked_mean(hidden, mask)
    if pooling == "max":
        return _masked_max(hidden, mask)
    if pooling == "mean_max":
        return torch.cat([_masked_mean(hidden, mask), _masked_max(hidden, mask)], dim=1)
    if pooling == "attention":
        if attention is None:
            raise ValueError("pooling='attention' needs the layer's attention map.")
        return _weighted_sum(hidden, _received_attention(attention, real), mask)
    if pooling == "last_token":
        return _gather_rows(hidden, _last_index(mask))
    if pooling == "weighted_mean":
        return _position_weighted_mean(hidden, _positions(real), mask)
    if pooling == "mean_sqrt_len":
        return _sum_over_sqrt_len(hidden, mask)
    raise ValueError(f"Unknown pooling {pooling!r}.")
