"""The feature cache under attack and under contention (issue 12, items 1, 3, 4, 5, 11).

- no cache operation follows a link planted anywhere in the store;
- ``cache_dtype="float16"``: computed and cached values are bitwise equal;
- processes computing disjoint texts never wait for each other, and a stuck
  claimer is given up on after a bounded wait, with a warning;
- unsafe folders (writable or owned by others) are refused, and folders are
  created owner-only whatever the umask;
- ``skbert cache`` on a missing path or a file exits 2; ``--max-bytes`` takes units.

Processes are real, and ordering is proven with files and signals, never
with timings.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from skbert import BertVectorizer, FeatureCacheWarning, cache_clear, cache_info, cache_verify
from skbert._cache.format import STORE_DIR
from skbert._model import backend as _backend
from skbert._testing import TINY_WORDS

_CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(autouse=True)
def _disk_only(monkeypatch):
    # What the disk holds, not this process's in-memory copy of it.
    monkeypatch.setenv("SKBERT_CACHE_MEMORY_BYTES", "0")


def _forward_texts():
    return _backend.forward_counts()["texts"]


def _corpus(n, seed):
    rng = np.random.RandomState(seed)
    texts = [" ".join(rng.choice(TINY_WORDS, rng.randint(2, 9))) + f" {seed}-{i}" for i in range(n)]
    return list(dict.fromkeys(texts))


def _cache_warnings(record):
    return [w for w in record if issubclass(w.category, FeatureCacheWarning)]


def _snapshot(folder):
    """Every path below ``folder`` with its content (files) or kind."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = path.read_bytes() if path.is_file() and not path.is_symlink() else path.is_dir()
    return out


def _namespace(memory):
    root = Path(memory) / STORE_DIR
    return next(p for p in root.iterdir() if len(p.name) == 32 and p.is_dir())


# ----------------------------------------------------------- item 1: links
_PLACES = [
    "quarantine",
    "quarantine-item",
    "last_call.json",
    "namespace.json",
    ".lock",
    ".claims",
    "namespace",
    "kind",
    "shard",
    "entry",
]


def _plant(memory, place, outside):
    """Replace ``place`` in the store by a symlink into ``outside``."""
    root = Path(memory) / STORE_DIR
    ns = _namespace(memory)
    target_dir, target_file = outside, outside / "precious.txt"
    if place == "quarantine":
        (root / "quarantine").mkdir(exist_ok=True)
        os.rename(root / "quarantine", root / "quarantine.old")
        (root / "quarantine").symlink_to(target_dir)
    elif place == "quarantine-item":
        (root / "quarantine").mkdir(exist_ok=True)
        (root / "quarantine" / "an-item").symlink_to(target_file)
    elif place == "last_call.json":
        (root / "last_call.json").unlink()
        (root / "last_call.json").symlink_to(target_file)
    elif place == "namespace.json":
        (ns / "namespace.json").unlink()
        (ns / "namespace.json").symlink_to(target_file)
    elif place == ".lock":
        if (ns / ".lock").exists():
            (ns / ".lock").unlink()
        (ns / ".lock").symlink_to(target_file)
    elif place == ".claims":
        if (ns / ".claims").exists():
            os.rename(ns / ".claims", ns / "claims.old")
        (ns / ".claims").symlink_to(target_dir)
    elif place == "namespace":
        os.rename(ns, root / "moved-namespace")
        ns.symlink_to(target_dir)
    elif place == "kind":
        os.rename(ns / "base", ns / "base.old")
        (ns / "base").symlink_to(target_dir)
    elif place == "shard":
        shard = next((ns / "base").iterdir())
        os.rename(shard, ns / "base" / "old-shard")
        shard.symlink_to(target_dir)
    elif place == "entry":
        entry = next(next((ns / "base").iterdir()).iterdir())
        entry.unlink()
        entry.symlink_to(target_file)


def _outside(tmp_path):
    """A folder outside the cache with files named like everything the store holds."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    for name in ("a" * 62, "namespace.json", "last_call.json", ".lock", "x.123"):
        (outside / name).write_text(f"keep {name}")
    (outside / "ab").mkdir()
    (outside / "ab" / ("c" * 62)).write_text("keep nested")
    return outside


@pytest.mark.parametrize("place", _PLACES)
def test_no_cache_operation_follows_a_planted_link(tiny_model, tmp_path, place):
    from skbert.cli import main

    texts = _corpus(6, seed=1)
    memory = tmp_path / "cache"
    want = BertVectorizer(tiny_model).fit_transform(texts)
    BertVectorizer(tiny_model, memory=memory).fit_transform(texts)
    outside = _outside(tmp_path)
    before = _snapshot(outside)
    _plant(memory, place, outside)
    # Damage an entry too, so that reading quarantines something.
    ns = _namespace(memory)
    if (ns / "base").is_dir() and not (ns / "base").is_symlink():
        for shard in (ns / "base").iterdir():
            entries = [e for e in shard.iterdir() if not e.is_symlink()] if shard.is_dir() else []
            if not shard.is_symlink() and entries:
                entries[0].write_bytes(b"garbage")
                break

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FeatureCacheWarning)
        got = BertVectorizer(tiny_model, memory=memory).fit_transform(texts + ["one more text"])
        np.testing.assert_allclose(got[: len(texts)], want, atol=1e-6)
        assert _snapshot(outside) == before
        # Eviction by the vectorizer's cap (each entry is 2,000 bytes).
        BertVectorizer(tiny_model, memory=memory, cache_max_bytes=2_500).fit_transform(
            texts + ["yet another text"]
        )
        assert _snapshot(outside) == before
    cache_info(memory)
    cache_verify(memory)
    assert _snapshot(outside) == before
    _plant_again = place in ("quarantine", "quarantine-item")
    if _plant_again and not (memory / STORE_DIR / "quarantine").is_symlink():
        # verify may have set the link aside: plant it again for eviction.
        if place == "quarantine":
            os.rename(memory / STORE_DIR / "quarantine", memory / STORE_DIR / "q2")
            (memory / STORE_DIR / "quarantine").symlink_to(outside)
        else:
            (memory / STORE_DIR / "quarantine" / "again").symlink_to(outside / "precious.txt")
    cache_clear(memory, max_bytes=0)
    assert _snapshot(outside) == before
    assert main(["cache", "clear", str(memory), "--max-bytes", "0"]) == 0
    cache_clear(memory)
    assert _snapshot(outside) == before
    assert main(["cache", "clear", str(memory)]) == 0
    assert _snapshot(outside) == before
    assert cache_info(memory)["entries"] == 0


# -------------------------------------------------------- item 3: float16
@pytest.mark.parametrize("cache_dtype", ["float16", "float32"])
def test_cold_warm_and_mixed_calls_are_bitwise_equal(tiny_model, tmp_path, cache_dtype):
    texts = _corpus(12, seed=2)
    # batch_size=1: each text alone, so values do not depend on batch mates.
    params = dict(layers="all", batch_size=1, cache_dtype=cache_dtype)
    cold = BertVectorizer(tiny_model, memory=tmp_path / "a", **params).fit_transform(texts)
    before = _forward_texts()
    warm = BertVectorizer(tiny_model, memory=tmp_path / "a", **params).fit_transform(texts)
    assert _forward_texts() == before
    BertVectorizer(tiny_model, memory=tmp_path / "b", **params).fit_transform(texts[::2])
    before = _forward_texts()
    mixed = BertVectorizer(tiny_model, memory=tmp_path / "b", **params).fit_transform(texts)
    assert _forward_texts() - before == len(texts[1::2])  # hits and misses in one call
    np.testing.assert_array_equal(cold, warm)
    np.testing.assert_array_equal(mixed, warm)
    fresh = BertVectorizer(tiny_model, layers="all", batch_size=1).fit_transform(texts)
    if cache_dtype == "float16":
        np.testing.assert_array_equal(cold, fresh.astype(np.float16).astype(np.float32))
        assert not np.array_equal(cold, fresh)
    else:
        np.testing.assert_array_equal(cold, fresh)


# ------------------------------------------------ item 4: claims, bounded waits
_ENCODER = """
    import json, os, sys, time, warnings
    import numpy as np
    import skbert._extraction.cached as cx
    from skbert import BertVectorizer, FeatureCacheWarning

    model, memory, texts_file, out_file, started, go = sys.argv[1:7]
    real = cx.iter_statistics

    def blocking(*args, **kwargs):
        # Stop inside the computation (texts claimed, first batch computed)
        # until the test says go.
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 0 and started != "-" and not os.path.exists(started):
                open(started, "w").close()
                deadline = time.monotonic() + 300
                while not os.path.exists(go):
                    if time.monotonic() > deadline:
                        sys.exit("never released")
                    time.sleep(0.02)
            yield item

    cx.iter_statistics = blocking
    texts = json.load(open(texts_file))
    vec = BertVectorizer(model, memory=memory, layers="all", batch_size=4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        X = vec.fit_transform(texts)
    np.save(out_file, X)
    print(json.dumps({
        "warnings": [str(w.message) for w in record if issubclass(w.category, FeatureCacheWarning)],
        "hits": vec.last_cache_stats_["hits"],
        "misses": vec.last_cache_stats_["misses"],
    }))
"""


def _encoder(tmp_path, name, model, memory, texts, *, block=False, env=None):
    (tmp_path / f"{name}.json").write_text(json.dumps(texts))
    started = tmp_path / f"{name}.started" if block else "-"
    go = tmp_path / f"{name}.go" if block else "-"
    args = [
        sys.executable, "-c", textwrap.dedent(_ENCODER), model, memory,
        tmp_path / f"{name}.json", tmp_path / f"{name}.npy", started, go,
    ]
    full_env = {**os.environ, **_CHILD_ENV, "SKBERT_CACHE_MEMORY_BYTES": "0", **(env or {})}
    return subprocess.Popen(
        [str(a) for a in args], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path, proc, what):
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if proc.poll() is not None:
            pytest.fail(f"{what} exited early: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} never got there")
        time.sleep(0.02)


def _finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _log_by_pid(path):
    counts = {}
    if os.path.exists(path):
        for line in open(path):
            if line.strip():
                pid, n = line.split()
                counts[int(pid)] = counts.get(int(pid), 0) + int(n)
    return counts


def _check_vectors(tmp_path, tiny_model, name, texts):
    want = BertVectorizer(tiny_model, layers="all", batch_size=4).fit_transform(texts)
    np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), want, atol=1e-5)


def test_disjoint_texts_never_wait_for_a_long_computation(tiny_model, tmp_path):
    memory, log = tmp_path / "cache", tmp_path / "forward.log"
    env = {"SKBERT_FORWARD_LOG": str(log)}
    texts_a, texts_b = _corpus(40, seed=3), _corpus(10, seed=4)
    a = _encoder(tmp_path, "a", tiny_model, memory, texts_a, block=True, env=env)
    try:
        _wait_for(tmp_path / "a.started", a, "process A")
        # A holds its claim and is stopped inside its computation; B, with
        # other texts, runs to its end meanwhile.
        b = _encoder(tmp_path, "b", tiny_model, memory, texts_b, env=env)
        result_b = _finish(b)
        assert a.poll() is None  # A is still inside its computation
        assert result_b == {"warnings": [], "hits": 0, "misses": len(texts_b)}
    finally:
        (tmp_path / "a.go").touch()
    result_a = _finish(a)
    assert result_a["warnings"] == [] and result_a["misses"] == len(texts_a)
    assert sum(_log_by_pid(log).values()) == len(texts_a) + len(texts_b)
    _check_vectors(tmp_path, tiny_model, "a", texts_a)
    _check_vectors(tmp_path, tiny_model, "b", texts_b)


def test_overlapping_texts_wait_only_for_the_shared_ones(tiny_model, tmp_path):
    memory, log = tmp_path / "cache", tmp_path / "forward.log"
    env = {"SKBERT_FORWARD_LOG": str(log), "SKBERT_CACHE_WAIT": "600"}
    texts_a, new = _corpus(30, seed=5), _corpus(8, seed=6)
    texts_b = texts_a[:10] + new
    a = _encoder(tmp_path, "a", tiny_model, memory, texts_a, block=True, env=env)
    try:
        _wait_for(tmp_path / "a.started", a, "process A")
        b = _encoder(tmp_path, "b", tiny_model, memory, texts_b, env=env)
        # B computes its own texts while A is stopped holding the shared ones.
        deadline = time.monotonic() + 120
        while _log_by_pid(log).get(b.pid, 0) < len(new):
            assert b.poll() is None, b.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "B never computed its own texts"
            time.sleep(0.02)
        assert a.poll() is None and b.poll() is None  # B waits for A's texts
    finally:
        (tmp_path / "a.go").touch()
    result_a, result_b = _finish(a), _finish(b)
    assert result_a["warnings"] == [] and result_b["warnings"] == []
    assert result_b["misses"] == len(new) and result_b["hits"] == 10
    per_pid = _log_by_pid(log)
    assert per_pid[b.pid] == len(new) and per_pid[a.pid] == len(texts_a)  # each text once
    _check_vectors(tmp_path, tiny_model, "a", texts_a)
    _check_vectors(tmp_path, tiny_model, "b", texts_b)


def test_a_stuck_claimer_is_given_up_on_with_a_warning(tiny_model, tmp_path):
    memory = tmp_path / "cache"
    texts = _corpus(20, seed=7)
    a = _encoder(tmp_path, "a", tiny_model, memory, texts, block=True)
    try:
        _wait_for(tmp_path / "a.started", a, "process A")
        os.kill(a.pid, signal.SIGSTOP)  # paused, holding its claim (and its flock)
        b = _encoder(tmp_path, "b", tiny_model, memory, texts, env={"SKBERT_CACHE_WAIT": "1"})
        result_b = _finish(b)
        (warning,) = result_b["warnings"]
        assert "no progress" in warning and "SKBERT_CACHE_WAIT" in warning
        assert result_b["misses"] == len(texts)
        _check_vectors(tmp_path, tiny_model, "b", texts)
    finally:
        (tmp_path / "a.go").touch()
        os.kill(a.pid, signal.SIGCONT)
    result_a = _finish(a)
    assert result_a["misses"] + result_a["hits"] == len(texts)
    report = cache_verify(memory)
    assert report["damaged"] == [] and report["ok"] == len(texts)


def test_a_dead_claimer_is_not_waited_for(tiny_model, tmp_path):
    memory = tmp_path / "cache"
    texts = _corpus(20, seed=8)
    a = _encoder(tmp_path, "a", tiny_model, memory, texts, block=True)
    try:
        _wait_for(tmp_path / "a.started", a, "process A")
    finally:
        a.kill()
        a.communicate(timeout=60)
    # The kernel dropped A's claim lock: B computes at once, without warning.
    b = _encoder(tmp_path, "b", tiny_model, memory, texts, env={"SKBERT_CACHE_WAIT": "600"})
    result_b = _finish(b)
    assert result_b == {"warnings": [], "hits": 0, "misses": len(texts)}


def test_wait_setting_is_validated(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SKBERT_CACHE_WAIT", "soon")
    with pytest.raises(ValueError, match="SKBERT_CACHE_WAIT must be a number of seconds"):
        BertVectorizer(tiny_model, memory=tmp_path).fit_transform(["a text"])


# ------------------------------------------------- item 5: folder safety
_UMASK_0 = """
    import os, sys
    os.umask(0)
    from skbert import BertVectorizer
    BertVectorizer(sys.argv[1], memory=sys.argv[2]).fit_transform(["a text", "another text"])
"""


def test_folders_are_owner_only_under_umask_0(tiny_model, tmp_path):
    memory = tmp_path / "a" / "b" / "cache"
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_UMASK_0), tiny_model, str(memory)],
        capture_output=True, text=True, env={**os.environ, **_CHILD_ENV}, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    paths = [tmp_path / "a", tmp_path / "a" / "b", *sorted(memory.rglob("*")), memory]
    assert len(paths) > 8
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def _warm_then(tiny_model, memory, texts, change):
    BertVectorizer(tiny_model, memory=memory).fit_transform(texts)
    change()
    before = _forward_texts()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = BertVectorizer(tiny_model, memory=memory).fit_transform(texts)
    n_forward = _forward_texts() - before
    np.testing.assert_allclose(got, BertVectorizer(tiny_model).fit_transform(texts), atol=1e-6)
    return n_forward, [str(w.message) for w in _cache_warnings(record)]


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_store_writable_by_others_is_refused(tiny_model, tmp_path, mode):
    texts = _corpus(5, seed=9)
    memory = tmp_path / "cache"
    n_forward, messages = _warm_then(
        tiny_model, memory, texts, lambda: os.chmod(memory / STORE_DIR, mode)
    )
    assert n_forward == len(texts)  # nothing read from the unsafe store
    (message,) = messages
    assert "refusing" in message and "writable by other users" in message
    assert cache_info(memory)["entries"] == len(texts)  # and nothing written to it


needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root"
)


@needs_root
def test_a_store_owned_by_another_user_is_refused(tiny_model, tmp_path):
    texts = _corpus(5, seed=10)
    memory = tmp_path / "cache"
    n_forward, messages = _warm_then(
        tiny_model, memory, texts, lambda: os.chown(memory / STORE_DIR, 4242, -1)
    )
    assert n_forward == len(texts)
    (message,) = messages
    assert "owned by another user (uid 4242)" in message


@needs_root
def test_a_memory_folder_owned_by_another_user_is_refused(tiny_model, tmp_path):
    texts = _corpus(5, seed=11)
    memory = tmp_path / "cache"
    n_forward, messages = _warm_then(
        tiny_model, memory, texts, lambda: os.chown(memory, 4242, -1)
    )
    assert n_forward == len(texts)
    (message,) = messages
    assert "owned by another user" in message


def test_a_world_writable_memory_folder_needs_the_sticky_bit(tiny_model, tmp_path):
    texts = _corpus(5, seed=12)
    shared = tmp_path / "shared"
    n_forward, messages = _warm_then(tiny_model, shared, texts, lambda: os.chmod(shared, 0o777))
    assert n_forward == len(texts)
    (message,) = messages
    assert "writable by everyone" in message
    # Like /tmp: with the sticky bit nobody else can replace the store in it.
    sticky = tmp_path / "sticky"
    n_forward, messages = _warm_then(tiny_model, sticky, texts, lambda: os.chmod(sticky, 0o1777))
    assert n_forward == 0 and messages == []


# ----------------------------------------------------- item 11: commands
def test_cache_commands_on_a_missing_path_or_a_file_exit_2(tmp_path, capsys):
    from skbert.cli import main

    a_file = tmp_path / "a_file"
    a_file.write_text("not a cache")
    for command in ("info", "verify", "clear"):
        assert main(["cache", command, str(tmp_path / "missing")]) == 2
        err = capsys.readouterr().err
        assert f"skbert cache {command}: error:" in err and "no such folder" in err
        assert main(["cache", command, str(a_file)]) == 2
        assert "not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "not a cache"
    with pytest.raises(FileNotFoundError):
        cache_info(tmp_path / "missing")
    # An existing folder that never held a cache is an empty cache.
    assert main(["cache", "info", str(tmp_path)]) == 0
    assert "entries: 0" in capsys.readouterr().out


def test_max_bytes_accepts_units(tiny_model, tmp_path, capsys):
    from skbert._cache import parse_size
    from skbert.cli import main

    assert parse_size("500M") == 500 << 20
    assert parse_size("1G") == parse_size("1GiB") == parse_size("1gb") == 1 << 30
    assert parse_size("1.5GiB") == 3 << 29
    assert parse_size("2048") == 2048 and parse_size("4k") == 4096
    for bad in ("1X", "", "-1", "G", "1 iB"):
        with pytest.raises(ValueError, match="is not a size"):
            parse_size(bad)
    texts = _corpus(6, seed=13)
    BertVectorizer(tiny_model, memory=tmp_path).fit_transform(texts)
    assert main(["cache", "clear", str(tmp_path), "--max-bytes", "1G"]) == 0
    assert cache_info(tmp_path)["entries"] == len(texts)
    capsys.readouterr()
    assert main(["cache", "clear", str(tmp_path), "--max-bytes", "4K", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes_after"] <= 4096
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", "clear", str(tmp_path), "--max-bytes", "lots"])
    assert exit_info.value.code == 2
    assert "is not a size" in capsys.readouterr().err


# ------------------- issue 19, item 2: one policy for a path and a file:// URL
def _spell(memory, spelling):
    return memory.as_uri() if spelling == "file-url" else memory


_UNSAFE = {
    # name: (change making the folder unsafe, words of the refusal, needs root)
    "store-writable-by-others": (lambda m: os.chmod(m / STORE_DIR, 0o777), "writable by other users", False),
    "memory-world-writable": (lambda m: os.chmod(m, 0o777), "writable by everyone", False),
    "store-owned-by-another-user": (
        lambda m: os.chown(m / STORE_DIR, 4242, -1), "owned by another user (uid 4242)", True
    ),
    # The case: a world-writable folder of another user, with well-formed entries.
    "memory-of-another-user": (
        lambda m: (os.chown(m, 4242, -1), os.chmod(m, 0o777)), "owned by another user", True
    ),
}


@pytest.mark.parametrize("spelling", ["path", "file-url"])
@pytest.mark.parametrize("case", sorted(_UNSAFE))
def test_an_unsafe_folder_is_refused_as_a_path_and_as_a_file_url(tiny_model, tmp_path, case, spelling):
    from skbert._cache import segments

    change, words, root_only = _UNSAFE[case]
    if root_only and (not hasattr(os, "geteuid") or os.geteuid() != 0):
        pytest.skip("chown to another user needs root")
    texts = _corpus(5, seed=19)
    memory = tmp_path / "cache"
    segments._STATES.clear()  # what a new process knows of segment stores
    n_forward, messages = _warm_then(
        tiny_model, _spell(memory, spelling), texts, lambda: change(memory)
    )
    assert n_forward == len(texts)  # nothing read from the unsafe folder
    (message,) = messages
    assert "refusing" in message and words in message


# ------------------ issue 19, item 7: a concurrent clear is not a storage fault
@pytest.mark.parametrize("clears", ["twice-in-a-row", "at-every-write"])
def test_a_clear_while_writing_is_not_blamed_on_the_storage(tiny_model, tmp_path, monkeypatch, clears):
    from skbert._cache import local

    texts = _corpus(12, seed=7)
    memory = tmp_path / "cache"
    publish = local.publish_at
    calls = []

    def clear_then_publish(parent, name, data):
        # Another process empties the store just before this entry is published
        # (the real clear, on the real folders this writer holds open).
        if len(name) == 62:
            calls.append(name)
            if clears == "at-every-write" or len(calls) in (3, 4):
                local.store_clear(memory)
        return publish(parent, name, data)

    monkeypatch.setattr(local, "publish_at", clear_then_publish)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = BertVectorizer(tiny_model, memory=memory).fit_transform(texts)
    np.testing.assert_allclose(got, BertVectorizer(tiny_model).fit_transform(texts), atol=1e-6)
    messages = [str(w.message) for w in _cache_warnings(record)]
    assert not any("Free space" in m for m in messages)
    if clears == "twice-in-a-row":
        # The writer starts again and stores everything written after the clears.
        assert messages == []
        assert cache_info(memory)["entries"] == len(texts) - 2
    else:
        (message,) = messages
        assert "emptied by another process" in message
