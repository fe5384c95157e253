"""probe_layers, plot_probe, BertLayerSelector and the diagnostics, on the tiny model."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from skbert import BertLayerSelector, BertVectorizer, probe_layers, probing
from skbert._model.backend import forward_counts
from skbert._testing import TINY_WORDS, make_tiny_model

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

SIGNAL = "excellent"


def _signal_data(n=80, seed=0):
    """Short random texts; label 1 iff the text contains SIGNAL (balanced)."""
    rng = np.random.default_rng(seed)
    other = [w for w in TINY_WORDS if w != SIGNAL]
    texts, y = [], []
    for i in range(n):
        words = list(rng.choice(other, size=rng.integers(3, 6)))
        if i % 2:
            words.insert(rng.integers(len(words) + 1), SIGNAL)
        texts.append(" ".join(words))
        y.append(i % 2)
    return texts, np.asarray(y)


@pytest.fixture(scope="module")
def signal_data():
    return _signal_data()


@pytest.fixture(scope="module")
def layer0_only_model(tmp_path_factory):
    """A tiny BERT whose transformer layers output zeros: only layer 0 carries signal."""
    from safetensors.numpy import load_file, save_file

    path = make_tiny_model(tmp_path_factory.mktemp("layer0-only"), "bert")
    weights = load_file(str(path / "model.safetensors"))
    for name in ("encoder.layer.0.output.LayerNorm.weight", "encoder.layer.0.output.LayerNorm.bias"):
        weights[name] = np.zeros_like(weights[name])
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return str(path)


# ------------------------------------------------------------------ table
def test_table_shape_columns_and_order(tiny_model, signal_data):
    texts, y = signal_data
    table = probe_layers(
        texts, y, model_name=tiny_model, poolings=("cls", "mean"), whitening=(None, "whiten"),
        param_grid={"C": [0.1, 1.0]}, cv=3,
    )  # fmt: skip
    assert list(table.columns) == ["layer", "pooling", "whitening", "C", "mean_score", "std_score", "fit_time"]
    assert len(table) == 3 * 2 * 2 * 2  # layers x poolings x whitenings x C
    assert table["layer"].tolist()[:3] == [0, 1, 2]
    assert table["pooling"].tolist()[:12] == ["cls"] * 12
    assert table["whitening"].tolist()[:6] == ["none"] * 6
    assert table["C"].tolist()[:6] == [0.1] * 3 + [1.0] * 3
    assert set(table["whitening"]) == {"none", "whiten"}
    assert ((table["mean_score"] >= 0) & (table["mean_score"] <= 1)).all()
    assert (table["std_score"] >= 0).all() and (table["fit_time"] > 0).all()
    assert table.attrs["scoring"] == "accuracy"
    assert table.attrs["n_splits"] == 3
    assert table.attrs["n_samples"] == len(texts)
    assert table.attrs["chance"] == 0.5


def test_separable_labels_score_high_shuffled_near_chance(tiny_model, signal_data):
    texts, y = signal_data
    table = probe_layers(texts, y, model_name=tiny_model, poolings=("mean", "max"), cv=4)
    assert table["mean_score"].min() >= 0.85, table
    shuffled = np.random.default_rng(1).permutation(y)
    null = probe_layers(texts, shuffled, model_name=tiny_model, poolings=("mean", "max"), cv=4)
    assert null["mean_score"].max() <= 0.7, null
    assert abs(null["mean_score"].mean() - 0.5) <= 0.12, null


def test_scores_equal_the_bertvectorizer_pipeline(tiny_model, signal_data):
    """Each row is the CV score of Pipeline([BertVectorizer(...), estimator])."""
    texts, y = signal_data
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    table = probe_layers(
        texts, y, model_name=tiny_model, layers=[1, 2], poolings=("cls", "mean"),
        whitening=(None, "whiten"), cv=cv, vectorizer_params={"n_components": 8},
    )  # fmt: skip
    for layer, pooling, whitening in [(1, "mean", "whiten"), (2, "cls", None)]:
        pipe = make_pipeline(
            BertVectorizer(tiny_model, layers=layer, pooling=pooling, whitening=whitening, n_components=8),
            LogisticRegression(max_iter=1000),
        )
        want = cross_val_score(pipe, texts, y, cv=cv)
        row = table[(table.layer == layer) & (table.pooling == pooling)
                    & (table.whitening == (whitening or "none"))]  # fmt: skip
        assert len(row) == 1
        assert row["mean_score"].iloc[0] == pytest.approx(want.mean(), abs=1e-9)
        assert row["std_score"].iloc[0] == pytest.approx(want.std(), abs=1e-9)


def test_one_forward_pass_per_text_then_zero_when_warm(tiny_model, signal_data, tmp_path):
    texts, y = signal_data
    texts = texts + texts[:10]  # duplicates are encoded once
    y = np.concatenate([y, y[:10]])
    n_unique = len(set(texts))
    poolings = ("cls", "mean", "max", "attention", "mean_max")

    before = forward_counts()["texts"]
    table = probe_layers(texts, y, model_name=tiny_model, poolings=poolings, cv=3)
    assert forward_counts()["texts"] - before == n_unique  # no memory: a scratch cache
    assert table.attrs["forward_texts"] == n_unique

    memory = tmp_path / "cache"
    cold = probe_layers(texts, y, model_name=tiny_model, poolings=poolings, cv=3, memory=memory)
    assert cold.attrs["forward_texts"] == n_unique
    before = forward_counts()["texts"]
    warm = probe_layers(texts, y, model_name=tiny_model, poolings=poolings, cv=3, memory=memory)
    assert forward_counts()["texts"] == before
    assert warm.attrs["forward_texts"] == 0
    np.testing.assert_array_equal(warm["mean_score"], cold["mean_score"])
    np.testing.assert_array_equal(warm["mean_score"], table["mean_score"])


def test_structured_array_without_pandas(tiny_model, signal_data, monkeypatch):
    texts, y = signal_data
    monkeypatch.setattr(probing, "_pandas", lambda: None)
    table = probe_layers(texts, y, model_name=tiny_model, poolings="mean", param_grid={"C": [1.0]}, cv=3)
    assert isinstance(table, np.ndarray)
    assert table.dtype.names == ("layer", "pooling", "whitening", "C", "mean_score", "std_score", "fit_time")
    assert table["layer"].tolist() == [0, 1, 2]
    assert table["pooling"].tolist() == ["mean"] * 3
    best = probing.best_configuration(table)
    assert best["mean_score"] == table["mean_score"].max()
    ax = probing.plot_probe(table)
    assert len(ax.containers) == 1
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize(
    "kwargs, y, match",
    [
        ({}, [1] * 12, "single class"),
        ({}, [0, 1] * 5, "inconsistent numbers"),
        ({"poolings": ("avg",)}, None, "Unknown pooling 'avg'"),
        ({"whitening": ("zca",)}, None, "Unknown whitening 'zca'"),
        ({"vectorizer_params": {"layers": 1}}, None, "vectorizer_params cannot hold"),
        ({"scoring": ["accuracy", "f1"]}, None, "one metric"),
    ],
)
def test_input_errors(tiny_model, kwargs, y, match):
    texts = ["a good movie", "a bad movie"] * 6
    y = [0, 1] * 6 if y is None else y
    with pytest.raises(ValueError, match=match):
        probe_layers(texts, y, model_name=tiny_model, cv=2, **kwargs)
    with pytest.raises(ValueError, match="string object received"):
        probe_layers("one text", [0], model_name=tiny_model)


def test_plot_probe_lines_errorbars_and_chance(tiny_model, signal_data):
    texts, y = signal_data
    table = probe_layers(
        texts, y, model_name=tiny_model, poolings=("cls", "mean", "max"), whitening=(None, "center"),
        param_grid={"C": [0.1, 1.0]}, cv=3,
    )  # fmt: skip
    ax = probing.plot_probe(table, title="tiny")
    assert len(ax.containers) == 6  # one errorbar line per (pooling, whitening)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "majority class" in labels and "mean, center" in labels
    # Each point is the best over C, with its own std as error bar.
    line = ax.containers[2]  # drawn in order: (cls, none), (cls, center), (mean, none), ...
    assert line.get_label() == "mean, none"
    sub = table[(table.pooling == "mean") & (table.whitening == "none")]
    best = sub.loc[sub.groupby("layer")["mean_score"].idxmax()]
    np.testing.assert_allclose(np.asarray(line.lines[0].get_ydata(), dtype=float), best["mean_score"].to_numpy(dtype=float))
    assert ax.get_title() == "tiny"
    matplotlib.pyplot.close("all")


def test_best_configuration_and_pipeline(tiny_model, signal_data, tmp_path):
    texts, y = signal_data
    table = probe_layers(texts, y, model_name=tiny_model, poolings=("cls", "mean"),
                         whitening=(None,), param_grid={"C": [0.5, 2.0]}, cv=3)  # fmt: skip
    best = probing.best_configuration(table)
    assert best["mean_score"] == table["mean_score"].max()
    assert best["whitening"] is None and best["C"] in (0.5, 2.0)
    pipe = probing.make_probe_pipeline(best, model_name=tiny_model)
    assert pipe.named_steps["bert"].layers == best["layer"]
    assert pipe.named_steps["bert"].pooling == best["pooling"]
    assert pipe.named_steps["clf"].C == best["C"]
    assert pipe.fit(texts, y).score(texts, y) >= 0.85


# ---------------------------------------------------------- layer selector
def test_selector_picks_the_layer_with_the_signal(layer0_only_model, signal_data):
    texts, y = signal_data
    sel = BertLayerSelector(layer0_only_model, cv=4).fit(texts, y)
    assert sel.best_layer_ == 0
    assert sorted(sel.scores_) == [0, 1, 2]
    assert sel.scores_[0] >= 0.85
    assert sel.scores_[1] <= 0.6 and sel.scores_[2] <= 0.6
    assert sel.best_score_ == sel.scores_[0]
    want = BertVectorizer(layer0_only_model, layers=0).fit_transform(texts)
    np.testing.assert_allclose(sel.transform(texts), want, atol=1e-6)
    assert list(sel.get_feature_names_out()[:2]) == ["bertvectorizer0", "bertvectorizer1"]


def test_selector_fit_transform_runs_the_model_once(tiny_model, signal_data):
    texts, y = signal_data
    sel = BertLayerSelector(tiny_model, whitening="center", cv=3)
    before = forward_counts()["texts"]
    Xt = sel.fit_transform(texts, y)
    assert forward_counts()["texts"] - before == len(set(texts))
    assert sel.vectorizer_.memory is None
    np.testing.assert_allclose(Xt, sel.transform(texts), atol=1e-6)
    np.testing.assert_allclose(Xt, clone(sel).fit(texts, y).transform(texts), atol=1e-6)


def test_selector_never_sees_the_test_fold(tiny_model, signal_data, monkeypatch):
    texts, y = signal_data
    seen = []
    real = probing.probe_layers

    def spy(X, y, **kwargs):
        seen.append(set(X))
        return real(X, y, **kwargs)

    monkeypatch.setattr(probing, "probe_layers", spy)
    outer = KFold(4, shuffle=True, random_state=0)
    pipe = make_pipeline(BertLayerSelector(tiny_model, cv=3), LogisticRegression(max_iter=1000))
    scores = cross_val_score(pipe, texts, y, cv=outer)
    assert scores.mean() >= 0.8
    assert len(seen) == 4
    for seen_texts, (train, test) in zip(seen, outer.split(texts), strict=True):
        assert seen_texts == {texts[i] for i in train}
        assert not seen_texts & ({texts[i] for i in test} - {texts[i] for i in train})


def test_selector_clone_pickle_and_validation(tiny_model, signal_data, tmp_path):
    texts, y = signal_data
    sel = BertLayerSelector(tiny_model, layers=[1, 2], whitening="center", cv=3, memory=tmp_path / "c")
    twin = clone(sel)
    assert twin.get_params() == sel.get_params()
    sel.fit(texts, y)
    assert set(sel.scores_) == {1, 2}
    assert sel.vectorizer_.memory == tmp_path / "c"
    restored = pickle.loads(pickle.dumps(sel))
    np.testing.assert_array_equal(restored.transform(texts[:5]), sel.transform(texts[:5]))
    with pytest.raises(ValueError, match="'pooling' parameter of BertLayerSelector"):
        BertLayerSelector(tiny_model, pooling="avg").fit(texts, y)
    with pytest.raises(ValueError, match="single class"):
        BertLayerSelector(tiny_model).fit(texts, np.zeros(len(texts)))
    # Without memory, whitening uses a scratch cache during fit only.
    sel = BertLayerSelector(tiny_model, whitening="whiten", cv=3).fit(texts, y)
    assert sel.vectorizer_.memory is None
    assert sel.transform(texts).shape == (len(texts), 32)


# ------------------------------------------------------------ diagnostics
def test_layer_features_match_the_vectorizer(tiny_model, texts):
    H = probing.layer_features(texts, model_name=tiny_model, pooling="max")
    assert H.shape == (len(texts), 3, 32)
    for layer in range(3):
        np.testing.assert_allclose(
            H[:, layer], BertVectorizer(tiny_model, layers=layer, pooling="max").fit_transform(texts), atol=1e-6
        )
    assert probing.layer_features(texts, model_name=tiny_model, layers=[2, 0]).shape == (len(texts), 2, 32)


def test_prompts_and_backend_pass_through_vectorizer_params(tiny_model, texts, signal_data):
    # A prompt changes what the model reads: the probe must embed it too.
    H = probing.layer_features(texts, model_name=tiny_model, layers=[2], prompt="query: ")
    want = BertVectorizer(tiny_model, layers=2, prompt="query: ").fit_transform(texts)
    np.testing.assert_allclose(H[:, 0], want, atol=1e-6)
    plain = BertVectorizer(tiny_model, layers=2).fit_transform(texts)
    assert np.abs(want - plain).max() > 1e-3
    # A probe table's row is the CV score of the pipeline that it describes,
    # prompt included.
    X, y = signal_data
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    params = {"prompt": "query: ", "backend": "torch"}
    table = probe_layers(X, y, model_name=tiny_model, layers=[1], poolings=("mean",), cv=cv,
                         vectorizer_params=params)
    pipe = probing.make_probe_pipeline(
        {"layer": 1, "pooling": "mean", "whitening": "none"}, model_name=tiny_model,
        estimator=LogisticRegression(max_iter=1000), vectorizer_params=params,
    )
    assert pipe.named_steps["bert"].get_params()["prompt"] == "query: "
    want = cross_val_score(pipe, X, y, cv=cv)
    assert table["mean_score"].iloc[0] == pytest.approx(want.mean(), abs=1e-9)


def test_anisotropy_cone_and_isotropic():
    rng = np.random.default_rng(0)
    iso = rng.normal(size=(400, 16))
    cone = iso + 6.0
    res = probing.anisotropy(cone, n_pairs=3000)
    assert res["raw"] > 0.9
    assert abs(res["centered"]) < 0.05 and abs(res["whitened"]) < 0.05
    assert abs(probing.anisotropy(iso)["raw"]) < 0.05
    per_layer = probing.anisotropy(np.stack([iso, cone], axis=1), n_pairs=3000)
    assert per_layer["raw"].shape == (2,)
    assert per_layer["raw"][1] > 0.9 > abs(per_layer["raw"][0])
    # Same pairs with the same seed: reproducible.
    assert probing.anisotropy(cone, random_state=3) == probing.anisotropy(cone, random_state=3)


def test_layer_similarity_and_change(tiny_model, texts):
    H = probing.layer_features(texts, model_name=tiny_model)
    S = probing.layer_similarity(H)
    assert S.shape == (3, 3)
    np.testing.assert_allclose(S, S.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(S), 1.0, atol=1e-6)
    cos01 = np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(H[:, 0], H[:, 1])])
    assert S[0, 1] == pytest.approx(cos01, abs=1e-6)
    change = probing.layer_change(H)
    want = np.linalg.norm(H[:, 1:] - H[:, :-1], axis=2).mean(axis=0)
    np.testing.assert_allclose(change, want, rtol=1e-6)
    rel = probing.layer_change(H, relative=True)
    np.testing.assert_allclose(rel, (np.linalg.norm(H[:, 1:] - H[:, :-1], axis=2) / np.linalg.norm(H[:, :-1], axis=2)).mean(axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="3 dimensions"):
        probing.layer_similarity(H[:, 0])


def test_pca_scatter_and_vector_histogram():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 10)) * np.arange(10, 0, -1)
    res = probing.pca_scatter(X, np.repeat([0, 1, 2], 20))
    assert res["embedding"].shape == (60, 2)
    assert res["explained_variance_ratio"][0] >= res["explained_variance_ratio"][1]
    x = np.concatenate([rng.normal(size=99), [25.0]])
    h = probing.vector_histogram(x, bins=20)
    assert h["argmax_abs"] == 99 and h["max"] == 25.0
    assert h["counts"].sum() == 100 and h["edges"].shape == (21,)
    assert h["kurtosis"] > 10  # one rogue dimension


def test_diagnostics_draw(tiny_model, texts):
    plt = matplotlib.pyplot
    H = probing.layer_features(texts, model_name=tiny_model)
    fig, axes = plt.subplots(2, 3)
    probing.anisotropy(H[:, -1], ax=axes[0, 0])
    probing.anisotropy(H, ax=axes[0, 1])
    probing.layer_similarity(H, ax=axes[0, 2])
    probing.layer_change(H, ax=axes[1, 0])
    probing.pca_scatter(H[:, -1], ["a", "b"] * 4, ax=axes[1, 1])
    probing.vector_histogram(H[0, -1], ax=axes[1, 2])
    assert len(axes[0, 0].patches) > 0  # histograms
    assert len(axes[0, 1].lines) == 3  # raw, centered, whitened by layer
    assert len(axes[0, 2].images) == 1  # heatmap
    assert len(axes[1, 0].patches) == 2  # bars 0->1, 1->2
    assert len(axes[1, 1].collections) == 2  # one scatter per label
    plt.close("all")
    res = probing.layer_change(H, plot=True)  # plot=True makes its own figure
    assert plt.get_fignums() and res.shape == (2,)
    plt.close("all")
