"""Pure tensor functions: per-layer pooled statistics of one padded batch.

One forward pass gives every hidden state; from it this module computes, per
text and per layer, a small set of *statistics* from which every pooling the
vectorizer offers can be assembled without running the model again:

====  ==================  =====================================================
slot  name                definition (over the layer's token vectors)
====  ==================  =====================================================
0     ``cls``             vector at position 0
1     ``mean``            mean over real tokens (attention_mask == 1)
2     ``mean_content``    mean over real tokens that are not special tokens
3     ``max``             element-wise max over real tokens
4     ``max_content``     element-wise max over real non-special tokens
5     ``attention``       attention-weighted sum over real tokens
6     ``attention_content``  the same over real non-special tokens
====  ==================  =====================================================

Padding never enters any statistic. A text with no content token (the empty
string) gets the statistics over all its real tokens in the ``*_content``
slots, so its vectors stay finite. Attention weights for hidden state ``l``
are those of the transformer layer that produced it (``attentions[l - 1]``;
the embedding output, ``l = 0``, uses the first layer's): the attention each
key token receives, averaged over heads and over real query positions, then
restricted to the pooled tokens and normalised to sum to one.

All statistics are accumulated in float32 whatever the model's compute dtype.
torch is imported inside the functions so that importing skbert stays cheap.
"""

__all__ = ["STAT_SLOTS", "N_BASE_STATS", "N_ALL_STATS", "pooled_statistics", "pool_tokens"]

STAT_SLOTS = {
    "cls": 0,
    "mean": 1,
    "mean_content": 2,
    "max": 3,
    "max_content": 4,
    "attention": 5,
    "attention_content": 6,
}
N_BASE_STATS = 5
N_ALL_STATS = 7


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


def pooled_statistics(
    hidden_states, attention_mask, special_tokens_mask, attentions=None, slots=None
):
    """Compute the pooled statistics of one padded batch.

    Parameters
    ----------
    hidden_states : sequence of torch.Tensor
        The hidden states to pool, each ``(batch, seq, hidden)``.
    attention_mask : torch.Tensor
        ``(batch, seq)``, 1 for real tokens, 0 for padding.
    special_tokens_mask : torch.Tensor
        ``(batch, seq)``, 1 for special tokens ([CLS], [SEP], ...).
    attentions : sequence of torch.Tensor or None
        One attention map ``(batch, heads, seq, seq)`` per hidden state, in
        the same order; when given, the attention slots are filled.
    slots : sequence of int, default=None
        Compute only these statistic slots; the others are NaN. None
        computes all of them.

    Returns
    -------
    stats : torch.Tensor
        float32 ``(batch, n_layers, n_stats, hidden)`` with ``n_stats`` 5, or
        7 when ``attentions`` is given (slot order in the module docstring).
    counts : torch.Tensor
        int64 ``(batch, 2)``: real tokens, and real non-special tokens.
    """
    import torch

    real = attention_mask.bool()
    content = real & ~special_tokens_mask.bool()
    n_real = real.sum(dim=1)
    n_content = content.sum(dim=1)
    # Texts without content tokens fall back to all real tokens.
    content = torch.where((n_content == 0).unsqueeze(1), real, content)
    n_stats = N_ALL_STATS if attentions is not None else N_BASE_STATS
    wanted = set(range(n_stats)) if slots is None else {int(s) for s in slots}
    per_layer = []
    for i, hidden in enumerate(hidden_states):
        hidden = hidden.float()
        compute = [
            lambda: hidden[:, 0],
            lambda: _masked_mean(hidden, real),
            lambda: _masked_mean(hidden, content),
            lambda: _masked_max(hidden, real),
            lambda: _masked_max(hidden, content),
        ]
        if attentions is not None:
            received = _received_attention(attentions[i], real)
            compute.append(lambda: _weighted_sum(hidden, received, real))
            compute.append(lambda: _weighted_sum(hidden, received, content))
        skipped = None
        values = []
        for slot, fn in enumerate(compute):
            if slot in wanted:
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
    pooling : {"cls", "mean", "max", "attention", "mean_max"}
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
    if pooling == "cls":
        return hidden[:, 0]
    real = attention_mask.bool()
    mask = real
    if exclude_special_tokens:
        content = real & ~special_tokens_mask.bool()
        empty = (content.sum(dim=1) == 0).unsqueeze(1)
        mask = torch.where(empty, real, content)
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
    raise ValueError(f"Unknown pooling {pooling!r}.")
