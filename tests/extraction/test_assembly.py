"""skbert._extraction.assembly: from statistics to features, against numpy."""

import numpy as np
import pytest

from skbert._extraction.assembly import (
    LAYER_AGGS,
    POOLINGS,
    POSITIONAL_POOLINGS,
    combine_layers,
    fit_scalar_mix,
    pool_layers,
    pooling_groups,
    pooling_slots,
    softmax,
)
from skbert._extraction.pooling import N_ALL_STATS, STAT_GROUPS, STAT_SLOTS

RNG = np.random.default_rng(0)
STATS = RNG.normal(size=(5, 3, N_ALL_STATS, 4)).astype(np.float32)  # (n, layers, slots, hidden)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("exclude", [False, True])
def test_pool_layers_reads_the_pooling_s_own_slots(pooling, exclude):
    out = pool_layers(STATS, pooling, exclude)
    suffix = "_content" if exclude and pooling != "cls" else ""
    names = ["mean", "max"] if pooling == "mean_max" else [pooling]
    want = np.concatenate([STATS[:, :, STAT_SLOTS[n + suffix]] for n in names], axis=2)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_groups_name_the_groups_its_slots_are_in(pooling):
    attention, positional = pooling_groups(pooling)
    for slot in pooling_slots(pooling, True) + pooling_slots(pooling, False):
        group = next(g for g, (lo, hi) in STAT_GROUPS.items() if lo <= slot < hi)
        assert group == ("attn" if attention else "pos" if positional else "base")
    assert positional == (pooling in POSITIONAL_POOLINGS)


def test_softmax_is_stable_and_normalised():
    w = softmax([1000.0, 1000.0, 0.0])
    np.testing.assert_allclose(w, [0.5, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(softmax([0.0, np.log(3.0)]), [0.25, 0.75])


def test_combine_layers_by_definition():
    pooled = RNG.normal(size=(4, 3, 2)).astype(np.float32)
    w = softmax([0.2, -1.0, 0.5])
    np.testing.assert_array_equal(combine_layers(pooled, "concat"), pooled.reshape(4, 6))
    np.testing.assert_allclose(combine_layers(pooled, "mean"), pooled.mean(axis=1), rtol=1e-6)
    weighted = sum(w[l] * pooled[:, l].astype(np.float64) for l in range(3))
    np.testing.assert_allclose(combine_layers(pooled, "weighted", weights=w), weighted, rtol=1e-6)
    np.testing.assert_allclose(
        combine_layers(pooled, "scalar_mix", weights=w, gamma=2.5), 2.5 * weighted, rtol=1e-6
    )
    for agg in LAYER_AGGS:  # one layer: its vector (scaled by gamma for the scalar mix)
        one = combine_layers(pooled[:, :1], agg, weights=np.ones(1), gamma=2.0)
        factor = 2.0 if agg == "scalar_mix" else 1.0
        np.testing.assert_allclose(one, factor * pooled[:, 0], rtol=1e-6)
        assert one.dtype == np.float32


def test_scalar_mix_weights_the_layer_that_predicts_the_labels():
    n, dim = 200, 8
    y = np.arange(n) % 2
    noise = RNG.normal(size=(n, 3, dim)).astype(np.float32)
    pooled = noise.copy()
    pooled[:, 1, 0] += 3.0 * (2 * y - 1)  # only layer 1 knows the label
    weights, gamma = fit_scalar_mix(pooled, y, random_state=0)
    assert weights.shape == (3,) and np.isclose(weights.sum(), 1.0)
    assert weights.argmax() == 1 and weights[1] > 0.5
    assert gamma > 0
    again = fit_scalar_mix(pooled, y, random_state=0)
    np.testing.assert_array_equal(again[0], weights)


def test_scalar_mix_refuses_targets_it_cannot_learn_from():
    with pytest.raises(ValueError, match="class labels or continuous targets"):
        fit_scalar_mix(STATS[:, :, 0], np.array([[0, 1], [1, 0], [1, 1], [0, 0], [1, 0]]))
