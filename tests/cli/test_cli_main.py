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
