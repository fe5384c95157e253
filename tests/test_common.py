"""Text versions of scikit-learn's data-driven estimator checks, and sklearn integration.

``sklearn.utils.estimator_checks`` skips most checks for string input, so the
ones that matter for a text transformer are written out here.
"""

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skbert import BertVectorizer

LABELS = [1, 0, 1, 0, 0, 0, 1, 1]


def _configs(path):
    """Cheap constructor arguments covering every fitted code path."""
    return [
        dict(model_name=path),
        dict(model_name=path, layers="all", pooling="mean_max", exclude_special_tokens=True),
        dict(model_name=path, layers=[1, 2], layer_agg="weighted", layer_weights=[0.0, 1.0]),
        dict(model_name=path, layers=[0, 2], layer_agg="mean", pooling="attention"),
        dict(model_name=path, whitening="whiten", n_components=4, normalize=True),
        dict(model_name=path, whitening="abtt", pooling="cls"),
        dict(model_name=path, layers="all", layer_agg="scalar_mix", random_state=0),
    ]


@pytest.fixture(params=range(7), ids=lambda i: f"config{i}")
def config(request, tiny_model):
    return _configs(tiny_model)[request.param]


def test_fit_idempotent(config, texts):
    vec = BertVectorizer(**config)
    a = vec.fit(texts, LABELS).transform(texts)
    b = vec.fit(texts, LABELS).transform(texts)
    np.testing.assert_array_equal(a, b)


def test_clone_equivalence(config, texts):
    vec = BertVectorizer(**config)
    a = vec.fit_transform(texts, LABELS)
    twin = clone(vec)
    assert not hasattr(twin, "layers_")
    assert twin.get_params() == vec.get_params()
    np.testing.assert_allclose(twin.fit_transform(texts, LABELS), a, atol=1e-6)


def test_fit_transform_equals_fit_then_transform(config, texts):
    a = BertVectorizer(**config).fit_transform(texts, LABELS)
    b = BertVectorizer(**config).fit(texts, LABELS).transform(texts)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_pickle_round_trip(config, texts):
    vec = BertVectorizer(**config).fit(texts, LABELS)
    blob = pickle.dumps(vec)
    assert len(blob) < 200_000  # no weights inside
    np.testing.assert_array_equal(pickle.loads(blob).transform(texts), vec.transform(texts))


def test_order_and_subset_invariance(config, texts):
    vec = BertVectorizer(**config).fit(texts, LABELS)
    full = vec.transform(texts)
    perm = np.random.RandomState(0).permutation(len(texts))
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vec.transform([texts[i] for i in perm]), full[perm], **tol)
    for i in range(len(texts)):
        np.testing.assert_allclose(vec.transform(texts[i : i + 1])[0], full[i], **tol)


def test_output_shape_matches_feature_names(config, texts):
    vec = BertVectorizer(**config)
    Z = vec.fit_transform(texts, LABELS)
    names = vec.get_feature_names_out()
    assert Z.shape == (len(texts), len(names))
    assert Z.dtype == np.float32
    assert names[0] == "bertvectorizer0"


def test_not_fitted_error(tiny_model):
    with pytest.raises(NotFittedError):
        BertVectorizer(tiny_model).transform(["x"])


def test_init_stores_only_and_loads_nothing(monkeypatch):
    from skbert._model import backend as _backend

    calls = []
    monkeypatch.setattr(_backend, "load_model", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(_backend, "load_config", lambda *a, **k: calls.append(a))
    vec = BertVectorizer("no/such-model", layers=[1, 2], pooling="max")
    clone(vec)
    pickle.loads(pickle.dumps(vec))
    assert calls == []
    assert vec.layers == [1, 2]


@pytest.mark.parametrize(
    "param, value, match",
    [
        ("pooling", "avg", r"The 'pooling' parameter of BertVectorizer must be a str among .*Got 'avg' instead"),
        ("layer_agg", "sum", r"The 'layer_agg' parameter of BertVectorizer must be"),
        ("whitening", "pca", r"The 'whitening' parameter of BertVectorizer must be"),
        ("batch_size", 0, r"The 'batch_size' parameter of BertVectorizer must be an int in the range \[1, inf\)"),
        ("max_length", 1, r"The 'max_length' parameter"),
        ("n_components", 0, r"The 'n_components' parameter"),
        ("dtype", "float64", r"The 'dtype' parameter"),
        ("layers", "last", r"The 'layers' parameter"),
        ("normalize", "yes", r"The 'normalize' parameter"),
    ],
)
def test_parameter_validation(tiny_model, param, value, match):
    with pytest.raises(ValueError, match=match):
        BertVectorizer(tiny_model, **{param: value}).fit(["x"])


def test_set_output_pandas(tiny_model, texts):
    pd = pytest.importorskip("pandas")
    vec = BertVectorizer(tiny_model).set_output(transform="pandas")
    out = vec.fit_transform(pd.Series(texts, index=range(100, 108)))
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == list(vec.get_feature_names_out())
    assert list(out.index) == list(range(100, 108))


def test_tags(tiny_model):
    tags = BertVectorizer(tiny_model).__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    assert BertVectorizer(layer_agg="scalar_mix").__sklearn_tags__().target_tags.required


def test_pipeline_and_column_transformer(tiny_model, texts):
    pd = pytest.importorskip("pandas")
    pipe = Pipeline([("bert", BertVectorizer(tiny_model)), ("clf", LogisticRegression())])
    pipe.fit(texts, LABELS)
    assert pipe.predict(texts).shape == (8,)
    df = pd.DataFrame({"text": texts, "n": np.arange(8.0)})
    ct = ColumnTransformer(
        [("bert", BertVectorizer(tiny_model, pooling="cls"), "text"), ("num", "passthrough", ["n"])]
    )
    Z = ct.fit_transform(df)
    assert Z.shape == (8, 33)
    np.testing.assert_allclose(Z[:, :32], BertVectorizer(tiny_model, pooling="cls").fit_transform(texts), atol=1e-6)
    names = ct.get_feature_names_out()
    assert names[0] == "bert__bertvectorizer0" and names[-1] == "num__n"
    ct2 = ColumnTransformer([("bert", BertVectorizer(tiny_model), ["text"])])
    assert ct2.fit_transform(df).shape == (8, 32)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search(tiny_model, texts, n_jobs):
    X = texts * 3
    y = LABELS * 3
    pipe = Pipeline([("bert", BertVectorizer(tiny_model)), ("clf", LogisticRegression(max_iter=200))])
    grid = GridSearchCV(
        pipe,
        {"bert__layers": [1, -1], "bert__pooling": ["mean", "cls"], "bert__whitening": [None, "center"]},
        cv=2,
        n_jobs=n_jobs,
        error_score="raise",
    )
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 8
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.predict(texts).shape == (8,)


def test_pickle_transforms_identically_in_fresh_process(tiny_model, texts, tmp_path):
    vec = BertVectorizer(tiny_model, layers=[1, 2], pooling="mean_max", whitening="whiten").fit(texts)
    with open(tmp_path / "vec.pkl", "wb") as f:
        pickle.dump(vec, f)
    # No model weights inside: only parameters and the whitening matrix.
    assert (tmp_path / "vec.pkl").stat().st_size < 20_000 + vec.whitener_.components_.nbytes
    np.save(tmp_path / "expected.npy", vec.transform(texts))
    script = textwrap.dedent(
        f"""
        import pickle, numpy as np
        texts = {texts!r}
        vec = pickle.load(open({str(tmp_path / 'vec.pkl')!r}, "rb"))
        np.testing.assert_array_equal(vec.transform(texts), np.load({str(tmp_path / 'expected.npy')!r}))
        print("identical")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "identical" in out.stdout


# ------------------------------------------------ skbert.utils.estimator_checks
from skbert import BertClassifier, BertLayerSelector  # noqa: E402
from skbert.utils.estimator_checks import (  # noqa: E402
    check_text_estimator,
    parametrize_with_text_checks,
)

# Collection happens before fixtures exist: the estimators name a placeholder
# model, and each test points a clone at the session's tiny model.
_TINY = "tiny-model-placeholder"


@parametrize_with_text_checks(
    [
        BertVectorizer(_TINY),
        BertVectorizer(_TINY, layers="all", pooling="mean_max", whitening="whiten", n_components=4, normalize=True),
        BertLayerSelector(_TINY, cv=2),
        BertClassifier(_TINY, epochs=1, min_steps=0, contrastive_steps=0, batch_size=8),
    ]
)
def test_text_estimator_checks(estimator, check, tiny_model):
    check(clone(estimator).set_params(model_name=tiny_model))


def test_check_text_estimator_reports_skips(tiny_model):
    with pytest.warns(UserWarning, match="is not a classifier"):
        results = check_text_estimator(BertVectorizer(tiny_model, pooling="cls"))
    assert results["check_text_fit_idempotent"] == "passed"
    assert results["check_text_classifier_outputs"] == "skipped: BertVectorizer is not a classifier."


class _StatsInDict(BertVectorizer):
    """The old behaviour: per-call statistics written into __dict__."""

    def transform(self, X):
        self.last_call_stats_ = {"n": len(X)}
        return super().transform(X)


class _Float64Tag(BertVectorizer):
    """The old tag: sklearn's default preserves_dtype=["float64"]."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


def test_estimator_checks_catch_a_broken_estimator(tiny_model):
    """The checks fail on the bugs they are meant to catch (issue #12, item 9)."""
    from skbert.utils.estimator_checks import (
        LABELS as CHECK_LABELS,
    )
    from skbert.utils.estimator_checks import (
        TEXTS,
        check_text_dict_unchanged,
        check_text_output_dtype,
    )

    with pytest.raises(AssertionError, match="changes __dict__"):
        check_text_dict_unchanged("_StatsInDict", _StatsInDict(tiny_model), TEXTS, CHECK_LABELS)
    with pytest.raises(AssertionError, match="preserves_dtype"):
        check_text_output_dtype("_Float64Tag", _Float64Tag(tiny_model), TEXTS, CHECK_LABELS)


def test_preserves_dtype_tag(tiny_model):
    for est in (BertVectorizer(tiny_model), BertLayerSelector(tiny_model)):
        assert est.__sklearn_tags__().transformer_tags.preserves_dtype == []


def test_transform_leaves_fitted_vectorizer_unchanged_with_cache(tiny_model, texts, tmp_path):
    """last_cache_stats_ is reported, but not kept in __dict__ (issue #12, item 9)."""
    import joblib

    vec = BertVectorizer(tiny_model, memory=tmp_path).fit(texts)
    assert not hasattr(vec, "last_cache_stats_")
    digest, before = joblib.hash(vec), dict(vec.__dict__)
    vec.transform(texts)
    assert vec.last_cache_stats_["misses"] == len(set(texts))
    vec.transform(texts)
    assert vec.last_cache_stats_["hits"] == len(set(texts))
    assert vec.__dict__ == before and joblib.hash(vec) == digest
    assert "last_cache_stats_" not in vars(pickle.loads(pickle.dumps(vec)))
    with pytest.raises(AttributeError):
        vec.last_cache_stats_ = {}


def test_scalar_mix_accepts_random_state_instance(tiny_model, texts):
    """random_state may be a RandomState instance; an int is reproducible (item 8)."""
    params = dict(model_name=tiny_model, layers="all", layer_agg="scalar_mix")
    a = BertVectorizer(**params, random_state=3).fit_transform(texts, LABELS)
    b = BertVectorizer(**params, random_state=3).fit_transform(texts, LABELS)
    np.testing.assert_array_equal(a, b)
    c = BertVectorizer(**params, random_state=np.random.RandomState(3)).fit_transform(texts, LABELS)
    # The instance seeds the same way as its int: draws are those of RandomState(3).
    np.testing.assert_array_equal(c, a)
    vec = BertVectorizer(**params, random_state=np.random.RandomState(0))
    vec.fit(texts, LABELS)
    assert vec.layer_weights_.shape == (3,)
