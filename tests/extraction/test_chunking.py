"""Token-exact chunk planning and chunk aggregation (pure functions)."""

import numpy as np
import pytest

from skbert._extraction.chunking import aggregate_chunks, plan_chunks


def _covers(windows, n):
    seen = np.zeros(n, bool)
    for start, end in windows:
        assert 0 <= start < end <= n
        seen[start:end] = True
    return seen.all()


def test_short_sequence_is_one_window():
    assert plan_chunks([True] * 5, 10, 2) == [(0, 5)]
    assert plan_chunks([True] * 10, 10, 2) == [(0, 10)]


def test_windows_and_overlap_on_whole_words():
    windows = plan_chunks([True] * 25, 10, 3)
    assert windows == [(0, 10), (7, 17), (14, 24), (21, 25)]
    assert _covers(windows, 25)
    assert plan_chunks([True] * 20, 10, 0) == [(0, 10), (10, 20)]


def test_windows_do_not_split_word_pieces():
    # words of 3 pieces: starts at 0, 3, 6, 9, ...
    starts = [i % 3 == 0 for i in range(30)]
    windows = plan_chunks(starts, 10, 0)
    for start, end in windows:
        assert starts[start]
        assert end == 30 or starts[end]
        assert end - start <= 10
    assert _covers(windows, 30)
    assert windows[0] == (0, 9)


def test_overlapping_windows_start_on_word_boundaries():
    starts = [i % 2 == 0 for i in range(40)]
    windows = plan_chunks(starts, 8, 3)
    for start, end in windows:
        assert starts[start]
        assert end - start <= 8
    assert _covers(windows, 40)
    for (s0, e0), (s1, _) in zip(windows, windows[1:]):
        assert s1 < e0  # they overlap
        assert s1 > s0  # and progress


def test_a_word_longer_than_the_window_is_split():
    starts = [True] + [False] * 29
    windows = plan_chunks(starts, 10, 0)
    assert windows == [(0, 10), (10, 20), (20, 30)]


def test_bad_sizes():
    with pytest.raises(ValueError, match="overlap"):
        plan_chunks([True] * 20, 10, 10)
    with pytest.raises(ValueError, match="content_size"):
        plan_chunks([True] * 20, 0, 0)


def test_aggregations_match_hand_computation():
    rng = np.random.RandomState(0)
    stats = rng.normal(size=(3, 2, 5, 4)).astype(np.float32)
    counts = np.array([[12, 10], [12, 10], [7, 5]])
    mean, total = aggregate_chunks(stats, counts, "mean")
    np.testing.assert_allclose(mean, (stats[0] + stats[1] + stats[2]) / 3, atol=1e-6)
    np.testing.assert_array_equal(total, [31, 25])
    tm, _ = aggregate_chunks(stats, counts, "token_mean")
    np.testing.assert_allclose(tm, (10 * stats[0] + 10 * stats[1] + 5 * stats[2]) / 25, atol=1e-6)
    mx, _ = aggregate_chunks(stats, counts, "max")
    np.testing.assert_array_equal(mx, np.maximum(np.maximum(stats[0], stats[1]), stats[2]))
    first, c = aggregate_chunks(stats, counts, "first")
    np.testing.assert_array_equal(first, stats[0])
    np.testing.assert_array_equal(c, [12, 10])
    with pytest.raises(ValueError, match="chunk_agg"):
        aggregate_chunks(stats, counts, "median")
