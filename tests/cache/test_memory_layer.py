"""The in-process memory layer in front of the feature store (issue 12, item 12).

A warm grid search reads the same entries once per clone; the layer serves
what this process already read or wrote. Disk reads are counted with a spy on
the store's ``Namespace.read`` and with ``last_cache_stats_``, never by timing
(timings: ``benchmarks/gridsearch.py --warm-only``).
"""

import os
import threading
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from skbert import BertVectorizer, FeatureCacheWarning, cache_clear
from skbert._cache import local as _cache
from skbert._cache import memory as _memory_layer
from skbert._cache.local import FeatureCache
from skbert._model import backend as _backend
from skbert._testing import TINY_WORDS

ENV = _memory_layer.ENV_VAR


@pytest.fixture(autouse=True)
def fresh_layer(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    _memory_layer.clear()
    yield
    _memory_layer.clear()


@pytest.fixture
def disk_reads(monkeypatch):
    """Counts the keys the store's ``Namespace.read`` is asked for (disk reads)."""
    counter = {"keys": 0}
    real = _cache.Namespace.read

    def spy(self, kind, keys, *args, **kwargs):
        counter["keys"] += len(keys)
        return real(self, kind, keys, *args, **kwargs)

    monkeypatch.setattr(_cache.Namespace, "read", spy)
    return counter


def _forward():
    return _backend.forward_counts()["texts"]


def _corpus(n, seed=0):
    rng = np.random.RandomState(seed)
    texts = [" ".join(rng.choice(TINY_WORDS, rng.randint(1, 8))) for _ in range(n)]
    return list(dict.fromkeys(texts))


def test_warm_second_transform_in_the_same_process_reads_no_entry_from_disk(
    tiny_model, texts, tmp_path, disk_reads
):
    n = len(set(texts))
    vec = BertVectorizer(tiny_model, memory=tmp_path).fit(texts)
    vec.transform(texts)  # cold: computes and writes
    stats = vec.last_cache_stats_
    assert stats["misses"] == n
    disk_reads["keys"] = 0
    before = _forward()
    for params in [{}, {"layers": [0, 2], "pooling": "max"}, {"pooling": "cls"}]:
        clone(vec).set_params(**params).fit_transform(texts)
    warm = clone(vec)
    warm.fit_transform(texts)
    stats = warm.last_cache_stats_
    assert stats["hits"] == n and stats["misses"] == 0
    assert stats["memory_hits"] == n and stats["bytes_read"] == 0
    assert disk_reads["keys"] == 0 and _forward() == before


def test_entries_read_from_disk_are_kept_for_the_next_call(tiny_model, texts, tmp_path, disk_reads):
    n = len(set(texts))
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
    _memory_layer.clear()  # as a new process: everything is on disk only
    disk_reads["keys"] = 0
    first = BertVectorizer(tiny_model, memory=tmp_path, pooling="max")
    got = first.fit_transform(texts)
    assert first.last_cache_stats_["memory_hits"] == 0 and first.last_cache_stats_["bytes_read"] > 0
    assert disk_reads["keys"] == n
    second = BertVectorizer(tiny_model, memory=tmp_path, pooling="max")
    np.testing.assert_array_equal(second.fit_transform(texts), got)
    assert second.last_cache_stats_["memory_hits"] == n
    assert second.last_cache_stats_["bytes_read"] == 0 and disk_reads["keys"] == n


@pytest.mark.parametrize("cache_dtype", ["float32", "float16"])
@pytest.mark.parametrize(
    "params",
    [
        dict(layers=-1, pooling="mean"),
        dict(layers=[0, 2], pooling="mean_max", exclude_special_tokens=True),
        dict(layers="all", pooling="attention", layer_agg="mean"),
    ],
)
def test_results_bitwise_equal_with_and_without_the_layer(
    tiny_model, texts, tmp_path, monkeypatch, cache_dtype, params
):
    kw = dict(memory=tmp_path, cache_dtype=cache_dtype, **params)
    BertVectorizer(tiny_model, **kw).fit_transform(texts)  # cold
    from_memory = BertVectorizer(tiny_model, **kw)
    got_memory = from_memory.fit_transform(texts)
    assert from_memory.last_cache_stats_["memory_hits"] > 0
    assert from_memory.last_cache_stats_["bytes_read"] == 0
    monkeypatch.setenv(ENV, "0")
    from_disk = BertVectorizer(tiny_model, **kw)
    got_disk = from_disk.fit_transform(texts)
    assert from_disk.last_cache_stats_["memory_hits"] == 0
    assert from_disk.last_cache_stats_["bytes_read"] > 0
    np.testing.assert_array_equal(got_memory, got_disk)


def test_float16_store_serves_float16_rounded_values_from_memory(tiny_model, texts, tmp_path):
    kw = dict(memory=tmp_path, cache_dtype="float16", layers=[1], pooling="mean")
    BertVectorizer(tiny_model, **kw).fit_transform(texts)
    vec = BertVectorizer(tiny_model, **kw)
    got = vec.fit_transform(texts)  # mean pooling of one layer is a stored statistic
    assert vec.last_cache_stats_["memory_hits"] == len(set(texts))
    np.testing.assert_array_equal(got, got.astype(np.float16).astype(np.float32))
    exact = BertVectorizer(tiny_model, layers=[1], pooling="mean").fit_transform(texts)
    assert not np.array_equal(got, exact)
    np.testing.assert_array_equal(got, exact.astype(np.float16).astype(np.float32))


def test_another_namespace_or_folder_is_never_served(tiny_model, tiny_distilbert, texts, tmp_path):
    n = len(set(texts))
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
    others = [
        dict(model_name=tiny_model, memory=tmp_path, max_length=6),
        dict(model_name=tiny_model, memory=tmp_path, cache_dtype="float16"),
        dict(model_name=tiny_distilbert, memory=tmp_path),
        dict(model_name=tiny_model, memory=tmp_path / "elsewhere"),
    ]
    for params in others:
        before = _forward()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation
            vec = BertVectorizer(**params)
            got = vec.fit_transform(texts)
        assert vec.last_cache_stats_["memory_hits"] == 0, params
        assert vec.last_cache_stats_["misses"] == n and _forward() - before == n, params
        kw = {k: v for k, v in params.items() if k != "memory"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = BertVectorizer(**kw).fit_transform(texts)
        if params.get("cache_dtype") == "float16":
            np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)
        else:
            np.testing.assert_array_equal(got, want)


def test_cache_clear_in_process_invalidates(tiny_model, texts, tmp_path):
    n = len(set(texts))
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
    assert _memory_layer.info()["entries"] == n
    cache_clear(tmp_path)
    assert _memory_layer.info()["entries"] == 0
    before = _forward()
    vec = BertVectorizer(tiny_model, memory=tmp_path)
    vec.fit_transform(texts)
    assert vec.last_cache_stats_["memory_hits"] == 0 and vec.last_cache_stats_["misses"] == n
    assert _forward() - before == n
    # Shrinking the store to a size clears the layer too.
    cache_clear(tmp_path, max_bytes=0)
    assert _memory_layer.info()["entries"] == 0


def _store(tmp_path, dtype="float32"):
    cache = FeatureCache(tmp_path, dtype=dtype)
    ns = cache.namespace({"model": "test"})
    return cache, ns


SHAPE = (3, 5, 8)
ENTRY = 4 * 3 * 5 * 8 + 8 * 2 + _memory_layer.ENTRY_OVERHEAD


def _values(n, seed=0):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n,) + SHAPE).astype(np.float32), rng.randint(1, 9, size=(n, 2))


def test_bound_is_respected_least_recently_used_first(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(3 * ENTRY + 10))
    _, raw = _store(tmp_path)
    keys = raw.keys("base", [f"text {i}" for i in range(6)])
    values, counts = _values(6)
    ns = _memory_layer.wrap(raw, store=tmp_path, dtype="float32")
    assert ns.write("base", keys[:3], values[:3], counts[:3]) == 3
    assert _memory_layer.info()["entries"] == 3
    ns.read("base", keys[:1], SHAPE)  # text 0 is now the most recently used
    ns.write("base", keys[3:5], values[3:5], counts[3:5])  # evicts texts 1 and 2
    info = _memory_layer.info()
    assert info["entries"] == 3 and info["bytes"] <= 3 * ENTRY + 10
    ns = _memory_layer.wrap(raw, store=tmp_path, dtype="float32")
    found, got, got_counts = ns.read("base", keys[:5], SHAPE, select=[2, 0])
    assert found.all() and ns.memory_hits == 3  # texts 0, 3, 4; 1 and 2 from disk
    np.testing.assert_array_equal(got, values[:5][:, [2, 0]])
    np.testing.assert_array_equal(got_counts, counts[:5])
    # Shrinking the bound drops entries at the next call; 0 disables the layer.
    monkeypatch.setenv(ENV, str(ENTRY))
    _memory_layer.wrap(raw, store=tmp_path, dtype="float32")
    assert _memory_layer.info()["entries"] <= 1
    monkeypatch.setenv(ENV, "0")
    assert _memory_layer.wrap(raw, store=tmp_path, dtype="float32") is raw
    assert _memory_layer.info()["entries"] == 0


def test_missing_and_damaged_entries_are_not_inserted(tmp_path):
    cache, raw = _store(tmp_path)
    keys = raw.keys("base", ["a", "b", "c"])
    values, counts = _values(3)
    raw.write("base", keys, values, counts)
    hexkey = keys[1].hex()
    path = os.path.join(raw.path, "base", hexkey[:2], hexkey[2:])  # the documented layout
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    ns = _memory_layer.wrap(raw, store=tmp_path, dtype="float32")
    found, _, _ = ns.read("base", keys + raw.keys("base", ["never written"]), SHAPE)
    assert found.tolist() == [True, False, True, False]
    assert _memory_layer.info()["entries"] == 2
    with pytest.warns(FeatureCacheWarning, match="damaged"):
        cache.close()


def test_a_clear_racing_with_a_read_does_not_put_entries_back(tmp_path, monkeypatch):
    _, raw = _store(tmp_path)
    keys = raw.keys("base", ["a", "b"])
    values, counts = _values(2)
    raw.write("base", keys, values, counts)
    real = type(raw).read

    def read_then_clear(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        _memory_layer.clear()  # another thread calls cache_clear meanwhile
        return result

    monkeypatch.setattr(type(raw), "read", read_then_clear)
    ns = _memory_layer.wrap(raw, store=tmp_path, dtype="float32")
    assert ns.read("base", keys, SHAPE)[0].all()
    assert _memory_layer.info()["entries"] == 0


def test_float16_entries_are_kept_rounded(tmp_path):
    _, raw = _store(tmp_path, dtype="float16")
    keys = raw.keys("base", ["a", "b"])
    values, counts = _values(2)
    ns = _memory_layer.wrap(raw, store=tmp_path, dtype="float16")
    ns.write("base", keys, values, counts)
    from_memory = _memory_layer.wrap(raw, store=tmp_path, dtype="float16")
    _, got, _ = from_memory.read("base", keys, SHAPE)
    assert from_memory.memory_hits == 2
    _, on_disk, _ = raw.read("base", keys, SHAPE)
    np.testing.assert_array_equal(got, on_disk)
    np.testing.assert_array_equal(got, values.astype(np.float16).astype(np.float32))
    assert _memory_layer.info()["bytes"] == 2 * (2 * 3 * 5 * 8 + 16 + _memory_layer.ENTRY_OVERHEAD)


def test_threads_share_the_layer_safely(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(20 * ENTRY))  # smaller than the data: constant eviction
    _, raw = _store(tmp_path)
    n = 60
    keys = raw.keys("base", [f"t{i}" for i in range(n)])
    values, counts = _values(n)
    raw.write("base", keys, values, counts)
    errors = []

    def worker(seed):
        rng = np.random.RandomState(seed)
        try:
            for _ in range(40):
                idx = rng.choice(n, 15, replace=False)
                ns = _memory_layer.wrap(raw, store=tmp_path, dtype="float32")
                found, got, got_counts = ns.read("base", [keys[i] for i in idx], SHAPE, select=[1])
                assert found.all()
                np.testing.assert_array_equal(got, values[idx][:, [1]])
                np.testing.assert_array_equal(got_counts, counts[idx])
                if rng.rand() < 0.05:
                    _memory_layer.clear()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _memory_layer.info()["bytes"] <= 20 * ENTRY


@pytest.mark.parametrize(
    "raw, want",
    [("268435456", 256 << 20), ("64M", 64 << 20), ("1g", 1 << 30), ("512 KiB", 512 << 10),
     ("0", 0), ("", _memory_layer.DEFAULT_MAX_BYTES)],
)
def test_bound_from_the_environment(monkeypatch, raw, want):
    monkeypatch.setenv(ENV, raw)
    assert _memory_layer.max_bytes() == want


def test_bad_bound_warns_and_uses_the_default(monkeypatch):
    monkeypatch.setenv(ENV, "a lot")
    with pytest.warns(FeatureCacheWarning, match=ENV):
        assert _memory_layer.max_bytes() == _memory_layer.DEFAULT_MAX_BYTES
