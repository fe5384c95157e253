"""How extraction runs: early exit, pooler skipping, threads, out-of-memory
retries, backends and the GPU path.

Outputs are compared across settings; timings never appear here (see
benchmarks/throughput.py).
"""

import logging
import os

import numpy as np
import pytest

from skbert import BertVectorizer
from skbert._extraction import ExtractionSpec
from skbert._extraction.batches import iter_statistics, resolve_batching
from skbert._model import backend as _backend
from skbert._model.backend import ModelSpec
from skbert._model.runtime import (
    deepest_layer,
    find_layer_list,
    is_out_of_memory,
    thread_budget,
    truncated,
)

torch = pytest.importorskip("torch")

TINY = ["tiny_model", "tiny_distilbert", "tiny_roberta"]


def _loaded(path, backend="torch"):
    return _backend.load_model(ModelSpec(path), "cpu", backend=backend)


def _inputs(loaded, texts):
    from skbert._model.runtime import model_input_names

    names = model_input_names(loaded.model)
    enc = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in names}


class _CallCounter:
    """Count calls of the encoder's layers (by index) and of its pooler.

    A layer counts as run when any of its modules runs: transformers' forward
    calls the layer module, the lean pass (skbert._model.encoder) its submodules.
    """

    def __init__(self, model):
        _, _, layers = find_layer_list(model)
        self.layers = [0] * len(layers)
        self.pooler = 0
        self.handles = [
            module.register_forward_hook(self._layer_hook(i))
            for i, layer in enumerate(layers)
            for module in layer.modules()
        ]
        pooler = getattr(model, "pooler", None)
        if pooler is not None:
            self.handles.append(pooler.register_forward_hook(self._pooler_hook))

    def _layer_hook(self, i):
        def hook(module, args, output):
            self.layers[i] += 1

        return hook

    def _pooler_hook(self, module, args, output):
        self.pooler += 1

    def deepest(self):
        ran = [i for i, n in enumerate(self.layers) if n]
        return max(ran) + 1 if ran else 0

    def remove(self):
        for handle in self.handles:
            handle.remove()


# ------------------------------------------------------------------ early exit
@pytest.mark.parametrize("fixture", TINY)
def test_early_exit_equals_full_pass_for_every_layer(fixture, request, texts):
    loaded = _loaded(request.getfixturevalue(fixture))
    inputs = _inputs(loaded, texts)
    owner, attr, layers = find_layer_list(loaded.model)
    n_layers = len(layers)
    with torch.inference_mode():
        full = loaded.model(**inputs, output_hidden_states=True).hidden_states
        assert len(full) == n_layers + 1
        for k in range(1, n_layers + 1):
            out = loaded.forward(inputs, num_layers=k)
            assert len(out.hidden_states) == k + 1
            for i in range(k + 1):
                assert torch.equal(out.hidden_states[i], full[i]), (k, i)
    # The layer list is restored, the very same object.
    assert getattr(owner, attr) is layers


@pytest.mark.parametrize("fixture", TINY)
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_extraction_runs_only_up_to_the_deepest_layer(fixture, layer, request, texts):
    path = request.getfixturevalue(fixture)
    loaded = _loaded(path)
    counter = _CallCounter(loaded.model)
    try:
        X = BertVectorizer(path, layers=layer, device="cpu").fit_transform(texts)
    finally:
        counter.remove()
    # The lean pass needs no layer for the embedding output (hidden state 0);
    # transformers' forward runs at least one.
    assert counter.deepest() == (layer if loaded.lean is not None else max(layer, 1))
    assert counter.pooler == 0
    # Same features as the full pass, selected afterwards.
    full = BertVectorizer(path, layers="all", device="cpu").fit_transform(texts)
    dim = X.shape[1]
    np.testing.assert_array_equal(X, full[:, layer * dim : (layer + 1) * dim])


def test_attention_pooling_with_early_exit_matches_full(tiny_model, texts):
    one = BertVectorizer(tiny_model, layers=[0, 1], pooling="attention", device="cpu")
    full = BertVectorizer(tiny_model, layers="all", pooling="attention", device="cpu")
    X, F = one.fit_transform(texts), full.fit_transform(texts)
    np.testing.assert_allclose(X, F[:, : X.shape[1]], rtol=1e-6, atol=1e-7)


def test_truncated_restores_after_an_error(tiny_model):
    model = _loaded(tiny_model).model
    owner, attr, layers = find_layer_list(model)
    pooler = model.pooler
    with pytest.raises(RuntimeError, match="boom"):
        with truncated(model, 1):
            assert len(getattr(owner, attr)) == 1
            assert model.pooler is not pooler
            assert model.pooler(torch.zeros(1, 2, 3)) is None
            raise RuntimeError("boom")
    assert getattr(owner, attr) is layers
    assert model.pooler is pooler


def test_deepest_layer():
    assert deepest_layer([0]) == 1
    assert deepest_layer([3, 1]) == 3
    assert deepest_layer([2]) == 2


# --------------------------------------------------------------------- threads
def test_transform_leaves_global_thread_count_unchanged(tiny_model, texts):
    before = torch.get_num_threads()
    BertVectorizer(tiny_model, device="cpu").fit_transform(texts)
    assert torch.get_num_threads() == before


def test_threads_limited_to_the_worker_share_and_restored(tiny_model, texts, monkeypatch):
    """Inside a joblib worker (OMP_NUM_THREADS = cpus // n_jobs), torch obeys it."""
    loaded = _loaded(tiny_model)
    seen = []
    original = type(loaded).hidden_states

    def spy(self, inputs, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, inputs, *args, **kwargs)

    monkeypatch.setattr(type(loaded), "hidden_states", spy)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert thread_budget() == 1
        BertVectorizer(tiny_model, device="cpu", batch_size=2).fit_transform(texts)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_threads_never_raised(tiny_model, texts, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loaded = _loaded(tiny_model)
        for _ in iter_statistics(texts, loaded, ExtractionSpec(layers=[1], max_length=32)):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _worker_threads(path, texts):
    import torch

    from skbert._extraction.batches import iter_statistics
    from skbert._model.backend import ModelSpec, load_model

    loaded = load_model(ModelSpec(path), "cpu")
    during = [
        torch.get_num_threads()
        for _ in iter_statistics(texts, loaded, ExtractionSpec(layers=[1], max_length=32))
    ]
    return max(during)


def test_loky_workers_do_not_oversubscribe(tiny_model, texts):
    from joblib import Parallel, cpu_count, delayed

    n_jobs = 2
    results = Parallel(n_jobs=n_jobs, backend="loky")(
        delayed(_worker_threads)(tiny_model, texts) for _ in range(n_jobs)
    )
    share = max(1, cpu_count() // n_jobs)
    assert max(results) <= share, results


# --------------------------------------------------------------- out of memory
def _fake_oom():
    oom = getattr(torch.cuda, "OutOfMemoryError", None) or RuntimeError
    return oom("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")


def test_out_of_memory_halves_the_batch_and_retries(tiny_model, texts, monkeypatch, caplog):
    want = BertVectorizer(tiny_model, device="cpu", batch_size=8, max_batch_tokens=None)
    want = want.fit_transform(texts)
    loaded = _loaded(tiny_model)
    original = type(loaded).hidden_states
    sizes = []

    def flaky(self, inputs, *args, **kwargs):
        n = int(inputs["input_ids"].shape[0])
        sizes.append(n)
        if n > 2:
            raise _fake_oom()
        return original(self, inputs, *args, **kwargs)

    monkeypatch.setattr(type(loaded), "hidden_states", flaky)
    with caplog.at_level(logging.WARNING, logger="skbert._extraction.batches"):
        got = BertVectorizer(tiny_model, device="cpu", batch_size=8, max_batch_tokens=None)
        got = got.fit_transform(texts)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert sizes[:3] == [8, 4, 2]  # halved until it fits
    assert max(sizes[3:]) <= 2  # later batches stay small
    assert "Out of memory" in caplog.text


def test_out_of_memory_on_one_text_is_raised(tiny_model, monkeypatch):
    loaded = _loaded(tiny_model)

    def always(self, inputs, *args, **kwargs):
        raise _fake_oom()

    monkeypatch.setattr(type(loaded), "hidden_states", always)
    with pytest.raises(RuntimeError, match="out of memory"):
        BertVectorizer(tiny_model, device="cpu").fit_transform(["a", "b", "c"])


def test_other_errors_are_not_retried(tiny_model, monkeypatch):
    loaded = _loaded(tiny_model)
    calls = []

    def broken(self, inputs, *args, **kwargs):
        calls.append(1)
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(type(loaded), "hidden_states", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        BertVectorizer(tiny_model, device="cpu").fit_transform(["a", "b", "c"])
    assert len(calls) == 1


def test_is_out_of_memory():
    assert is_out_of_memory(_fake_oom())
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(ValueError("out of range"))


def test_resolve_batching():
    assert resolve_batching("cpu", threads=2) == (64, 1024)
    assert resolve_batching("cuda:0") == (512, 32768)
    assert resolve_batching("cuda:0", threads=16) == (512, 32768)
    assert resolve_batching("cpu", 8, None) == (8, None)
    # On the CPU "auto" grows with the threads of the forward pass, up to a cap.
    assert resolve_batching("cpu", threads=1) == (64, 1024)
    assert resolve_batching("cpu", threads=8) == (128, 4096)
    assert resolve_batching("cpu", threads=16) == (256, 8192)
    assert resolve_batching("cpu", threads=64) == (256, 8192)
    assert resolve_batching("cpu", 32, "auto", threads=16) == (32, 8192)


def test_auto_batching_follows_the_threads_in_use(monkeypatch):
    import skbert._extraction.batches as extraction

    monkeypatch.setattr(extraction, "thread_budget", lambda: 16)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert resolve_batching("cpu") == (64, 1024)  # capped by torch's own setting
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr(extraction, "_forward_threads", lambda: 8)
    assert resolve_batching("cpu") == (128, 4096)


# -------------------------------------------------------------------- backends
def test_compile_backend_matches_torch(tiny_model, texts):
    pytest.importorskip("torch._inductor")
    want = BertVectorizer(tiny_model, layers="all", pooling="mean_max", device="cpu")
    got = BertVectorizer(
        tiny_model, layers="all", pooling="mean_max", device="cpu", backend="compile"
    )
    np.testing.assert_allclose(
        got.fit_transform(texts), want.fit_transform(texts), rtol=1e-5, atol=1e-5
    )
    # Attention maps come from the eager layers, which are swapped back after.
    model = _loaded(tiny_model, "compile").model
    compiled = [layer.forward for layer in find_layer_list(model)[2]]
    att = dict(layers="all", pooling="attention", device="cpu")
    np.testing.assert_allclose(
        BertVectorizer(tiny_model, backend="compile", **att).fit_transform(texts),
        BertVectorizer(tiny_model, **att).fit_transform(texts),
        rtol=1e-5,
        atol=1e-5,
    )
    assert [layer.forward for layer in find_layer_list(model)[2]] == compiled


def test_int8_backend_is_close_and_separate(tiny_model, texts):
    fp32 = BertVectorizer(tiny_model, device="cpu").fit_transform(texts)
    int8 = BertVectorizer(tiny_model, device="cpu", backend="int8").fit_transform(texts)
    assert int8.shape == fp32.shape
    cos = np.sum(int8 * fp32, axis=1) / (
        np.linalg.norm(int8, axis=1) * np.linalg.norm(fp32, axis=1)
    )
    assert np.all(cos > 0.9)
    # Its own model copy: the shared float32 model is not quantised.
    assert _loaded(tiny_model).model is not _loaded(tiny_model, "int8").model
    again = BertVectorizer(tiny_model, device="cpu").fit_transform(texts)
    np.testing.assert_array_equal(again, fp32)


def test_int8_refuses_a_gpu(tiny_model):
    with pytest.raises(ValueError, match="CPU only"):
        BertVectorizer(tiny_model, device="cuda", backend="int8").fit(["a"])


def test_backend_is_validated(tiny_model):
    with pytest.raises(ValueError, match="'backend' parameter"):
        BertVectorizer(tiny_model, backend="tensorrt").fit(["a"])


def test_int8_features_keyed_apart_on_disk(tiny_model, texts, tmp_path):
    """An approximate backend never reads float32 entries, nor writes over them."""
    fp32 = BertVectorizer(tiny_model, device="cpu", memory=tmp_path).fit_transform(texts)
    vec = BertVectorizer(tiny_model, device="cpu", memory=tmp_path, backend="int8")
    int8 = vec.fit_transform(texts)
    assert vec.last_cache_stats_["hits"] == 0
    assert not np.array_equal(int8, fp32)
    again = BertVectorizer(tiny_model, device="cpu", memory=tmp_path).fit_transform(texts)
    np.testing.assert_array_equal(again, fp32)


def test_int8_scheme_is_part_of_the_cache_key(tiny_model, texts, tmp_path, monkeypatch):
    """Entries written under an older int8 recipe are never read by a newer one."""
    from skbert._model import runtime as _runtime

    first = BertVectorizer(tiny_model, device="cpu", memory=tmp_path, backend="int8")
    first.fit_transform(texts)
    same = BertVectorizer(tiny_model, device="cpu", memory=tmp_path, backend="int8")
    same.fit_transform(texts)
    assert same.last_cache_stats_["misses"] == 0
    monkeypatch.setattr(_runtime, "INT8_SCHEME", _runtime.INT8_SCHEME + ";changed")
    newer = BertVectorizer(tiny_model, device="cpu", memory=tmp_path, backend="int8")
    newer.fit_transform(texts)
    assert newer.last_cache_stats_["hits"] == 0


# ------------------------------------------------------------------------- GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("fixture", TINY)
def test_gpu_float32_matches_cpu(fixture, request, texts):
    path = request.getfixturevalue(fixture)
    cpu = BertVectorizer(path, layers="all", device="cpu").fit_transform(texts)
    vec = BertVectorizer(path, layers="all", device="auto")
    gpu = vec.fit_transform(texts)
    assert vec.device_ == "cuda"
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_gpu_reduced_precision_is_close(tiny_model, texts, dtype):
    cpu = BertVectorizer(tiny_model, device="cpu").fit_transform(texts)
    got = BertVectorizer(tiny_model, device="cuda", dtype=dtype).fit_transform(texts)
    assert got.dtype == np.float32
    cos = np.sum(got * cpu, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(cpu, axis=1))
    assert np.all(cos > 0.99)


@needs_cuda
def test_gpu_out_of_memory_retry_on_device(tiny_model, texts, monkeypatch):
    loaded = _backend.load_model(ModelSpec(tiny_model), "cuda")
    original = type(loaded).hidden_states

    def flaky(self, inputs, *args, **kwargs):
        if int(inputs["input_ids"].shape[0]) > 2:
            raise _fake_oom()
        return original(self, inputs, *args, **kwargs)

    want = BertVectorizer(tiny_model, device="cuda").fit_transform(texts)
    monkeypatch.setattr(type(loaded), "hidden_states", flaky)
    got = BertVectorizer(tiny_model, device="cuda").fit_transform(texts)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_only_the_requested_statistics_are_computed(tiny_model, texts):
    loaded = _loaded(tiny_model)
    kw = dict(layers=[1, 2], attention=False, max_length=32, batch_size=64, max_batch_tokens=None)
    (pos_a, full, _), = iter_statistics(texts, loaded, ExtractionSpec(**kw))
    (pos_b, part, _), = iter_statistics(texts, loaded, ExtractionSpec(slots=[1, 3], **kw))
    np.testing.assert_array_equal(pos_a, pos_b)
    np.testing.assert_array_equal(part[:, :, [1, 3]], full[:, :, [1, 3]])
    assert np.isnan(part[:, :, [0, 2, 4]]).all()


# ------------------------------------------------------------ tokenise once
@pytest.mark.parametrize("fixture", TINY)
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batches_equal_the_tokenizers_padding(fixture, side, request, texts):
    from skbert._extraction.batches import _BatchRunner, _iter_chunks, pad_batch

    loaded = _loaded(request.getfixturevalue(fixture))
    tokenizer = loaded.tokenizer
    runner = _BatchRunner(loaded, layers=[1], attention=False, dtype="float32")
    old_side = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        (chunk,) = _iter_chunks(
            tokenizer, texts, max_length=6, token_type_ids=True, prefetch=False
        )
        local = np.array([3, 0, 4, 6])
        got = pad_batch(chunk, local, **dict(runner.pad, left=side == "left"))
        want = tokenizer(
            [texts[i] for i in local], padding=True, truncation=True, max_length=6,
            return_special_tokens_mask=True, return_tensors="np",
        )
    finally:
        tokenizer.padding_side = old_side
    # The real tokens' flat positions, row by row, for packing them on the device.
    np.testing.assert_array_equal(
        got.pop("real_index"), np.flatnonzero(want["attention_mask"].reshape(-1))
    )
    assert set(want.keys()) == set(got.keys())
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_prefetched_chunks_equal_plain_ones(tiny_model, texts, monkeypatch):
    import skbert._extraction.batches as extraction
    from skbert._extraction.batches import _iter_chunks

    tokenizer = _loaded(tiny_model).tokenizer
    kw = dict(max_length=16, token_type_ids=True, size=3)
    plain = list(_iter_chunks(tokenizer, texts, prefetch=False, **kw))
    ahead = list(_iter_chunks(tokenizer, texts, prefetch=True, **kw))
    assert [c.start for c in plain] == [c.start for c in ahead] == [0, 3, 6]
    for a, b in zip(plain, ahead):
        np.testing.assert_array_equal(a.lengths, b.lengths)
        for i in range(len(a)):
            np.testing.assert_array_equal(a.row(i), b.row(i))
    # With prefetching the first chunk is small, so the device starts early.
    monkeypatch.setattr(extraction, "FIRST_CHUNK_TEXTS", 2)
    small_first = list(_iter_chunks(tokenizer, texts, prefetch=True, **kw))
    assert [c.start for c in small_first] == [0, 2, 5]
    np.testing.assert_array_equal(
        np.concatenate([c.lengths for c in small_first]),
        np.concatenate([c.lengths for c in plain]),
    )


def test_many_chunks_give_the_same_features(tiny_model, texts, monkeypatch):
    import skbert._extraction.batches as extraction

    many = [f"{t} {i}" for i in range(3) for t in texts]
    want = BertVectorizer(tiny_model, device="cpu").fit_transform(many)
    sizes = []
    original = extraction._tokenize_chunk

    def spy(tokenizer, texts, start, **kwargs):
        sizes.append(len(texts))
        return original(tokenizer, texts, start, **kwargs)

    monkeypatch.setattr(extraction, "_tokenize_chunk", spy)
    monkeypatch.setitem(extraction._iter_chunks.__kwdefaults__, "size", 5)
    got = BertVectorizer(tiny_model, device="cpu").fit_transform(many)
    assert sizes == [5, 5, 5, 5, 4]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------- allocator
_ALLOCATOR_PROBE = """
import ctypes, json, sys
from skbert._model.runtime import tune_allocator

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]


def from_heap(size=1 << 20):
    # Whether a fresh allocation of `size` bytes comes from the brk heap
    # (glibc's [heap] mapping) rather than a mapping of its own.
    address = libc.malloc(size)
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("[heap]"):
                low, high = (int(x, 16) for x in line.split()[0].split("-"))
                return low <= address < high
    return False


before = from_heap()
tuned = tune_allocator()
print(json.dumps({"before": before, "tuned": tuned, "after": from_heap(),
                  "again": tune_allocator()}))
"""


def _allocator_probe(**env):
    import json
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE], env={**base, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _glibc():
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


@pytest.mark.skipif(not _glibc(), reason="the allocator tuning is for glibc only")
def test_allocator_tuned_only_where_the_environment_froze_it():
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536: a 1 MiB buffer then
    # always gets a mapping of its own (faulted in again on every forward
    # pass); once tuned, it comes from the heap.
    dask_like = _allocator_probe(MALLOC_TRIM_THRESHOLD_="65536")
    assert dask_like == {"before": False, "tuned": True, "after": True, "again": True}
    # Nothing set: glibc's own dynamic thresholds, left alone.
    assert _allocator_probe()["tuned"] is False
    # The user's own mmap threshold wins: nothing changed.
    own = _allocator_probe(MALLOC_TRIM_THRESHOLD_="65536", MALLOC_MMAP_THRESHOLD_="131072")
    assert own == {"before": False, "tuned": False, "after": False, "again": False}
