"""Reduced precision done once: linear weights converted at load, norms in float32.

The converted pass is checked against the autocast pass it replaces (same
operations in the same dtypes, so equal to bfloat16 rounding) and against
float32; it runs on the CPU with bfloat16, so CI checks it without a GPU.
Timings never appear here (see benchmarks/throughput.py).
"""

import contextlib

import numpy as np
import pytest

from skbert import BertVectorizer
from skbert._extraction import ExtractionSpec
from skbert._extraction.batches import iter_statistics
from skbert._model import backend as _backend
from skbert._model import encoder as _encoder
from skbert._model import runtime as _runtime
from skbert._model.backend import ModelSpec

torch = pytest.importorskip("torch")

TINY = ["tiny_model", "tiny_distilbert", "tiny_roberta"]


def _inputs(loaded, texts):
    names = _runtime.model_input_names(loaded.model)
    enc = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in names}


def _cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_only_the_layers_linear_weights_are_converted(tiny_model, dtype):
    reduced = _backend.load_model(ModelSpec(tiny_model), "cpu", dtype=dtype)
    full = _backend.load_model(ModelSpec(tiny_model), "cpu")
    assert reduced is not full and reduced.converted and not full.converted
    assert reduced.dtype == dtype and full.dtype == "float32"
    target = getattr(torch, dtype)
    layers = _runtime.find_layer_list(reduced.model)[2]
    in_layers = {id(p) for layer in layers for m in layer.modules()
                 if isinstance(m, torch.nn.Linear) for p in m.parameters()}
    assert in_layers
    for param in reduced.model.parameters():
        assert param.dtype == (target if id(param) in in_layers else torch.float32)
    # The float32 copy is untouched.
    assert all(p.dtype == torch.float32 for p in full.model.parameters())


@pytest.mark.parametrize("fixture", TINY)
def test_converted_pass_equals_the_autocast_pass(fixture, request, texts, monkeypatch):
    """Weights cast once give what autocast gave, without autocast."""
    path = request.getfixturevalue(fixture)
    full = _backend.load_model(ModelSpec(path), "cpu")
    reduced = _backend.load_model(ModelSpec(path), "cpu", dtype="bfloat16")
    long = " ".join(["the movie was good but the ending was bad"] * 9)
    batch = [*texts, long]  # padded past the short-attention limit too
    inputs = _inputs(full, batch)
    mask = inputs["attention_mask"].bool()
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = _encoder.lean_hidden_states(full.model, full.lean, inputs, [1, 2])

        @contextlib.contextmanager
        def refused(*args, **kwargs):
            raise AssertionError("the converted pass entered autocast")
            yield  # pragma: no cover

        monkeypatch.setattr(_runtime, "autocast", refused)
        monkeypatch.setattr(_backend, "autocast", refused)
        got, _ = reduced.hidden_states(inputs, [1, 2])
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g[mask], w[mask].float(), rtol=2e-2, atol=2e-2)
        assert torch.count_nonzero(g[~mask]) == 0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reduced_precision_vectors_are_close_to_float32(tiny_model, texts, dtype):
    ref = BertVectorizer(tiny_model, device="cpu", layers="all").fit_transform(texts)
    got = BertVectorizer(tiny_model, device="cpu", layers="all", dtype=dtype).fit_transform(texts)
    assert got.dtype == np.float32
    assert not np.array_equal(got, ref)  # it did run in reduced precision
    assert _cosines(got, ref).min() > 0.999


def test_attention_pooling_runs_the_converted_model_under_autocast(tiny_model, texts):
    """transformers' forward (attention maps) works on the converted copy."""
    ref = BertVectorizer(tiny_model, device="cpu", pooling="attention").fit_transform(texts)
    vec = BertVectorizer(tiny_model, device="cpu", pooling="attention", dtype="bfloat16")
    got = vec.fit_transform(texts)
    assert vec._loaded().converted
    assert _cosines(got, ref).min() > 0.99


def test_extraction_refuses_a_model_loaded_for_another_dtype(tiny_model, texts):
    loaded = _backend.load_model(ModelSpec(tiny_model), "cpu")
    with pytest.raises(ValueError, match="loaded for dtype='float32'"):
        list(iter_statistics(texts, loaded, ExtractionSpec(layers=[1], max_length=32, dtype="bfloat16")))


def test_precision_scheme_is_part_of_the_cache_key(tiny_model, texts, tmp_path, monkeypatch):
    """Entries of an older reduced-precision recipe are never read by a newer one."""
    kw = dict(device="cpu", memory=tmp_path, dtype="bfloat16")
    BertVectorizer(tiny_model, **kw).fit_transform(texts)
    same = BertVectorizer(tiny_model, **kw)
    same.fit_transform(texts)
    assert same.last_cache_stats_["misses"] == 0
    monkeypatch.setattr(_runtime, "PRECISION_SCHEME", _runtime.PRECISION_SCHEME + ";changed")
    newer = BertVectorizer(tiny_model, **kw)
    newer.fit_transform(texts)
    assert newer.last_cache_stats_["hits"] == 0
    # float32 entries are keyed without it: untouched by the change.
    fp32 = BertVectorizer(tiny_model, device="cpu", memory=tmp_path)
    fp32.fit_transform(texts)
    fp32_again = BertVectorizer(tiny_model, device="cpu", memory=tmp_path)
    fp32_again.fit_transform(texts)
    assert fp32_again.last_cache_stats_["misses"] == 0


@pytest.mark.parametrize("fixture", TINY)
def test_stacked_projections_equal_the_three_linears(fixture, request, texts):
    reduced = _backend.load_model(ModelSpec(request.getfixturevalue(fixture)), "cpu",
                                  dtype="bfloat16")
    assert all(p.qkv is not None for p in reduced.lean)
    for p in reduced.lean:
        weight, bias = p.qkv
        assert weight.dtype == torch.bfloat16
        torch.testing.assert_close(weight, torch.cat([p.query.weight, p.key.weight,
                                                      p.value.weight]), rtol=0, atol=0)
    inputs = _inputs(reduced, texts)
    mask = inputs["attention_mask"].bool()
    unfused = [p._replace(qkv=None) for p in reduced.lean]
    with torch.inference_mode():
        got = _encoder.lean_hidden_states(reduced.model, reduced.lean, inputs, [2],
                                          compute_dtype="bfloat16")
        want = _encoder.lean_hidden_states(reduced.model, unfused, inputs, [2],
                                           compute_dtype="bfloat16")
    torch.testing.assert_close(got[0][mask], want[0][mask], rtol=1e-2, atol=1e-2)


def test_no_stacking_for_float32_or_int8(tiny_model):
    assert all(p.qkv is None for p in _backend.load_model(ModelSpec(tiny_model), "cpu").lean)
    int8 = _backend.load_model(ModelSpec(tiny_model), "cpu", backend="int8")
    assert all(p.qkv is None for p in _encoder.fuse_qkv(int8.lean))
