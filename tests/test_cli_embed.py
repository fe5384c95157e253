"""`skbert embed` end to end, in a subprocess, on real files."""

import subprocess
import sys

import numpy as np
import pytest

from skbert import BertVectorizer


def _skbert(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "skbert", *map(str, args)],
        capture_output=True, text=True, timeout=300, input=stdin,
    )


def test_embed_text_file(tiny_model, texts, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = _skbert("embed", src, "-o", tmp_path / "out.npy", "--model", tiny_model,
                  "--layers", "1,2", "--pooling", "mean_max", "--normalize")
    assert out.returncode == 0, out.stderr
    assert "BERT features" in out.stderr  # progress bar
    X = np.load(tmp_path / "out.npy")
    want = BertVectorizer(tiny_model, layers=[1, 2], pooling="mean_max", normalize=True).fit_transform(texts)
    np.testing.assert_allclose(X, want, atol=1e-6)


def test_embed_csv_tsv_jsonl_and_stdin(tiny_model, texts, tmp_path):
    import csv
    import json

    want = BertVectorizer(tiny_model).fit_transform(texts)
    with open(tmp_path / "in.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "body"])
        w.writerows([[i, t] for i, t in enumerate(texts)])
    (tmp_path / "in.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t0\n" for t in texts), encoding="utf-8")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    for name, extra in [("in.csv", ["--text-column", "body"]), ("in.tsv", []), ("in.jsonl", [])]:
        out = _skbert("embed", tmp_path / name, "-o", tmp_path / "o.npy", "--model", tiny_model, "-q", *extra)
        assert out.returncode == 0, (name, out.stderr)
        assert out.stderr == ""
        np.testing.assert_allclose(np.load(tmp_path / "o.npy"), want, atol=1e-6, err_msg=name)
    out = _skbert("embed", "-", "-o", tmp_path / "s.npy", "--model", tiny_model, "-q", stdin="\n".join(texts[:3]))
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), want[:3], atol=1e-6)


@pytest.mark.parametrize(
    "content, args, message",
    [
        (None, [], "cannot read"),
        ("id,body\n1,hello\n", [], "--text-column"),
        ("id,body\n1,hello\n", ["--text-column", "nope"], "no text column 'nope'"),
        ("text\nhello\n", ["--layers", "7"], "out of range"),
        ("text\nhello\n", ["--layers", "x"], "expected an int"),
        ("", [], "empty"),
    ],
)
def test_embed_errors_are_one_line(tiny_model, tmp_path, content, args, message):
    src = tmp_path / "in.csv"
    if content is not None:
        src.write_text(content, encoding="utf-8")
    out = _skbert("embed", src, "-o", tmp_path / "o.npy", "--model", tiny_model, *args)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "o.npy").exists()


def test_help_lists_options():
    out = _skbert("embed", "--help")
    assert out.returncode == 0
    for option in ("--layers", "--pooling", "--whitening", "--memory", "--exclude-special-tokens"):
        assert option in out.stdout
