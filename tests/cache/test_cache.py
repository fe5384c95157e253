"""The on-disk feature cache: one forward pass per unique text, whatever happens.

Forward passes are counted with ``skbert._model.backend.forward_counts()`` in this
process and with ``SKBERT_FORWARD_LOG`` across processes, never by timing.
Concurrency, crashes and damage use real processes and real files.
"""

import argparse
import errno
import io
import json
import os
import pickle
import random
import signal
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

import skbert
from skbert import BertVectorizer, FeatureCacheWarning, cache_clear, cache_info, cache_verify
from skbert._cache.format import FORMAT_VERSION, STORE_DIR
from skbert._cache.local import FeatureCache
from skbert._model import backend as _backend
from skbert._testing import TINY_WORDS, make_tiny_model
from skbert.cli.cache import add_cache_parser


# --------------------------------------------------------------------- helpers
def _forward_texts():
    return _backend.forward_counts()["texts"]


def _corpus(n, seed=0, words=8):
    rng = random.Random(seed)
    return [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(1, words))) for _ in range(n)]


def _entry_files(memory, kind=None):
    root = Path(memory) / STORE_DIR
    files = []
    for ns in sorted(p for p in root.iterdir() if p.is_dir() and len(p.name) == 32):
        for kind_dir in sorted(ns.iterdir()):
            if not kind_dir.is_dir() or (kind is not None and kind_dir.name != kind):
                continue
            files += sorted(f for f in kind_dir.glob("*/*") if not f.name.startswith(".tmp"))
    return files


def _cache_warnings(record):
    return [w for w in record if issubclass(w.category, FeatureCacheWarning)]


#: Child processes use one thread each: the tests share few cores.
_CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(script, *args, env=None, timeout=120):
    full_env = {**os.environ, **_CHILD_ENV, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True, text=True, env=full_env, timeout=timeout,
    )


def _log_texts(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(int(line.split()[1]) for line in f if line.strip())


# ------------------------------------------------------------- core promise
@pytest.mark.parametrize(
    "params",
    [
        dict(layers=-1, pooling="mean"),
        dict(layers=[0, 2], pooling="mean_max", exclude_special_tokens=True),
        dict(layers="all", pooling="cls", layer_agg="mean"),
        dict(layers=1, pooling="max", whitening="whiten"),
    ],
)
def test_cached_equals_fresh_bitwise(tiny_model, texts, tmp_path, params):
    fresh = BertVectorizer(tiny_model, **params).fit_transform(texts)
    n_unique = len(set(texts))
    before = _forward_texts()
    cold = BertVectorizer(tiny_model, memory=tmp_path, **params)
    got_cold = cold.fit_transform(texts)
    assert _forward_texts() - before == n_unique
    assert cold.last_cache_stats_["misses"] == n_unique
    before = _forward_texts()
    warm = BertVectorizer(tiny_model, memory=tmp_path, **params)
    got_warm = warm.fit_transform(texts)
    assert _forward_texts() == before
    assert warm.last_cache_stats_["hits"] == n_unique and warm.last_cache_stats_["misses"] == 0
    np.testing.assert_array_equal(got_cold, fresh)
    np.testing.assert_array_equal(got_warm, fresh)


def test_any_layer_and_pooling_hits_after_one_pass(tiny_model, texts, tmp_path):
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
    cached_forward = 0
    for layers in (0, -1, [0, 1, 2], "all"):
        for pooling in ("cls", "mean", "max", "mean_max"):
            for exclude in (False, True):
                params = dict(layers=layers, pooling=pooling, exclude_special_tokens=exclude)
                before = _forward_texts()
                got = BertVectorizer(tiny_model, memory=tmp_path, **params).fit_transform(texts)
                cached_forward += _forward_texts() - before
                want = BertVectorizer(tiny_model, **params).fit_transform(texts)
                np.testing.assert_array_equal(got, want)
    # Batch size, token budget, device and verbosity are not part of the key.
    before = _forward_texts()
    BertVectorizer(
        tiny_model, memory=tmp_path, batch_size=1, max_batch_tokens=None, device="cpu", verbose=True
    ).fit_transform(texts)
    assert cached_forward == 0 and _forward_texts() == before


def test_memory_none_writes_nothing_and_sets_no_stats(tiny_model, texts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vec = BertVectorizer(tiny_model).fit(texts)
    vec.transform(texts)
    assert not hasattr(vec, "last_cache_stats_")
    assert list(tmp_path.iterdir()) == []


def test_attention_statistics_only_when_needed_and_only_for_missing(tiny_model, tmp_path):
    first, second = _corpus(12, seed=1), _corpus(12, seed=2)
    first, second = list(dict.fromkeys(first)), [t for t in dict.fromkeys(second) if t not in first]
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(first)
    assert _entry_files(tmp_path, "attn") == []
    assert len(_entry_files(tmp_path, "base")) == len(first)

    before = _forward_texts()
    vec = BertVectorizer(tiny_model, memory=tmp_path, pooling="attention")
    got = vec.fit_transform(first)
    assert _forward_texts() - before == len(first)  # attention maps were missing
    np.testing.assert_array_equal(
        got, BertVectorizer(tiny_model, pooling="attention").fit_transform(first)
    )
    assert len(_entry_files(tmp_path, "attn")) == len(first)

    before = _forward_texts()
    got = vec.fit_transform(first + second)
    assert _forward_texts() - before == len(second)  # the missing texts only
    np.testing.assert_allclose(
        got, BertVectorizer(tiny_model, pooling="attention").fit_transform(first + second), atol=1e-6
    )
    # The store now holds both kinds for every text; nothing runs again.
    before = _forward_texts()
    for pooling in ("attention", "mean", "max"):
        BertVectorizer(tiny_model, memory=tmp_path, pooling=pooling).fit_transform(first + second)
    assert _forward_texts() == before


def test_warm_run_loads_no_model(tiny_model, texts, tmp_path, monkeypatch):
    BertVectorizer(tiny_model, memory=tmp_path, layers="all").fit_transform(texts)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded on a warm run")

    monkeypatch.setattr(_backend, "_MODELS", {})
    monkeypatch.setattr(_backend, "load_model", no_loading)
    vec = BertVectorizer(tiny_model, memory=tmp_path, layers=[1, 2], pooling="max")
    vec.fit_transform(texts)
    vec.transform(texts[:3])
    assert _backend._MODELS == {}
    # A miss does need the model.
    with pytest.raises(AssertionError, match="loaded"):
        vec.transform(["a text never seen before"])


def test_hit_miss_counts_in_python_and_in_info(tiny_model, texts, tmp_path):
    vec = BertVectorizer(tiny_model, memory=tmp_path).fit(texts)
    vec.transform(texts[:3])
    assert vec.last_cache_stats_["misses"] == 3 and vec.last_cache_stats_["hits"] == 0
    vec.transform(texts)
    n = len(set(texts))
    assert vec.last_cache_stats_["hits"] == 3 and vec.last_cache_stats_["misses"] == n - 3
    info = cache_info(tmp_path)
    assert info["entries"] == n and info["last_call"]["hits"] == 3
    assert info["last_call"]["misses"] == n - 3
    (model,) = info["models"]
    assert model["model_name"] == tiny_model and model["kinds"]["base"]["entries"] == n
    # Bytes per text: 3 hidden states x 5 statistics x 32 floats x 4 bytes, plus 80 bytes.
    assert model["bytes"] == n * (3 * 5 * 32 * 4 + 80)


def test_clone_and_pickle_keep_cache_small_and_working(tiny_model, texts, tmp_path):
    vec = BertVectorizer(tiny_model, memory=str(tmp_path), whitening="center").fit(texts)
    blob = pickle.dumps(vec)
    assert len(blob) < 20_000
    before = _forward_texts()
    np.testing.assert_array_equal(pickle.loads(blob).transform(texts), vec.transform(texts))
    np.testing.assert_array_equal(clone(vec).fit_transform(texts), vec.fit_transform(texts))
    assert _forward_texts() == before


def test_parameter_validation(tiny_model, texts):
    with pytest.raises(ValueError, match="'cache_dtype' parameter of BertVectorizer"):
        BertVectorizer(tiny_model, memory="x", cache_dtype="float64").fit(texts)
    with pytest.raises(ValueError, match="'cache_max_bytes' parameter of BertVectorizer"):
        BertVectorizer(tiny_model, memory="x", cache_max_bytes=0).fit(texts)


def test_float16_storage_halves_the_size(tiny_model, texts, tmp_path):
    want = BertVectorizer(tiny_model, layers="all").fit_transform(texts)
    BertVectorizer(tiny_model, memory=tmp_path, layers="all", cache_dtype="float16").fit_transform(texts)
    before = _forward_texts()
    got = BertVectorizer(tiny_model, memory=tmp_path, layers="all", cache_dtype="float16").fit_transform(texts)
    assert _forward_texts() == before
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
    half = cache_info(tmp_path)["bytes"]
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)  # float32: its own entries
    info = cache_info(tmp_path)
    assert len(info["models"]) == 2
    assert info["bytes"] - half == len(set(texts)) * (3 * 5 * 32 * 4 + 80)
    assert half == len(set(texts)) * (3 * 5 * 32 * 2 + 80)


# ------------------------------------------------------------------- the key
@pytest.mark.filterwarnings("ignore:.*longer than max_length")
def test_changed_model_tokenizer_or_max_length_never_hits_stale(tmp_path, monkeypatch):
    model = tmp_path / "model"
    make_tiny_model(model, seed=0)
    texts = _corpus(10, seed=3, words=20)
    memory = tmp_path / "cache"

    def fresh_process():
        for registry in ("_MODELS", "_CONFIGS", "_TOKENIZERS"):
            monkeypatch.setattr(_backend, registry, {})

    def run(**kw):
        fresh_process()
        before = _forward_texts()
        got = BertVectorizer(str(model), memory=memory, **kw).fit_transform(texts)
        fresh_process()
        want = BertVectorizer(str(model), **kw).fit_transform(texts)
        np.testing.assert_array_equal(got, want)
        return _forward_texts() - before - len(set(texts))  # minus the reference

    n = len(set(texts))
    assert run() == n
    assert run() == 0
    assert run(max_length=6) == n  # other tokenisation
    make_tiny_model(model, seed=1)  # same path, new weights
    assert run() == n
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["truncation_side"] = "left"
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    assert run(max_length=6) == n  # same weights, other tokenizer
    assert run(max_length=6) == 0
    assert len(cache_info(memory)["models"]) == 4


def test_fingerprint_depends_on_content_not_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_tiny_model(a, seed=0)
    make_tiny_model(b, seed=0)
    fa = _backend.model_fingerprint(_backend.ModelSpec(str(a)))
    fb = _backend.model_fingerprint(_backend.ModelSpec(str(b)))
    assert fa == fb and len(fa) == 64
    make_tiny_model(b, seed=2)
    assert _backend.model_fingerprint(_backend.ModelSpec(str(b))) != fa


def test_hub_id_is_keyed_by_resolved_commit(tiny_model, tmp_path):
    """A hub id resolves, offline, through a Hugging Face cache laid out by hand."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in Path(tiny_model).iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = """
        import json, os, sys
        from skbert import BertVectorizer
        from skbert._model import backend as _backend

        def encode():
            vec = BertVectorizer("someone/tiny", memory=sys.argv[1])
            vec.fit_transform(["a good movie", "a bad film"])
            spec = _backend.ModelSpec("someone/tiny")
            return {"fp": _backend.model_fingerprint(spec), **vec.last_cache_stats_}

        runs = [encode()]
        if sys.argv[2] == "move":  # the repo's main branch moves to another commit
            repo = sys.argv[3]
            os.rename(os.path.join(repo, "snapshots", sys.argv[4]), os.path.join(repo, "snapshots", "f" * 40))
            open(os.path.join(repo, "refs", "main"), "w").write("f" * 40)
            runs.append(encode())
        print(json.dumps(runs))
    """
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = _run(script, tmp_path / "cache", "cold", env=env)
    assert out.returncode == 0, out.stderr
    (cold,) = json.loads(out.stdout.strip().splitlines()[-1])
    assert cold["fp"] and cold["misses"] == 2
    out = _run(script, tmp_path / "cache", "move", repo, commit, env=env)
    assert out.returncode == 0, out.stderr
    warm, moved = json.loads(out.stdout.strip().splitlines()[-1])
    assert warm["fp"] == cold["fp"] and warm["hits"] == 2 and warm["misses"] == 0
    assert moved["fp"] != cold["fp"] and moved["misses"] == 2


# ------------------------------------------------------ processes at once
_GRID_SCRIPT = """
    import json, os, sys
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from skbert import BertVectorizer
    from skbert._testing import TINY_WORDS

    model, memory, log, memory_serial = sys.argv[1:5]
    rng = np.random.RandomState(0)
    good = set("good great excellent wonderful best love like enjoy fun happy nice".split())
    texts = [" ".join(rng.choice(TINY_WORDS, rng.randint(2, 9))) for _ in range(51)]
    texts += [" ".join(rng.choice(TINY_WORDS, n)) for n in (40, 70, 90)]  # long ones
    texts += texts[:6]  # duplicates
    y = np.array([int(any(w in good for w in t.split())) for t in texts])

    def count():
        if not os.path.exists(log):
            return 0
        return sum(int(line.split()[1]) for line in open(log))

    grid = {
        "vec__layers": [0, -1, [1, 2]],
        "vec__pooling": ["mean", "max"],
        "vec__exclude_special_tokens": [False, True],
        "clf__C": [0.1, 10.0],
    }
    def search(memory, n_jobs):
        pipe = Pipeline([("vec", BertVectorizer(model, memory=memory)),
                         ("clf", LogisticRegression(max_iter=500))])
        return GridSearchCV(pipe, grid, cv=3, n_jobs=n_jobs,
                            scoring="neg_log_loss").fit(texts, y)

    cold = search(memory, 2)
    n_cold = count()
    warm = search(memory, 2)
    n_warm = count() - n_cold
    serial = search(memory_serial, 1)  # its own cold cache, one process
    scores = [s.cv_results_["split0_test_score"] for s in (cold, warm, serial)]
    features = [
        BertVectorizer(model, memory=m, layers="all", pooling=p).fit_transform(texts)
        for m in (memory, memory_serial) for p in ("mean", "max")
    ]
    print(json.dumps({
        "same_features": all(np.array_equal(a, b) for a, b in zip(features[:2], features[2:])),
        "cold": n_cold, "warm": n_warm, "unique": len(set(texts)),
        "same_scores": bool(np.array_equal(scores[0], scores[1])),
        "same_as_serial": bool(np.array_equal(scores[0], scores[2])),
    }))
"""


def test_gridsearch_n_jobs_2_runs_the_model_once_per_unique_text(tiny_model, tmp_path):
    log = tmp_path / "forward.log"
    out = _run(_GRID_SCRIPT, tiny_model, tmp_path / "cache", log, tmp_path / "serial",
               env={"SKBERT_FORWARD_LOG": str(log)})
    assert out.returncode == 0, out.stderr
    assert "FeatureCacheWarning" not in out.stderr and "locked" not in out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["cold"] == result["unique"]
    assert result["warm"] == 0
    assert result["same_scores"]
    # Which process computes a text first (its batch partners) changes nothing (#19.4).
    assert result["same_features"] and result["same_as_serial"]
    report = cache_verify(tmp_path / "cache")
    assert report["damaged"] == [] and report["ok"] == result["unique"]


_ENCODE_SCRIPT = """
    import json, sys
    import numpy as np
    from skbert import BertVectorizer
    model, memory, texts_file, out_file = sys.argv[1:5]
    texts = json.load(open(texts_file))
    X = BertVectorizer(model, memory=memory, layers="all", batch_size=8).fit_transform(texts)
    np.save(out_file, X)
"""


def test_two_scripts_sharing_a_directory(tiny_model, tmp_path):
    texts_a = list(dict.fromkeys(_corpus(150, seed=4)))
    texts_b = list(dict.fromkeys(texts_a[75:] + _corpus(75, seed=5)))
    log = tmp_path / "forward.log"
    env = {**os.environ, **_CHILD_ENV, "SKBERT_FORWARD_LOG": str(log)}
    procs = []
    for name, texts in (("a", texts_a), ("b", texts_b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(texts))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_ENCODE_SCRIPT), tiny_model,
             str(tmp_path / "cache"), str(tmp_path / f"{name}.json"), str(tmp_path / f"{name}.npy")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "FeatureCacheWarning" not in err and "locked" not in err
    # Each text ran through the model in exactly one of the two processes.
    assert _log_texts(log) == len(set(texts_a) | set(texts_b))
    for name, texts in (("a", texts_a), ("b", texts_b)):
        want = BertVectorizer(tiny_model, layers="all", batch_size=8).fit_transform(texts)
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), want, atol=1e-5)
    report = cache_verify(tmp_path / "cache")
    assert report["damaged"] == [] and report["ok"] == len(set(texts_a) | set(texts_b))


# -------------------------------------------------------------- crashes
_STORE_WRITER = """
    import sys
    import numpy as np
    from skbert._cache.local import FeatureCache
    memory = sys.argv[1]
    ns = FeatureCache(memory).namespace({"test": "sigkill"})
    i = 0
    while True:
        key = ns.keys("k", [str(i)])
        value = np.full((1, 64, 1024), i, dtype=np.float32)  # 256 KiB per entry
        ns.write("k", key, value[None], np.array([[i, i]]))
        if i == 20:
            print("ready", flush=True)
        i += 1
"""


def test_sigkill_during_writes_leaves_a_consistent_store(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_STORE_WRITER), str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **_CHILD_ENV},
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    report = cache_verify(tmp_path)
    assert report["damaged"] == []
    n = report["ok"]
    assert n >= 21
    ns = FeatureCache(tmp_path).namespace({"test": "sigkill"})
    found, values, counts = ns.read("k", ns.keys("k", [str(i) for i in range(n + 5)]), (1, 64, 1024))
    assert found[:n].all() and not found[n:].any()
    for i in np.flatnonzero(found):
        assert (values[i] == i).all() and (counts[i] == i).all()
    assert cache_info(tmp_path)["temporary"] == 0  # verify removed the dead writer's leftovers


_KILLED_MID_WRITE = """
    import os, signal, sys
    from skbert import BertVectorizer
    from skbert._cache.format import STORE_DIR
    model, memory, n_writes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = os.path.realpath(os.path.join(memory, STORE_DIR))
    real_write, seen = os.write, [0]

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(store):
            seen[0] += 1
            if seen[0] == n_writes:  # die with half an entry on disk
                real_write(fd, bytes(data)[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return real_write(fd, data)

    os.write = write
    texts = [f"text {i} " + " ".join(["good"] * (i % 7)) for i in range(400)]
    BertVectorizer(model, memory=memory, batch_size=8).fit_transform(texts)
"""


def test_killed_mid_write_next_run_completes_the_cache(tiny_model, tmp_path):
    memory = tmp_path / "cache"
    out = _run(_KILLED_MID_WRITE, tiny_model, memory, 150)
    assert out.returncode == -signal.SIGKILL, out.stderr
    info = cache_info(memory)
    assert info["temporary"] == 1  # the half-written entry was never published
    published = info["entries"]
    assert 100 < published < 400
    texts = [f"text {i} " + " ".join(["good"] * (i % 7)) for i in range(400)]
    before = _forward_texts()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = BertVectorizer(tiny_model, memory=memory, batch_size=8).fit_transform(texts)
    assert _cache_warnings(record) == []
    assert _forward_texts() - before == 400 - published
    want = BertVectorizer(tiny_model, batch_size=8).fit_transform(texts)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert cache_info(memory)["entries"] == 400
    report = cache_verify(memory)
    assert report["damaged"] == [] and report["temporary_removed"] == 1


# --------------------------------------------------------------- damage
def _damage(path, how, other):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "extended":
        path.write_bytes(data + b"\0")
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif how == "bitflip":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10  # inside the float values
        path.write_bytes(bytes(flipped))
    elif how == "swapped":  # a valid entry of another text under this name
        path.write_bytes(other.read_bytes())
    elif how == "symlink":
        path.unlink()
        path.symlink_to(other)


@pytest.mark.parametrize(
    "how", ["truncated", "empty", "extended", "garbage", "bitflip", "swapped", "symlink"]
)
def test_damaged_entry_warns_once_is_quarantined_and_recomputed(
    tiny_model, texts, tmp_path, how, monkeypatch
):
    # What a reader finds on disk: without the in-memory layer, which would
    # serve this process its own (correct) copy of the entry it wrote.
    monkeypatch.setenv("SKBERT_CACHE_MEMORY_BYTES", "0")
    want = BertVectorizer(tiny_model, layers="all").fit_transform(texts)
    BertVectorizer(tiny_model, memory=tmp_path, layers="all").fit_transform(texts)
    victim, other = _entry_files(tmp_path)[:2]
    other_bytes = other.read_bytes()
    _damage(victim, how, other)
    before = _forward_texts()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = BertVectorizer(tiny_model, memory=tmp_path, layers="all").fit_transform(texts)
    (warning,) = _cache_warnings(record)
    assert "damaged" in str(warning.message) and "quarantine" in str(warning.message)
    assert _forward_texts() - before == 1
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert cache_info(tmp_path)["quarantined"] == 1
    assert other.read_bytes() == other_bytes  # a symlink's target is never touched
    assert not victim.is_symlink() and cache_verify(tmp_path)["damaged"] == []
    before = _forward_texts()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        again = BertVectorizer(tiny_model, memory=tmp_path, layers="all").fit_transform(texts)
    assert _cache_warnings(record) == [] and _forward_texts() == before
    np.testing.assert_array_equal(again, got)


def test_verify_finds_and_quarantines_damage(tiny_model, texts, tmp_path):
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
    files = _entry_files(tmp_path)
    _damage(files[0], "bitflip", None)
    _damage(files[1], "symlink", files[2])
    report = cache_verify(tmp_path)
    assert sorted(report["damaged"]) == sorted(map(str, files[:2]))
    assert report["ok"] == len(files) - 2
    assert cache_verify(tmp_path)["damaged"] == []
    assert cache_info(tmp_path)["quarantined"] == 2


def test_symlinked_store_folder_is_refused(tiny_model, texts, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    memory = tmp_path / "cache"
    memory.mkdir()
    (memory / STORE_DIR).symlink_to(elsewhere)
    want = BertVectorizer(tiny_model).fit_transform(texts)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = BertVectorizer(tiny_model, memory=memory).fit_transform(texts)
    assert len(_cache_warnings(record)) == 1
    np.testing.assert_array_equal(got, want)
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(OSError, match="not a real directory"):
        cache_info(memory)


# ------------------------------------------------------- unusable folders
def test_unwritable_directory_warns_once_and_computes(tiny_model, texts, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    want = BertVectorizer(tiny_model).fit_transform(texts)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        vec = BertVectorizer(tiny_model, memory=blocker / "cache")
        got = vec.fit_transform(texts)
        vec.transform(texts)
        clone(vec).fit_transform(texts)
    (warning,) = _cache_warnings(record)
    assert "without caching" in str(warning.message)
    np.testing.assert_array_equal(got, want)
    assert blocker.read_text() == "not a directory"


def test_disk_full_warns_once_and_leaves_no_partial_state(tiny_model, texts, tmp_path, monkeypatch):
    store = os.path.realpath(tmp_path / STORE_DIR)
    real_write = os.write

    def full_disk(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(store):
            real_write(fd, bytes(data)[: len(data) // 2])  # a short write, then no space
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    want = BertVectorizer(tiny_model).fit_transform(texts)
    monkeypatch.setattr(os, "write", full_disk)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
        BertVectorizer(tiny_model, memory=tmp_path, pooling="max").fit_transform(texts)
    monkeypatch.undo()
    (warning,) = _cache_warnings(record)
    assert "No space left" in str(warning.message)
    np.testing.assert_array_equal(got, want)
    info = cache_info(tmp_path)
    assert info["entries"] == 0 and info["temporary"] == 0
    # Once space is back, the cache fills normally.
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
    assert cache_info(tmp_path)["entries"] == len(set(texts))


def test_owner_only_permissions(tiny_model, texts, tmp_path):
    memory = tmp_path / "cache"
    BertVectorizer(tiny_model, memory=memory, pooling="attention").fit_transform(texts)
    root = memory / STORE_DIR
    modes = {p: stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}
    assert modes[root] == 0o700
    for path, mode in modes.items():
        assert mode == (0o700 if path.is_dir() else 0o600), path


# ------------------------------------------------------------------- size
def test_size_cap_evicts_least_recently_used(tiny_model, tmp_path):
    texts = list(dict.fromkeys(_corpus(60, seed=6)))
    entry = 3 * 5 * 32 * 4 + 80
    cap = 20 * entry
    want = BertVectorizer(tiny_model).fit_transform(texts)
    vec = BertVectorizer(tiny_model, memory=tmp_path, cache_max_bytes=cap)
    np.testing.assert_array_equal(vec.fit_transform(texts), want)
    info = cache_info(tmp_path)
    assert 0 < info["bytes"] <= cap
    report = cache_clear(tmp_path, max_bytes=5 * entry)
    assert report["bytes_after"] <= 5 * entry and cache_info(tmp_path)["bytes"] <= 5 * entry
    np.testing.assert_allclose(vec.fit_transform(texts), want, atol=1e-6)


def test_size_cap_takes_units(tiny_model, tmp_path):
    texts = list(dict.fromkeys(_corpus(60, seed=6)))
    entry = 3 * 5 * 32 * 4 + 80
    # "20K" is 20 * 1024 bytes, about 10 entries of this model; eviction
    # goes down to 90% of the cap.
    BertVectorizer(tiny_model, memory=tmp_path, cache_max_bytes="20K").fit_transform(texts)
    info = cache_info(tmp_path)
    assert 0.9 * 20 * 1024 - 2 * entry < info["bytes"] <= 20 * 1024
    assert 0 < info["entries"] < len(texts)
    for bad in ("lots", "0K", "-1M"):
        message = rf"'cache_max_bytes' parameter of BertVectorizer must be .*Got '{bad}' instead"
        with pytest.raises(ValueError, match=message):
            BertVectorizer(tiny_model, memory=tmp_path, cache_max_bytes=bad).fit(texts)


def test_clear_removes_only_the_store(tiny_model, texts, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
    report = cache_clear(tmp_path)
    assert report["removed"] == len(set(texts)) and report["bytes_after"] == 0
    assert cache_info(tmp_path)["entries"] == 0
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    before = _forward_texts()
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
    assert _forward_texts() - before == len(set(texts))


def test_clear_never_follows_symlinks_out_of_the_store(tiny_model, texts, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    memory = tmp_path / "cache"
    BertVectorizer(tiny_model, memory=memory).fit_transform(texts)
    ns_dir = next(p for p in (memory / STORE_DIR).iterdir() if len(p.name) == 32)
    (ns_dir / "base" / "zz").symlink_to(outside)
    (ns_dir / "base" / "ab").mkdir(exist_ok=True)
    (ns_dir / "base" / "ab" / ("0" * 62)).symlink_to(outside / "precious.txt")
    cache_clear(memory)
    assert (outside / "precious.txt").read_text() == "keep me"
    assert list((memory / STORE_DIR).iterdir()) == []


# ------------------------------------------------------------- commands
def _cli(*argv):
    parser = argparse.ArgumentParser(prog="skbert")
    add_cache_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    out = io.StringIO()
    return args.handler(args, out=out), out.getvalue()


def test_cache_command_info_verify_clear(tiny_model, texts, tmp_path):
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
    code, text = _cli("cache", "info", str(tmp_path), "--json")
    info = json.loads(text)
    assert code == 0 and info["entries"] == len(set(texts)) and info["models"][0]["model_name"] == tiny_model
    code, text = _cli("cache", "info", str(tmp_path))
    assert code == 0 and f"entries: {len(set(texts))}" in text and "last call:" in text
    assert _cli("cache", "verify", str(tmp_path))[0] == 0
    _damage(_entry_files(tmp_path)[0], "garbage", None)
    code, text = _cli("cache", "verify", str(tmp_path))
    assert code == 1 and "1 damaged" in text
    code, text = _cli("cache", "clear", str(tmp_path))
    assert code == 0 and cache_info(tmp_path)["entries"] == 0


def test_skbert_command_line_wires_cache(tiny_model, texts, tmp_path):
    from skbert import cli

    if not hasattr(cli, "main"):
        pytest.skip("skbert.cli has no main yet")
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
    out = subprocess.run(
        [sys.executable, "-m", "skbert.cli", "cache", "info", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["entries"] == len(set(texts))


def test_public_api():
    for name in ("cache_info", "cache_verify", "cache_clear", "FeatureCacheWarning"):
        assert name in skbert.__all__
    assert issubclass(FeatureCacheWarning, UserWarning)
    assert FORMAT_VERSION == 1
