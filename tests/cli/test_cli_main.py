"""What every `skbert` command shares: a closed pipe, an unusable --memory."""

import os
import subprocess
import sys

import pytest

from skbert import BertVectorizer


def _cache(tiny_model, path):
    BertVectorizer(tiny_model, memory=str(path)).fit_transform(["a good movie", "a bad film"])
    return path


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_closed_pipe_is_quiet(tiny_model, tmp_path, extra):
    """`skbert cache info DIR | head`: the reader is gone before the first byte."""
    cache = _cache(tiny_model, tmp_path / "cache")
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: every write gets EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "skbert", "cache", "info", str(cache), *extra],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.stderr == ""  # no "[Errno 32] Broken pipe", no "Exception ignored"
    assert proc.returncode == 1


def test_open_pipe_still_gets_everything(tiny_model, tmp_path):
    cache = _cache(tiny_model, tmp_path / "cache")
    proc = subprocess.run(
        [sys.executable, "-m", "skbert", "cache", "info", str(cache)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Feature cache ") and "entries: 2" in proc.stdout


def _run(*args, env=None, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "skbert", *map(str, args)],
        capture_output=True, text=True, timeout=300, input=stdin, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _labelled(path):
    path.write_text("text,label\n" + "".join(f"t{i} good,1\nt{i} bad,0\n" for i in range(3)), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["embed", "probe"])
def test_unusable_memory_is_one_line_and_fails_before_work(tiny_model, tmp_path, command):
    """#19 item 14: --memory naming a file is an error, not a raw warning and exit 0."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    log = tmp_path / "forward.log"
    if command == "embed":
        args = ["embed", "-", "-o", tmp_path / "out.npy"]
    else:
        args = ["probe", _labelled(tmp_path / "d.csv"), "--cv", "2", "--pooling", "mean"]
    out = _run(*args, "--model", tiny_model, "-q", "--memory", a_file, stdin="hello\n",
               env={"SKBERT_FORWARD_LOG": str(log)})  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.startswith(f"skbert: error: --memory {a_file}: cannot use ")
    assert out.stderr.endswith("; give a folder you can write to, or --no-cache.\n")
    assert out.stderr.count("\n") == 1 and "Warning" not in out.stderr
    assert out.stdout == "" and not log.exists()  # the model never ran
    assert not (tmp_path / "out.npy").exists()


def test_unusable_default_cache_runs_uncached_with_one_line(tiny_model, tmp_path):
    a_file = tmp_path / "xdg"
    a_file.write_text("x")  # $XDG_CACHE_HOME/skbert cannot be a folder
    env = {"XDG_CACHE_HOME": str(a_file), "SKBERT_CACHE": ""}
    out = _run("probe", _labelled(tmp_path / "d.csv"), "--model", tiny_model, "-q", "--cv", "2",
               "--pooling", "mean", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"skbert: warning: the default feature cache {a_file / 'skbert'} cannot be used (")
    assert lines[0].endswith("running without a cache (set --memory DIR or $SKBERT_CACHE, or --no-cache).")
    assert "features: 6 of 6 texts through the model" in out.stdout


@pytest.mark.slow
@pytest.mark.integration
def test_readme_python_example(tmp_path, minilm_path, shared_data):
    """#19 item 10: the README's example uses the cache and runs warning-free."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert 'memory="' in code
    (tmp_path / "example.py").write_text(code, encoding="utf-8")
    log = tmp_path / "forward.log"
    env = {**os.environ, "SKBERT_DATA": str(shared_data), "SKBERT_FORWARD_LOG": str(log)}
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-W", "error", "example.py"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
        assert out.returncode == 0, out.stderr  # -W error: any warning fails
        assert "Warning" not in out.stderr
        runs.append((out.stdout, len(log.read_text().splitlines()) if log.exists() else 0))
    (first, cold), (second, warm) = runs
    assert cold > 0 and warm == cold  # the second run: no forward pass at all
    assert first == second
