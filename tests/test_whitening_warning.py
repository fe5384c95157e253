"""Whitening: the warning for fewer samples than kept dimensions (issue 12, item 11),
and the in-process memo of repeated fits (item 12)."""

import warnings

import numpy as np
import pytest

import skbert
from skbert import BertVectorizer, WhiteningWarning, _whitening
from skbert._whitening import Whitener


@pytest.fixture(autouse=True)
def fresh_memo():
    _whitening.clear_fit_memo()
    yield
    _whitening.clear_fit_memo()


def _data(n, dim, seed=0):
    return np.random.RandomState(seed).normal(size=(n, dim)).astype(np.float32)


def test_whiten_on_fewer_samples_than_dimensions_warns_and_suggests_n_components():
    X = _data(248, 384)
    with pytest.warns(WhiteningWarning) as record:
        Whitener("whiten").fit(X)
    (warning,) = record
    message = str(warning.message)
    assert "248 samples of 384 dimensions" in message
    assert "rank at most 247 < 384" in message
    assert "n_components=124" in message and "whitening='center'" in message
    # Keeping at least as many components as samples warns too.
    with pytest.warns(WhiteningWarning, match="keeps 300"):
        Whitener("whiten", n_components=300).fit(X)


@pytest.mark.parametrize(
    "method, n, dim, n_components",
    [
        ("whiten", 248, 384, 124),  # the suggestion
        ("whiten", 248, 384, 247),  # rank n - 1 at most: nothing beyond it is kept
        ("whiten", 500, 384, None),  # enough samples
        ("center", 20, 384, None),
        ("abtt", 20, 384, None),
    ],
)
def test_no_warning_when_the_kept_directions_can_be_estimated(method, n, dim, n_components):
    with warnings.catch_warnings():
        warnings.simplefilter("error", WhiteningWarning)
        Whitener(method, n_components).fit(_data(n, dim))


def test_tiny_samples_get_advice_without_an_impossible_n_components():
    with pytest.warns(WhiteningWarning) as record:
        Whitener("whiten").fit(_data(2, 8))
    assert "n_components" not in str(record[0].message)
    assert "whitening='center'" in str(record[0].message)


def test_vectorizer_warns_and_the_class_is_public(tiny_model, texts):
    assert skbert.WhiteningWarning is WhiteningWarning and "WhiteningWarning" in skbert.__all__
    assert issubclass(WhiteningWarning, UserWarning)
    with pytest.warns(WhiteningWarning, match=r"8 samples of 32 dimensions.*n_components=4"):
        BertVectorizer(tiny_model, whitening="whiten").fit(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", WhiteningWarning)
        Z = BertVectorizer(tiny_model, whitening="whiten", n_components=4).fit_transform(texts)
    assert Z.shape == (len(texts), 4)


def test_rank_zero_layer_still_works_and_warns(tiny_model, texts):
    # Layer 0's [CLS] vector is identical for every text: rank 0.
    with pytest.warns(WhiteningWarning):
        vec = BertVectorizer(tiny_model, layers=0, pooling="cls", whitening="whiten")
        Z = vec.fit_transform(texts)
    assert np.all(np.isfinite(Z)) and np.all(Z == 0)


# ------------------------------------------------------------------ memo
@pytest.mark.parametrize("method, n_components", [("whiten", None), ("whiten", 8), ("abtt", 2)])
def test_memoised_fit_is_bitwise_identical_and_computed_once(monkeypatch, method, n_components):
    X = _data(200, 24)
    fresh = Whitener(method, n_components).fit(X)
    calls = []
    real_svd = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda *a, **k: calls.append(1) or real_svd(*a, **k))
    again = Whitener(method, n_components).fit(X.copy())
    assert calls == []  # served from the memo
    for name in ("mean_", "explained_variance_", "components_", "top_directions_", "n_features_out_"):
        if hasattr(fresh, name):
            np.testing.assert_array_equal(getattr(again, name), getattr(fresh, name))
    _whitening.clear_fit_memo()
    refit = Whitener(method, n_components).fit(X)
    assert calls == [1]
    Y = _data(10, 24, seed=1)
    np.testing.assert_array_equal(again.transform(Y), refit.transform(Y))
    np.testing.assert_array_equal(fresh.transform(Y), refit.transform(Y))


def test_memo_keys_on_data_method_and_components_and_returns_copies():
    X = _data(100, 16)
    a = Whitener("whiten").fit(X)
    b = Whitener("whiten", n_components=4).fit(X)
    assert b.components_.shape == (16, 4)
    X2 = X.copy()
    X2[0, 0] += 1e-3
    c = Whitener("whiten").fit(X2)
    assert not np.array_equal(a.mean_, c.mean_)
    d = Whitener("whiten").fit(X.astype(np.float64))  # another dtype: its own entry
    np.testing.assert_allclose(d.components_, a.components_)
    # A fitted whitener's arrays are its own.
    e = Whitener("whiten").fit(X)
    e.components_[:] = 0
    np.testing.assert_array_equal(Whitener("whiten").fit(X).components_, a.components_)


def test_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(_whitening, "FIT_MEMO_ENTRIES", 3)
    for seed in range(6):
        Whitener("whiten").fit(_data(50, 8, seed=seed))
    assert len(_whitening._MEMO) == 3
    (_, size), *_ = _whitening._MEMO.values()
    monkeypatch.setattr(_whitening, "FIT_MEMO_BYTES", size * 3 // 2)  # room for one fit
    Whitener("whiten").fit(_data(50, 8, seed=99))
    assert len(_whitening._MEMO) == 1
    monkeypatch.setattr(_whitening, "FIT_MEMO_BYTES", size - 1)  # too big to keep
    Whitener("whiten").fit(_data(50, 8, seed=100))
    assert len(_whitening._MEMO) == 1
    monkeypatch.setattr(_whitening, "FIT_MEMO_ENTRIES", 0)
    _whitening.clear_fit_memo()
    Whitener("whiten").fit(_data(50, 8))
    assert len(_whitening._MEMO) == 0
