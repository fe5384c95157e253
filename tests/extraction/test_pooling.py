"""skbert._extraction.pooling against plain numpy, token by token.

Each statistic is recomputed here from its definition (a loop over texts and
the rows of the tokens it pools) on random hidden states whose padding rows
hold huge values, so that a padding row that enters any statistic shows.
"""

import numpy as np
import pytest

from skbert._extraction.pooling import (
    N_ALL_STATS,
    STAT_GROUPS,
    STAT_SLOTS,
    n_stats_for,
    pool_tokens,
    pooled_statistics,
)

torch = pytest.importorskip("torch")

HIDDEN = 6
#: Real tokens per text, and the positions of their special tokens.
LENGTHS = [5, 3, 2, 7]


def _batch(left=False, seed=0, n_layers=2):
    rng = np.random.default_rng(seed)
    t = max(LENGTHS)
    attention = np.zeros((len(LENGTHS), t), dtype=np.int64)
    special = np.ones((len(LENGTHS), t), dtype=np.int64)  # padding counts as special too
    for b, n in enumerate(LENGTHS):
        cols = np.arange(t - n, t) if left else np.arange(n)
        attention[b, cols] = 1
        special[b, cols] = 0
        special[b, cols[0]] = special[b, cols[-1]] = 1  # [CLS] ... [SEP]
    hidden = [rng.normal(size=(len(LENGTHS), t, HIDDEN)).astype(np.float32) for _ in range(n_layers)]
    for h in hidden:
        h[attention == 0] = 1e6  # padding must never win or count
    heads = 2
    attn = rng.random((len(LENGTHS), heads, t, t)).astype(np.float32)
    attn /= attn.sum(-1, keepdims=True)
    return hidden, attention, special, [attn] * n_layers


def _rows(attention, special, b, content):
    real = np.flatnonzero(attention[b])
    if not content:
        return real
    rows = real[special[b, real] == 0]
    return rows if len(rows) else real


def _reference(hidden, attention, special, attn, b, name):
    """The statistic ``name`` of text ``b`` of one layer, from its definition."""
    content = name.endswith("_content")
    base = name[: -len("_content")] if content else name
    rows = _rows(attention, special, b, content)
    x = hidden[b, rows].astype(np.float64)
    real = np.flatnonzero(attention[b])
    if base == "cls":
        return hidden[b, real[0]]
    if base == "mean":
        return x.mean(0)
    if base == "max":
        return x.max(0)
    if base == "last_token":
        return hidden[b, rows[-1]]
    if base == "weighted_mean":
        position = {r: k + 1 for k, r in enumerate(real)}
        w = np.array([position[r] for r in rows], dtype=np.float64)
        return (w[:, None] * x).sum(0) / w.sum()
    if base == "mean_sqrt_len":
        return x.sum(0) / np.sqrt(len(rows))
    if base == "attention":
        received = attn[b].mean(0)[real][:, :].mean(0)  # over heads, then real queries
        w = received[rows]
        return (w[:, None] * x).sum(0) / w.sum()
    raise AssertionError(name)


def _stats(hidden, attention, special, attn=None, **kw):
    stats, counts = pooled_statistics(
        [torch.from_numpy(h) for h in hidden],
        torch.from_numpy(attention),
        torch.from_numpy(special),
        None if attn is None else [torch.from_numpy(a) for a in attn],
        **kw,
    )
    return stats.numpy(), counts.numpy()


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_every_statistic_equals_its_definition(left):
    hidden, attention, special, attn = _batch(left=left)
    stats, counts = _stats(hidden, attention, special, attn, positional=True)
    assert stats.shape == (len(LENGTHS), len(hidden), N_ALL_STATS, HIDDEN)
    assert stats.dtype == np.float32
    for layer, h in enumerate(hidden):
        for name, slot in STAT_SLOTS.items():
            for b in range(len(LENGTHS)):
                want = _reference(h, attention, special, attn[layer], b, name)
                np.testing.assert_allclose(
                    stats[b, layer, slot], want, rtol=1e-5, atol=1e-5, err_msg=f"{name}, text {b}"
                )
    np.testing.assert_array_equal(counts[:, 0], LENGTHS)
    np.testing.assert_array_equal(counts[:, 1], [n - 2 for n in LENGTHS])


def test_padding_side_does_not_change_any_statistic():
    hidden, attention, special, _ = _batch(left=False)
    t = attention.shape[1]
    # The same token vectors, moved to the right end of each row.
    shifted = [np.full_like(h, -1e6) for h in hidden]
    for b, n in enumerate(LENGTHS):
        for h, s in zip(hidden, shifted):
            s[b, t - n:] = h[b, :n]
    _, left_attention, left_special, _ = _batch(left=True)
    right = _stats(hidden, attention, special, positional=True)[0]
    left = _stats(shifted, left_attention, left_special, positional=True)[0]
    np.testing.assert_allclose(left, right, rtol=1e-6, atol=1e-6)


def test_a_text_without_content_tokens_pools_all_its_real_tokens():
    hidden, attention, special, attn = _batch()
    b = LENGTHS.index(2)  # [CLS] [SEP] only: the empty string
    stats, counts = _stats(hidden, attention, special, attn, positional=True)
    assert counts[b, 1] == 0
    for name in ("mean", "max", "attention", "last_token", "weighted_mean", "mean_sqrt_len"):
        np.testing.assert_array_equal(
            stats[b, :, STAT_SLOTS[name + "_content"]], stats[b, :, STAT_SLOTS[name]]
        )
    assert np.isfinite(stats).all()


def test_requested_groups_and_slots_only():
    hidden, attention, special, attn = _batch()
    base, _ = _stats(hidden, attention, special)
    assert base.shape[2] == n_stats_for() == STAT_GROUPS["base"][1]
    with_attn, _ = _stats(hidden, attention, special, attn)
    assert with_attn.shape[2] == n_stats_for(attention=True) == STAT_GROUPS["attn"][1]
    np.testing.assert_array_equal(with_attn[:, :, :5], base)
    some, _ = _stats(hidden, attention, special, slots=[STAT_SLOTS["max"]])
    np.testing.assert_array_equal(some[:, :, 3], base[:, :, 3])
    assert np.isnan(some[:, :, [0, 1, 2, 4]]).all()


def test_pool_skip_leaves_the_first_real_tokens_out():
    hidden, attention, special, _ = _batch()
    skip = 2
    stats, _ = _stats(hidden, attention, special, positional=True, pool_skip=skip)
    for b, n in enumerate(LENGTHS):
        real = np.flatnonzero(attention[b])
        kept = real[skip:] if n > skip else real
        np.testing.assert_allclose(stats[b, 0, STAT_SLOTS["mean"]], hidden[0][b, kept].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats[b, 0, STAT_SLOTS["cls"]], hidden[0][b, kept[0]], rtol=0, atol=0)
        # Position weights stay those of the whole text.
        w = np.arange(1, len(real) + 1, dtype=np.float64)[len(real) - len(kept):]
        want = (w[:, None] * hidden[0][b, kept]).sum(0) / w.sum()
        np.testing.assert_allclose(stats[b, 0, STAT_SLOTS["weighted_mean"]], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "attention", "mean_max", "last_token",
                                     "weighted_mean", "mean_sqrt_len"])
@pytest.mark.parametrize("exclude", [False, True])
def test_pool_tokens_equals_the_statistics_and_keeps_gradients(pooling, exclude):
    hidden, attention, special, attn = _batch(left=True)
    stats, _ = _stats(hidden[:1], attention, special, attn[:1], positional=True)
    h = torch.from_numpy(hidden[0]).requires_grad_()
    out = pool_tokens(
        h, torch.from_numpy(attention), torch.from_numpy(special), pooling, exclude,
        attention=torch.from_numpy(attn[0]),
    )
    suffix = "_content" if exclude and pooling != "cls" else ""
    names = ["mean", "max"] if pooling == "mean_max" else [pooling]
    want = np.concatenate([stats[:, 0, STAT_SLOTS[n + suffix]] for n in names], axis=1)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert h.grad is not None and h.grad[torch.from_numpy(attention == 0)].abs().sum() == 0


def test_pool_tokens_refuses_what_it_cannot_compute():
    hidden, attention, special, _ = _batch()
    args = (torch.from_numpy(hidden[0]), torch.from_numpy(attention), torch.from_numpy(special))
    with pytest.raises(ValueError, match="needs the layer's attention map"):
        pool_tokens(*args, "attention", False)
    with pytest.raises(ValueError, match="Unknown pooling 'avg'"):
        pool_tokens(*args, "avg", False)
