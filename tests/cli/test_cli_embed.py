"""`skbert embed` end to end, in a subprocess, on real files."""

import os
import subprocess
import sys

import numpy as np
import pytest

from skbert import BertVectorizer, cli
from skbert._model import backend as _backend


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
    assert out.stdout == f"wrote {len(texts)} x 128 float32 to {tmp_path / 'out.npy'}\n"
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
        # -q hides the progress bar, not the result line.
        assert out.stderr == ""
        assert out.stdout == f"wrote {len(texts)} x 32 float32 to {tmp_path / 'o.npy'}\n"
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


@pytest.mark.parametrize("layers, want", [("-1,-2", [-1, -2]), ("-2", -2), ("=-1,0", [-1, 0]), ("2,-3", [2, -3])])
def test_negative_layers_as_documented(tiny_model, texts, tmp_path, capsys, layers, want):
    # `--layers -1,-2` as in docs/cli.rst: argparse alone reads "-1,-2" as an option.
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    option = ["--layers" + layers] if layers.startswith("=") else ["--layers", layers]
    code = cli.main(["embed", str(src), "-o", str(out), "--model", tiny_model, "-q", *option])
    assert code == 0, capsys.readouterr().err
    np.testing.assert_allclose(np.load(out), BertVectorizer(tiny_model, layers=want).fit_transform(texts), atol=1e-6)


def test_negative_numbers_reach_the_option_check(tiny_model, tmp_path, capsys):
    """A negative value is the option's to judge, not argparse's "expected one argument"."""
    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    code = cli.main(["embed", str(src), "-o", str(tmp_path / "o.npy"), "--model", tiny_model, "-q",
                     "--layers", "-7,-1"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "out of range" in err and "expected one argument" not in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["embed", str(src), "-o", "o.npy", "--layers", "-1,x"])
    assert exc.value.code == 2
    assert "expected an int, a comma-separated list of ints or 'all'; got '-1,x'" in capsys.readouterr().err


def test_missing_output_folder_is_named_before_any_work(tiny_model, texts, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    target = tmp_path / "missing" / "dir" / "out.npy"
    before = _backend.forward_counts()["texts"]
    code = cli.main(["embed", str(src), "-o", str(target), "--model", tiny_model, "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"skbert: error: cannot write {target}: the folder {target.parent} does not exist.\n"
    assert _backend.forward_counts()["texts"] == before  # failed before running the model
    assert not (tmp_path / "missing").exists()


def test_failed_write_names_the_output_not_a_temporary_file(tiny_model, texts, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    target = tmp_path / "out.npy"
    target.mkdir()  # os.replace onto a folder fails after the vectors are computed
    code = cli.main(["embed", str(src), "-o", str(target), "--model", tiny_model, "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"skbert: error: cannot write {target}: Is a directory.\n"  # no temporary name
    assert sorted(os.listdir(tmp_path)) == ["in.txt", "out.npy"]  # no temporary file left


@pytest.mark.parametrize("pooling", ["last_token", "weighted_mean", "auto"])
def test_embed_offers_every_pooling_of_the_vectorizer(tiny_model, texts, tmp_path, pooling):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "o.npy"
    code = cli.main(["embed", str(src), "-o", str(out), "--model", tiny_model, "-q", "--pooling", pooling])
    assert code == 0
    want = BertVectorizer(tiny_model, pooling=pooling).fit_transform(texts)
    np.testing.assert_allclose(np.load(out), want, atol=1e-6)
