"""The feature store behind a URL: packed segments on a real S3 server (moto) and on file://.

The S3 tests run against moto's server mode on 127.0.0.1 (the ``s3_store``
fixture of ``conftest.py``), through s3fs and real HTTP, and count the
requests the server received. Forward passes are counted with
``skbert._model.backend.forward_counts()`` in this process and with
``SKBERT_FORWARD_LOG`` across processes. A new process is simulated in this
one by forgetting the store's process-wide state (listings, indexes) and
disabling the in-memory layer, so that every read really reaches the store.
"""

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from skbert import (
    BertVectorizer,
    FeatureCacheWarning,
    cache_clear,
    cache_compact,
    cache_copy,
    cache_info,
    cache_verify,
)
from skbert._cache import segments as ss
from skbert._model import backend as _backend
from skbert._testing import TINY_WORDS


# --------------------------------------------------------------------- helpers
def _forward_texts():
    return _backend.forward_counts()["texts"]


def _corpus(n, seed=0):
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(1, 8))) + f" {i}"
        for i in range(n)
    ]


def _new_process():
    """Forget what this process knows of every segment store (as a new process would)."""
    ss._STATES.clear()
    ss._META_DONE.clear()
    from skbert._cache import memory as _memory_layer

    _memory_layer.clear()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    # Reads must reach the store, not this process's in-memory layer.
    monkeypatch.setenv("SKBERT_CACHE_MEMORY_BYTES", "0")
    monkeypatch.setattr(ss, "SEGMENT_ENTRIES", 16)
    # A URL must never become a local folder (``s3:``) in the working directory.
    monkeypatch.chdir(tmp_path)
    _new_process()
    yield
    _new_process()
    assert not os.path.exists(tmp_path / "s3:") and not os.path.exists(tmp_path / "memory:")


def _segment_keys(s3_store):
    return sorted(k for k in s3_store.objects() if k.endswith(".skseg"))


_CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _child(script, *args, env=None):
    full_env = {**os.environ, **_CHILD_ENV, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
    )  # fmt: skip


def _log_texts(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(int(line.split()[1]) for line in f if line.strip())


# ------------------------------------------------------------------ the format
def test_segment_roundtrip_and_damage_detection():
    from skbert._cache.format import encode_entry

    rng = np.random.default_rng(0)
    entries = {}
    for i in range(5):
        key = bytes(rng.integers(0, 256, 32, dtype=np.uint8))
        entries[key] = encode_entry(key, rng.random((3, 2, 4)), [i, i + 1])
    name, data = ss.pack_segment(entries)
    assert ss.parse_name(name)[1] == 5
    assert [k for k, _ in ss.read_segment(data, name)] == sorted(entries)
    assert all(entries[k] == e for k, e in ss.read_segment(data, name))
    # Equal entries, in any order, give the same bytes and the same name.
    assert ss.pack_segment(dict(reversed(list(entries.items())))) == (name, data)
    # One flipped bit in an entry: that entry only is damaged.
    flipped = bytearray(data)
    flipped[-7] ^= 1
    got = list(ss.read_segment(bytes(flipped), name))
    assert sum(e is None for _, e in got) == 1
    # In the index, or truncated: the whole segment is refused.
    for bad in (data[:20] + bytes([data[20] ^ 1]) + data[21:], data[:-1]):
        with pytest.raises(ValueError):
            list(ss.read_segment(bad, name))


def test_url_detection_and_core_without_fsspec(tiny_model, tmp_path):
    from skbert._cache.open import is_url

    assert is_url("s3://bucket/prefix") and is_url("file:///x") and is_url("simplecache::s3://b")
    assert not is_url(str(tmp_path)) and not is_url(tmp_path) and not is_url("C:\\cache")
    # skbert imports and caches to a directory without fsspec; a URL then says what to install.
    script = """
        import sys
        sys.modules["fsspec"] = None
        import skbert, numpy as np
        from skbert import BertVectorizer
        X = BertVectorizer(sys.argv[1], memory=sys.argv[2]).fit_transform(["a text", "b"])
        assert "fsspec" not in [m for m in sys.modules if sys.modules[m] is not None]
        try:
            BertVectorizer(sys.argv[1], memory="s3://bucket/prefix").fit_transform(["a text"])
        except ImportError as exc:
            print("ImportError:", exc)
    """
    proc = _child(script, tiny_model, tmp_path / "local")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "ImportError:" in out and "skbert[s3]" in out
    assert not (tmp_path / "s3:").exists()


def test_missing_protocol_raises_importerror_and_creates_no_folder(
    tiny_model, tmp_path, monkeypatch
):
    import importlib

    # (``fsspec.registry`` is the registry's read-only view, not its module.)
    fsspec_registry = importlib.import_module("fsspec.registry")

    # s3fs "not installed": hide it from the import system and fsspec's registry.
    monkeypatch.setitem(sys.modules, "s3fs", None)
    monkeypatch.delitem(fsspec_registry._registry, "s3", raising=False)
    with pytest.raises(ImportError, match=r"skbert\[s3\].*s3fs"):
        BertVectorizer(tiny_model, memory="s3://bucket/prefix").fit_transform(["a text"])
    with pytest.raises(ImportError, match=r"skbert\[s3\]"):
        cache_info("s3://bucket/prefix")
    if "gcsfs" not in sys.modules and __import__("importlib").util.find_spec("gcsfs") is None:
        with pytest.raises(ImportError, match="gcsfs"):
            BertVectorizer(tiny_model, memory="gs://bucket/prefix").fit_transform(["a text"])
    with pytest.raises(ValueError, match="unknown storage protocol"):
        BertVectorizer(tiny_model, memory="nosuchproto://x").fit_transform(["a text"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "memory, meant",
    [("s3:/bucket/x", "s3://bucket/x"), ("gs:bucket/x", "gs://bucket/x"),
     ("file:/data/x", "file:///data/x"), ("s3:\\bucket\\x", "s3://bucket/x"),
     ("notes:/x", "notes://x")],
)
def test_url_like_path_that_is_no_url_is_refused(tiny_model, tmp_path, memory, meant):
    # issue 19, item 6: "s3:/bucket/x" (one slash) silently became a folder "s3:".
    from skbert import cache_copy

    with pytest.raises(ValueError, match=f"two slashes.*{meant!r}"):
        BertVectorizer(tiny_model, memory=memory).fit_transform(["a text"])
    for tool in (cache_info, cache_verify, cache_clear, cache_compact):
        with pytest.raises(ValueError, match="two slashes"):
            tool(memory)
    with pytest.raises(ValueError, match="two slashes"):
        cache_copy(tmp_path, memory)
    assert list(tmp_path.iterdir()) == []
    # A local folder of that name is still reachable, spelled as a path.
    BertVectorizer(tiny_model, memory="./" + memory).fit_transform(["a text"])
    assert cache_info("./" + memory)["entries"] == 1
    for path in tmp_path.iterdir():  # (the fixture checks that no "s3:" folder is left)
        shutil.rmtree(path)


# ---------------------------------------------------------------------- on S3
def test_s3_store_bitwise_equal_few_puts_and_warm_reads(tiny_model, s3_store, tmp_path):
    texts = _corpus(40)
    fresh = BertVectorizer(tiny_model).fit_transform(texts)
    local = BertVectorizer(tiny_model, memory=tmp_path / "local").fit_transform(texts)

    before = _forward_texts()
    cold = BertVectorizer(tiny_model, memory=s3_store.url)
    got_cold = cold.fit_transform(texts)
    assert _forward_texts() - before == 40
    assert cold.last_cache_stats_["misses"] == 40 and cold.last_cache_stats_["written"] == 40
    # O(texts / segment size) PUTs: one per full segment, one at the end, and namespace.json.
    n_segments = math.ceil(40 / ss.SEGMENT_ENTRIES)
    assert s3_store.requests.count("PUT", ".skseg") == n_segments
    assert s3_store.requests.count("PUT") == n_segments + 1
    assert len(_segment_keys(s3_store)) == n_segments

    # A "new process": one listing, one ranged GET per segment index, entries
    # in merged ranged reads; no PUT and no forward pass.
    _new_process()
    s3_store.requests.reset()
    before = _forward_texts()
    warm = BertVectorizer(tiny_model, memory=s3_store.url)
    got_warm = warm.fit_transform(texts)
    assert _forward_texts() == before
    assert warm.last_cache_stats_["hits"] == 40 and warm.last_cache_stats_["misses"] == 0
    assert warm.last_cache_stats_["bytes_read"] == 40 * 2000
    assert s3_store.requests.count("PUT") == 0
    lists = [r for r in s3_store.requests.all() if "list-type" in r[2]]
    assert len(lists) == 1
    assert s3_store.requests.count("GET", ".skseg") <= 2 * n_segments
    for got in (got_cold, got_warm, local):
        np.testing.assert_array_equal(got, fresh)

    # Another assembly from the same entries, through another process's view.
    want = BertVectorizer(tiny_model, layers=[0, -1], pooling="max").fit_transform(texts)
    _new_process()
    before = _forward_texts()
    other = BertVectorizer(tiny_model, memory=s3_store.url, layers=[0, -1], pooling="max")
    np.testing.assert_array_equal(other.fit_transform(texts), want)
    assert _forward_texts() == before


def test_s3_storage_options_explicit(tiny_model, s3_store, monkeypatch):
    # Without the environment, the explicit options reach the server.
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    texts = _corpus(5)
    vec = BertVectorizer(
        tiny_model, memory=s3_store.url, cache_storage_options=s3_store.storage_options
    )
    vec.fit_transform(texts)
    assert vec.last_cache_stats_["written"] == 5
    assert cache_info(s3_store.url, storage_options=s3_store.storage_options)["entries"] == 5


def test_s3_damaged_segment_detected_warned_recomputed(tiny_model, s3_store):
    texts = _corpus(40, seed=3)
    fresh = BertVectorizer(tiny_model).fit_transform(texts)
    BertVectorizer(tiny_model, memory=s3_store.url).fit_transform(texts)
    keys = _segment_keys(s3_store)
    client = s3_store.client()

    def flip(key, position):
        body = bytearray(client.get_object(Bucket=s3_store.bucket, Key=key)["Body"].read())
        body[position] ^= 0x5A
        client.put_object(Bucket=s3_store.bucket, Key=key, Body=bytes(body))

    # A bit flipped in one entry's values of the first segment, and in the
    # index of the second: one text, then a whole segment, recomputed.
    flip(keys[0], -9)
    flip(keys[1], 30)
    n_second = int(keys[1].rsplit("-", 1)[1].split(".")[0])
    _new_process()
    before = _forward_texts()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        vec = BertVectorizer(tiny_model, memory=s3_store.url)
        got = vec.fit_transform(texts)
    assert _forward_texts() - before == 1 + n_second
    # Recomputed rows went through the model in other batches than the fresh
    # run; a text's vector does not depend on its batch (#19, item 4): bitwise.
    np.testing.assert_array_equal(got, fresh)
    recomputed = got
    messages = [str(w.message) for w in record if issubclass(w.category, FeatureCacheWarning)]
    assert len(messages) == 1 and "2 damaged" in messages[0] and "cache verify" in messages[0]
    assert vec.last_cache_stats_["damaged"] == 2

    # The recomputed entries were published again: the next process reads them.
    # (Each new process warns again until `cache verify` removes the damaged segments.)
    _new_process()
    before = _forward_texts()
    with pytest.warns(FeatureCacheWarning, match="damaged"):
        got = BertVectorizer(tiny_model, memory=s3_store.url).fit_transform(texts)
    np.testing.assert_array_equal(got, recomputed)
    assert _forward_texts() == before

    # verify removes both damaged segments (re-publishing the first's intact entries).
    report = cache_verify(s3_store.url)
    assert len(report["damaged"]) == 2
    assert keys[0] not in s3_store.objects() and keys[1] not in s3_store.objects()
    assert cache_verify(s3_store.url)["damaged"] == []
    _new_process()
    before = _forward_texts()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCacheWarning)
        got = BertVectorizer(tiny_model, memory=s3_store.url).fit_transform(texts)
    np.testing.assert_array_equal(got, recomputed)
    assert _forward_texts() == before


def test_s3_empty_segment_is_skipped_like_any_damaged_one(tiny_model, s3_store, tmp_path):
    # issue 19, item 5: a 0-byte segment made every process's ranged index read
    # fail ("requested range is not satisfiable") and disabled the whole store.
    texts = _corpus(40, seed=19)
    fresh = BertVectorizer(tiny_model).fit_transform(texts)
    BertVectorizer(tiny_model, memory=s3_store.url).fit_transform(texts)
    # A full segment (16 entries; the names sort by content hash, so pick by
    # size): an emptied small one may be folded away by the next compaction.
    keys = [k for k in _segment_keys(s3_store) if k.endswith("-16.skseg")]
    s3_store.client().put_object(Bucket=s3_store.bucket, Key=keys[0], Body=b"")
    n_first = int(keys[0].rsplit("-", 1)[1].split(".")[0])

    _new_process()
    before = _forward_texts()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        vec = BertVectorizer(tiny_model, memory=s3_store.url)
        got = vec.fit_transform(texts)
    # Only the empty segment's texts are recomputed, and stored again.
    assert _forward_texts() - before == n_first
    assert vec.last_cache_stats_["hits"] == 40 - n_first
    assert vec.last_cache_stats_["written"] == n_first
    np.testing.assert_array_equal(got, fresh)
    messages = [str(w.message) for w in record if issubclass(w.category, FeatureCacheWarning)]
    assert len(messages) == 1 and "1 damaged" in messages[0] and "truncated" in messages[0]

    # The recomputed entries are bitwise the lost ones (a text's vector does not
    # depend on its batch: #19, item 4), so the segment written again has the
    # lost one's content-hash name and repairs it: another process reads
    # everything, with no warning; copying into the store skips what it holds.
    assert s3_store.objects()[keys[0]] > 0
    _new_process()
    before = _forward_texts()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCacheWarning)
        BertVectorizer(tiny_model, memory=s3_store.url).fit_transform(texts)
    assert _forward_texts() == before
    local = tmp_path / "local"
    BertVectorizer(tiny_model, memory=local).fit_transform(texts)
    assert cache_copy(local, s3_store.url)["skipped"] == 40
    assert cache_verify(s3_store.url)["damaged"] == []
    # Emptied again, verify deletes it.
    s3_store.client().put_object(Bucket=s3_store.bucket, Key=keys[0], Body=b"")
    report = cache_verify(s3_store.url)
    assert len(report["damaged"]) == 1 and keys[0] not in s3_store.objects()


_WRITER = """
    import os, sys, time
    import skbert._cache.segments as ss
    ss.SEGMENT_ENTRIES = 8
    from skbert import BertVectorizer
    model, url, go, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    stop_after = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    if stop_after:
        publish = ss.SegmentNamespace._publish
        done = []
        def publish_then_hang(self, kind, path):
            publish(self, kind, path)
            done.append(path)
            if len(done) == stop_after:
                open(go + ".published", "w").close()
                time.sleep(600)  # killed here, mid-fill
        ss.SegmentNamespace._publish = publish_then_hang
    while not os.path.exists(go):
        time.sleep(0.01)
    import random
    from skbert._testing import TINY_WORDS
    rng = random.Random(7)
    texts = [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(1, 8))) + f" {i}"
             for i in range(n)]
    BertVectorizer(model, memory=url, batch_size=4).fit_transform(texts)
    print("done")
"""


def _writer_texts(n):
    rng = random.Random(7)
    return [
        " ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(1, 8))) + f" {i}"
        for i in range(n)
    ]


def test_s3_two_processes_write_the_same_texts_concurrently(tiny_model, s3_store, tmp_path):
    go = tmp_path / "go"
    log = tmp_path / "forward.log"
    env = {**s3_store.env, "SKBERT_FORWARD_LOG": str(log)}
    procs = [_child(_WRITER, tiny_model, s3_store.url, go, 40, env=env) for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0 and "done" in out, err
    # No lock: both computed everything, and published equal segments under equal names.
    assert _log_texts(log) == 80
    assert s3_store.requests.count("PUT", ".skseg") == 2 * math.ceil(40 / 8)
    keys = _segment_keys(s3_store)
    assert len(keys) == math.ceil(40 / 8)
    report = cache_verify(s3_store.url)
    assert report["checked"] == report["ok"] == 40 and report["damaged"] == []
    texts = _writer_texts(40)
    before = _forward_texts()
    got = BertVectorizer(tiny_model, memory=s3_store.url, batch_size=4).fit_transform(texts)
    assert _forward_texts() == before
    np.testing.assert_array_equal(got, BertVectorizer(tiny_model, batch_size=4).fit_transform(texts))


def test_s3_writer_killed_mid_fill_loses_only_its_buffer(tiny_model, s3_store, tmp_path):
    go = tmp_path / "go"
    proc = _child(_WRITER, tiny_model, s3_store.url, go, 40, 2, env=s3_store.env)
    go.touch()
    deadline = time.monotonic() + 120
    while not (tmp_path / "go.published").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Two segments of 8 were published; they are complete and valid.
    assert len(_segment_keys(s3_store)) == 2
    report = cache_verify(s3_store.url)
    assert report["ok"] == 16 and report["damaged"] == []
    # The rerun computes only what was not published, and completes the store.
    texts = _writer_texts(40)
    before = _forward_texts()
    got = BertVectorizer(tiny_model, memory=s3_store.url, batch_size=4).fit_transform(texts)
    assert _forward_texts() - before == 40 - 16
    np.testing.assert_array_equal(got, BertVectorizer(tiny_model, batch_size=4).fit_transform(texts))
    assert cache_info(s3_store.url)["entries"] == 40


def test_s3_operations_info_copy_compact_clear(tiny_model, s3_store, tmp_path):
    texts = _corpus(30, seed=5)
    fresh = BertVectorizer(tiny_model).fit_transform(texts)
    local = tmp_path / "local"
    BertVectorizer(tiny_model, memory=local).fit_transform(texts)

    # Export one machine's cache into the bucket, packed into segments.
    report = cache_copy(local, s3_store.url)
    assert report["copied"] == 30 and report["damaged"] == 0
    assert report["segments"] == math.ceil(30 / ss.SEGMENT_ENTRIES)
    assert s3_store.requests.count("PUT", ".skseg") == report["segments"]
    assert cache_copy(local, s3_store.url)["skipped"] == 30  # copying twice adds nothing
    info = cache_info(s3_store.url)
    assert info["entries"] == 30 and info["segments"] == report["segments"]
    assert info["models"][0]["model_name"] == tiny_model
    _new_process()
    before = _forward_texts()
    got = BertVectorizer(tiny_model, memory=s3_store.url).fit_transform(texts)
    assert _forward_texts() == before
    np.testing.assert_array_equal(got, fresh)

    # Many small calls leave small segments; compaction packs them, deduplicated.
    more = _corpus(12, seed=6)
    for i in range(0, 12, 3):
        BertVectorizer(tiny_model, memory=s3_store.url).fit_transform(more[i : i + 3])
    assert cache_info(s3_store.url)["segments"] == report["segments"] + 4
    compacted = cache_compact(s3_store.url)
    assert compacted["segments_after"] < compacted["segments_before"]
    info = cache_info(s3_store.url)
    assert info["entries"] == 42
    assert cache_verify(s3_store.url)["ok"] == 42
    _new_process()
    before = _forward_texts()
    BertVectorizer(tiny_model, memory=s3_store.url).fit_transform(texts + more)
    assert _forward_texts() == before

    # Bucket -> another machine's local disk: the local store then serves everything.
    local2 = tmp_path / "local2"
    assert cache_copy(s3_store.url, local2)["copied"] == 42
    assert cache_info(local2)["entries"] == 42
    before = _forward_texts()
    got = BertVectorizer(tiny_model, memory=local2).fit_transform(texts)
    assert _forward_texts() == before
    np.testing.assert_array_equal(got, fresh)

    # The command line, in a real process configured by the environment.
    cmd = [sys.executable, "-m", "skbert", "cache"]
    env = {**os.environ, **s3_store.env}
    out = subprocess.run(cmd + ["info", s3_store.url, "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["entries"] == 42
    out = subprocess.run(cmd + ["verify", s3_store.url], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "42 ok" in out.stdout, out.stderr

    cleared = cache_clear(s3_store.url)
    assert cleared["removed"] == 42 and cleared["bytes_after"] == 0
    assert s3_store.objects() == {}
    assert cache_info(s3_store.url)["entries"] == 0


def test_s3_compaction_drops_duplicates_of_full_segments(tiny_model, s3_store):
    # issue 19, item 8: two overlapping writers leave full segments holding the
    # same entries; compaction skipped full segments, and cache_info counted twice.
    texts = _corpus(40, seed=23)
    BertVectorizer(tiny_model, memory=s3_store.url).fit_transform(texts)
    keys = _segment_keys(s3_store)
    assert len(keys) == 3  # 16 + 16 + 8 entries: none small
    keys = sorted(keys, key=lambda k: not k.endswith("-16.skseg"))  # the two full ones first
    client = s3_store.client()

    def entries(key):
        body = client.get_object(Bucket=s3_store.bucket, Key=key)["Body"].read()
        return list(ss.read_segment(body, key.rsplit("/", 1)[1]))

    # What the other writer published: half of each of the first two segments.
    overlap = dict(entries(keys[0])[:8] + entries(keys[1])[8:])
    name, data = ss.pack_segment(overlap)
    client.put_object(Bucket=s3_store.bucket, Key=keys[0].rsplit("/", 1)[0] + "/" + name, Body=data)
    assert cache_info(s3_store.url)["entries"] == 56

    report = cache_compact(s3_store.url)
    assert report["duplicates_removed"] == 16
    assert cache_info(s3_store.url)["entries"] == 40
    assert cache_verify(s3_store.url)["ok"] == 40
    assert cache_compact(s3_store.url)["segments_merged"] == 0  # nothing left to do
    _new_process()
    before = _forward_texts()
    got = BertVectorizer(tiny_model, memory=s3_store.url).fit_transform(texts)
    assert _forward_texts() == before
    np.testing.assert_array_equal(got, BertVectorizer(tiny_model).fit_transform(texts))


def test_s3_unreachable_store_warns_and_computes(tiny_model, s3_store):
    # A bucket that does not exist: one warning, features computed uncached.
    url = f"s3://{s3_store.bucket}-missing/cache"
    texts = _corpus(4)
    with pytest.warns(FeatureCacheWarning, match="cannot"):
        got = BertVectorizer(tiny_model, memory=url).fit_transform(texts)
    np.testing.assert_array_equal(got, BertVectorizer(tiny_model).fit_transform(texts))


# ------------------------------------------------------------ file:// folders
def test_file_url_uses_segments_on_a_shared_folder(tiny_model, tmp_path):
    texts = _corpus(20, seed=8)
    folder = tmp_path / "shared"
    url = folder.as_uri()
    fresh = BertVectorizer(tiny_model).fit_transform(texts)
    got = BertVectorizer(tiny_model, memory=url).fit_transform(texts)
    np.testing.assert_array_equal(got, fresh)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    segments = [p for p in files if p.suffix == ".skseg"]
    assert len(segments) == math.ceil(20 / ss.SEGMENT_ENTRIES)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in segments)
    assert not [p for p in files if p.name.startswith(".tmp.")]
    _new_process()
    before = _forward_texts()
    np.testing.assert_array_equal(BertVectorizer(tiny_model, memory=url).fit_transform(texts), fresh)
    assert _forward_texts() == before
    assert cache_info(url)["entries"] == 20 and cache_verify(url)["damaged"] == []


def _tree(folder):
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def test_file_url_never_follows_a_planted_link(tiny_model, tmp_path):
    # issue 19, item 1: <store>/<namespace>/attn pointing elsewhere.
    from skbert._cache.format import STORE_DIR

    texts = _corpus(6, seed=19)
    folder = tmp_path / "shared"
    url = folder.as_uri()
    want = BertVectorizer(tiny_model, pooling="attention").fit_transform(texts)
    BertVectorizer(tiny_model, memory=url, pooling="attention").fit_transform(texts)
    (ns,) = [p for p in (folder / STORE_DIR).iterdir() if p.is_dir()]
    # The real attention segments move out of the store; a link points at them.
    outside = tmp_path / "outside"
    os.rename(ns / "attn", outside)
    (ns / "attn").symlink_to(outside)
    before_outside = _tree(outside)
    assert any(name.endswith(".skseg") for name in before_outside)

    _new_process()
    before = _forward_texts()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        vec = BertVectorizer(tiny_model, memory=url, pooling="attention")
        got = vec.fit_transform(texts + ["one more text"])
    # Nothing read through the link (every text computed), nothing written there.
    assert _forward_texts() - before == len(texts) + 1
    np.testing.assert_allclose(got[: len(texts)], want, rtol=0, atol=1e-6)
    assert _tree(outside) == before_outside
    messages = [str(w.message) for w in record if issubclass(w.category, FeatureCacheWarning)]
    assert len(messages) == 1 and "symlink" in messages[0]

    # Nor do the tools: the link is listed as nothing, and removed itself.
    assert cache_info(url)["entries"] == len(texts)  # the base kind only
    cache_verify(url)
    cache_compact(url)
    cache_clear(url, max_bytes=0)
    cache_clear(url)
    assert _tree(outside) == before_outside
    assert not (ns / "attn").exists() and not (ns / "attn").is_symlink()
