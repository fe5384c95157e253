"""Model resolution, default model, safety of loading."""

import os
import subprocess
import sys

import numpy as np
import pytest

from skbert import BertVectorizer, _backend
from skbert._backend import DEFAULT_MODEL, ModelSpec, resolve_model


def test_default_resolves_to_bundled_verified_folder(minilm_path):
    assert os.path.isfile(os.path.join(minilm_path, "model.safetensors"))
    assert minilm_path.endswith("model")
    # The pinned revision resolves to the same bundled folder; another does not.
    assert resolve_model(ModelSpec(DEFAULT_MODEL, revision=_backend.DEFAULT_REVISION)) == minilm_path
    assert resolve_model(ModelSpec(DEFAULT_MODEL, revision="main")) == DEFAULT_MODEL


def test_tampered_default_weights_are_refused(minilm_path, monkeypatch):
    monkeypatch.setattr(_backend, "DEFAULT_SHA256", "0" * 64)
    monkeypatch.setattr(_backend, "_VERIFIED", {})
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


def test_unknown_hub_id_offline_fails_clearly():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    code = (
        "from skbert import BertVectorizer\n"
        "try:\n"
        "    BertVectorizer('skbert-tests/no-such-model').fit(['x'])\n"
        "except OSError as e:\n"
        "    print('OSError', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "OSError" in out.stdout, out.stderr


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
    assert not any(key[0] == path for key in _backend._MODELS)
    vec.transform(texts[:1])
    assert any(key[0] == path for key in _backend._MODELS)


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
    assert sum(key[0] == str(path) for key in _backend._MODELS) == 1
