"""`skbert baseline`, `skbert probe` and `skbert demo` end to end, on real files."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from skbert import cli
from skbert._testing import TINY_WORDS
from skbert.cli.probe import default_cache_dir

SIGNAL = "excellent"


def _skbert(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "skbert", *map(str, args)],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, cwd=cwd,
    )  # fmt: skip


def _rows(n=48, seed=0):
    """(text, label) rows: 'pos' iff the text contains SIGNAL."""
    rng = np.random.default_rng(seed)
    other = [w for w in TINY_WORDS if w != SIGNAL]
    rows = []
    for i in range(n):
        words = list(rng.choice(other, size=rng.integers(3, 6)))
        if i % 2:
            words.insert(rng.integers(len(words) + 1), SIGNAL)
        rows.append((" ".join(words), "pos" if i % 2 else "neg"))
    return rows


def _write_csv(path, rows, header=("body", "sentiment")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _forward_lines(log):
    return len(log.read_text().splitlines()) if log.exists() else 0


SMALL_GRID = ["--cv", "3", "--pooling", "mean,cls", "--whitening", "none,center", "--C", "0.5,2"]


def test_baseline_end_to_end_warm_rerun_and_saved_model(tiny_model, tmp_path):
    data = _write_csv(tmp_path / "reviews.csv", _rows())
    log = tmp_path / "forward.log"
    args = ["baseline", data, "--text-column", "body", "--label-column", "sentiment",
            "--model", tiny_model, "--memory", tmp_path / "cache", *SMALL_GRID]  # fmt: skip

    cold = _skbert(*args, "--report", tmp_path / "md", "--save-model", tmp_path / "best.joblib",
                   env={"SKBERT_FORWARD_LOG": str(log)})  # fmt: skip
    assert cold.returncode == 0, cold.stderr
    out = cold.stdout
    assert "48 texts, 2 classes (neg 24, pos 24)" in out
    assert "3 layers x 2 poolings x 2 whitenings x 2 C = 24 configurations" in out
    assert "rank  layer  pooling" in out
    assert out.count("\u00b1") == 10 + 1  # top 10 rows and the best line
    assert "best: layer=" in out and "(3-fold CV)" in out
    assert "BERT features" in cold.stderr and "probe" in cold.stderr  # progress bars
    assert "Traceback" not in cold.stderr
    n_cold = _forward_lines(log)
    assert n_cold > 0

    report = (tmp_path / "md" / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# skbert baseline report")
    assert "**Best configuration:** layer" in report and "![" in report and "(probe.png)" in report
    assert "## Leaderboard" in report and "## Probe table" in report and "joblib.load" in report
    assert (tmp_path / "md" / "probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The saved pipeline predicts new texts in a fresh process.
    code = (
        "import joblib, sys; m = joblib.load(sys.argv[1]); "
        f"print(' '.join(m.predict(['the {SIGNAL} movie', 'a dull film', 'so {SIGNAL} and fun'])))"
    )
    pred = subprocess.run([sys.executable, "-c", code, str(tmp_path / "best.joblib")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert pred.returncode == 0, pred.stderr
    assert pred.stdout.split() == ["pos", "neg", "pos"]

    # Warm: the same grid (and an HTML report) runs the model zero times.
    warm = _skbert(*args, "--report", tmp_path / "html", "--report-format", "html", "-q",
                   env={"SKBERT_FORWARD_LOG": str(log)})  # fmt: skip
    assert warm.returncode == 0, warm.stderr
    assert warm.stderr == ""
    assert _forward_lines(log) == n_cold
    assert "48 texts, 0 through the model" in warm.stdout
    best = [line for line in out.splitlines() if line.startswith("best:")]
    assert best == [line for line in warm.stdout.splitlines() if line.startswith("best:")]
    page = (tmp_path / "html" / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<img src="probe.png"' in page
    assert (tmp_path / "html" / "probe.png").exists()


def test_probe_tsv_table_and_plot(tiny_model, tmp_path, capsys):
    data = tmp_path / "train.tsv"
    data.write_text("label\ttext\n" + "".join(f"{y}\t{t}\n" for t, y in _rows()), encoding="utf-8")
    code = cli.main(["probe", str(data), "--model", tiny_model, "--no-cache", "--cv", "3", "-q",
                     "-o", str(tmp_path / "table.csv"), "--plot", str(tmp_path / "probe.png")])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = out.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("layer"))
    assert lines[header].split() == ["layer", "cls", "mean", "max"]
    assert [line.split()[0] for line in lines[header + 1 : header + 4]] == ["0", "1", "2"]
    assert sum(line.count("*") for line in lines) == 1  # the best cell
    with open(tmp_path / "table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 9
    assert list(table[0]) == ["layer", "pooling", "whitening", "mean_score", "std_score", "fit_time"]
    assert max(float(r["mean_score"]) for r in table) >= 0.85
    assert (tmp_path / "probe.png").read_bytes()[:4] == b"\x89PNG"


def test_baseline_jsonl_in_process(tiny_model, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in _rows()), encoding="utf-8")
    code = cli.main(["baseline", str(data), "--model", tiny_model, "--no-cache", "--no-report", "-q",
                     "--cv", "3", "--pooling", "mean", "--whitening", "none", "--C", "1", "--top", "3"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "3 layers x 1 poolings x 1 whitenings x 1 C = 3 configurations" in out.out
    assert "report:" not in out.out and not (tmp_path / "skbert-report").exists()


def test_baseline_without_data_and_demo_use_the_bundled_reviews(tiny_model, tmp_path, capsys):
    grid = ["--model", tiny_model, "--memory", str(tmp_path / "c"), "-q", "--cv", "3", "--pooling", "mean",
            "--whitening", "none", "--C", "1", "--report", str(tmp_path / "rep")]  # fmt: skip
    assert cli.main(["demo", *grid]) == 0
    demo = capsys.readouterr().out
    assert "bundled demo reviews" in demo and "310 texts, 2 classes (negative 155, positive 155)" in demo
    assert (tmp_path / "rep" / "report.md").exists()
    assert cli.main(["baseline", *grid]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == demo.splitlines()[:2]


@pytest.mark.parametrize(
    "content, extra, message",
    [
        (None, [], "cannot read"),
        ("", [], "the file is empty"),
        ("text,label\n", [], "no rows"),
        ("text,label\na,x\nb,x\nc,x\n", [], "every row has the label 'x'"),
        ("text,label\na,x\nb,x\nc,y\nd,x\n", [], "class 'y' has 1 example, fewer than the 3"),
        ("body,label\na,x\n", [], "--text-column"),
        ("text,label\na,x\n", ["--label-column", "stars"], "no label column 'stars'"),
        ("text,label\na,x,extra\n", [], "line 2 has 3 fields"),
        ("text,label\n" + "a,x\nb,y\n" * 3, ["--scoring", "nope"], "unknown --scoring 'nope'"),
        ("text,label\n" + "a,x\nb,y\n" * 3, ["--layers", "9"], "out of range"),
    ],
)
def test_one_line_errors(tiny_model, tmp_path, capsys, content, extra, message):
    data = tmp_path / "in.csv"
    if content is not None:
        data.write_text(content, encoding="utf-8")
    code = cli.main(["baseline", str(data), "--model", tiny_model, "--no-cache", "-q", "--cv", "3",
                     "--report", str(tmp_path / "rep"), *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert message in err
    assert err.count("\n") == 1 and err.startswith("skbert: error: ")
    assert not (tmp_path / "rep").exists()


def test_errors_in_a_subprocess_have_no_traceback(tiny_model, tmp_path):
    txt = tmp_path / "plain.txt"
    txt.write_text("one\ntwo\n", encoding="utf-8")
    out = _skbert("baseline", txt, "--model", tiny_model, "--no-cache")
    assert out.returncode == 1
    assert out.stderr.strip() == f"skbert: error: {txt}: a plain text file has no labels; use CSV, TSV or JSONL."


def test_bad_options_are_usage_errors(tmp_path, capsys):
    for args, message in [
        (["probe", "x.csv", "--pooling", "avg"], "expected a comma-separated list of poolings"),
        (["baseline", "--whitening", "zca"], "expected a comma-separated list of whitenings"),
        (["baseline", "--C", "0"], "positive numbers"),
        (["baseline", "--cv", "1"], "--cv needs an int of at least 2"),
        (["baseline", "--memory", "d", "--no-cache"], "not allowed with argument"),
    ]:
        with pytest.raises(SystemExit) as exc:
            cli.main(args)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def _help(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        cli.main([*args, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_help_is_complete(capsys):
    top = _help(capsys)
    for command in ("embed", "baseline", "probe", "demo", "cache"):
        assert command in top
    for command, options in [
        ("baseline", ["DATA", "--text-column", "--label-column", "--layers", "--pooling", "--whitening",
                      "--C", "--cv", "--scoring", "--n-components", "--memory", "--no-cache", "--report", "--report-format",
                      "--save-model", "--top", "--model", "examples:"]),
        ("probe", ["DATA", "--output", "--plot", "--pooling", "--C", "--memory", "--no-cache"]),
        ("demo", ["--save-model", "--report", "--pooling"]),
    ]:  # fmt: skip
        out = _help(capsys, command)
        for option in options:
            assert option in out, (command, option)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("SKBERT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "skbert")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == os.path.expanduser(os.path.join("~", ".cache", "skbert"))
    monkeypatch.setenv("SKBERT_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == str(tmp_path / "mine")


def test_cli_uses_the_default_cache(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SKBERT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = _write_csv(tmp_path / "d.csv", _rows(24), header=("text", "label"))
    args = ["probe", str(data), "--model", tiny_model, "-q", "--cv", "3", "--pooling", "mean"]
    assert cli.main(args) == 0
    assert (tmp_path / "xdg" / "skbert").is_dir()
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "features: 0 of 24 texts through the model" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.integration
def test_demo_on_the_default_model(tmp_path, minilm_path):
    """The README's main job, offline on the bundled all-MiniLM-L6-v2."""
    out = _skbert("demo", "-q", "--report", tmp_path / "rep", "--save-model", tmp_path / "m.joblib",
                  env={"SKBERT_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert out.returncode == 0, out.stderr
    best = next(line for line in out.stdout.splitlines() if line.startswith("best:"))
    assert float(best.split("accuracy ")[1].split()[0]) >= 0.85
    # 5-fold CV trains on 248 texts: the default grid's whiten keeps 124 of the 384
    # dimensions, so the demo never trips its own warning (#19 item 11).
    assert "whitening: whiten keeps 124 of 384 dimensions" in out.stdout
    assert "note:" not in out.stdout and "Warning" not in out.stderr


def test_negative_layers_in_the_grid(tiny_model, tmp_path, capsys):
    data = _write_csv(tmp_path / "d.csv", _rows(24), header=("text", "label"))
    code = cli.main(["probe", str(data), "--model", tiny_model, "--no-cache", "-q", "--cv", "3",
                     "--pooling", "mean", "--layers", "-1,-2", "-o", str(tmp_path / "t.csv")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "t.csv", newline="") as f:
        assert sorted(int(r["layer"]) for r in csv.DictReader(f)) == [1, 2]


def _python_without_pandas(tmp_path):
    """A command running this Python as if pandas were not installed.

    A view of site-packages without pandas (symlinks), added by ``site``
    under ``python -S``: ``import pandas`` fails and
    ``importlib.util.find_spec("pandas")`` is None, as in a real install.
    """
    import site

    view = tmp_path / "site-packages-without-pandas"
    view.mkdir()
    for folder in site.getsitepackages():
        for entry in os.scandir(folder):
            if entry.name.split("-")[0].split(".")[0] == "pandas" or (view / entry.name).exists():
                continue
            (view / entry.name).symlink_to(entry.path)
    script = (
        f"import site, sys; site.addsitedir({str(view)!r})\n"
        "import importlib.util; assert importlib.util.find_spec('pandas') is None\n"
        "from skbert.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return [sys.executable, "-S", "-c", script]


def test_baseline_facts_without_pandas(tiny_model, tmp_path):
    """The forward-pass line and the report's extraction facts do not need pandas."""
    data = _write_csv(tmp_path / "d.csv", _rows(24), header=("text", "label"))
    python = _python_without_pandas(tmp_path)
    out = subprocess.run(
        [*python, "baseline", str(data), "--model", tiny_model,
         "--memory", str(tmp_path / "cache"), "-q", "--cv", "3", "--pooling", "mean", "--whitening", "none",
         "--C", "1", "--report", str(tmp_path / "rep")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "features: 24 texts, 24 through the model (cache " in out.stdout
    report = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "24 texts, 24 through the model; cache " in report and "; extraction " in report
    probe = subprocess.run(
        [*python, "probe", str(data), "--model", tiny_model,
         "--memory", str(tmp_path / "cache"), "-q", "--cv", "3", "--pooling", "mean"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert "features: 0 of 24 texts through the model" in probe.stdout


def test_quiet_hides_progress_not_results(tiny_model, tmp_path):
    data = _write_csv(tmp_path / "d.csv", _rows(24), header=("text", "label"))
    out = _skbert("baseline", data, "--model", tiny_model, "--no-cache", "-q", "--cv", "3", "--pooling", "mean",
                  "--whitening", "none", "--C", "1", "--report", tmp_path / "rep")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    for start in ("data: ", "model: ", "features: ", "best: ", "report: "):
        assert any(line.startswith(start) for line in out.stdout.splitlines()), start


@pytest.mark.parametrize(
    "args, option",
    [
        (["baseline", "{data}", "--save-model", "{missing}/best.joblib"], "best.joblib"),
        (["probe", "{data}", "-o", "{missing}/table.csv"], "table.csv"),
        (["probe", "{data}", "--plot", "{missing}/probe.png"], "probe.png"),
    ],
)
def test_missing_output_folder_is_named_before_any_work(tiny_model, tmp_path, capsys, args, option):
    from skbert._model import backend as _backend

    data = _write_csv(tmp_path / "d.csv", _rows(24), header=("text", "label"))
    missing = tmp_path / "no" / "such"
    argv = [a.format(data=data, missing=missing) for a in args]
    if argv[0] == "baseline":
        argv += ["--report", str(tmp_path / "rep")]
    before = _backend.forward_counts()["texts"]
    code = cli.main([*argv, "--model", tiny_model, "--no-cache", "-q", "--cv", "3"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"skbert: error: cannot write {missing / option}: the folder {missing} does not exist.\n"
    assert _backend.forward_counts()["texts"] == before
    assert not (tmp_path / "no").exists() and not (tmp_path / "rep").exists()


def test_failed_writes_name_the_output(tiny_model, tmp_path, capsys):
    data = _write_csv(tmp_path / "d.csv", _rows(24), header=("text", "label"))
    (tmp_path / "table.csv").mkdir()  # the write fails at the end, after the grid
    code = cli.main(["probe", str(data), "--model", tiny_model, "--no-cache", "-q", "--cv", "3",
                     "--pooling", "mean", "-o", str(tmp_path / "table.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"skbert: error: cannot write {tmp_path / 'table.csv'}: Is a directory.\n"  # no temporary name
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "table.csv"]


def test_whitening_on_fewer_texts_than_dimensions_is_flagged(tiny_model, tmp_path):
    """The tiny model has 32 dimensions; 3-fold CV on 24 texts trains on 16."""
    data = _write_csv(tmp_path / "d.csv", _rows(24), header=("text", "label"))
    args = ["baseline", data, "--model", tiny_model, "--memory", tmp_path / "cache", "-q", "--cv", "3",
            "--pooling", "mean", "--whitening", "none,whiten", "--C", "1", "--report", tmp_path / "rep"]  # fmt: skip
    out = _skbert(*args, "--n-components", "32")  # asked for: all 32 dimensions
    assert out.returncode == 0, out.stderr
    note = (
        "whiten keeps 32 dimensions but was fitted on 16 texts per training fold, so it amplifies "
        "noise and its scores are unreliable; keep fewer with --n-components (e.g. 8), or use more texts."
    )
    assert f"note: {note}" in out.stdout.splitlines()
    assert out.stderr == ""  # said once, on stdout, not as a warning per fit
    assert f"| **Note** | {note} |" in (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")

    fixed = _skbert(*args, "--n-components", "8")
    assert fixed.returncode == 0, fixed.stderr
    assert "note:" not in fixed.stdout and fixed.stderr == ""
    probe = _skbert("probe", data, "--model", tiny_model, "--memory", tmp_path / "cache", "-q", "--cv", "3",
                    "--pooling", "mean", "--whitening", "whiten", "--n-components", "40")  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert f"note: {note}" in probe.stdout.splitlines()


def test_default_whitening_does_not_trip_its_own_warning(tiny_model, tmp_path):
    """#19 item 11: without --n-components, whiten keeps fewer dimensions than a fold has texts."""
    data = _write_csv(tmp_path / "d.csv", _rows(24), header=("text", "label"))
    common = ["--model", tiny_model, "--memory", tmp_path / "cache", "-q", "--cv", "3", "--pooling", "mean"]
    chosen = ("whitening: whiten keeps 8 of 32 dimensions: half the 16 texts of a training fold, "
              "as all 32 would amplify noise (set --n-components to choose).")  # fmt: skip
    out = _skbert("baseline", data, *common, "--C", "1", "--report", tmp_path / "rep",
                  "--save-model", tmp_path / "m.joblib")  # the default grid: none,whiten
    assert out.returncode == 0, out.stderr
    assert chosen in out.stdout.splitlines()
    assert "note:" not in out.stdout and out.stderr == ""
    assert "8 of 32 dimensions" in (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    probe = _skbert("probe", data, *common, "--whitening", "none,whiten")
    assert probe.returncode == 0, probe.stderr
    assert chosen in probe.stdout.splitlines() and "note:" not in probe.stdout
    # The saved model is the one scored: whitening (if it won) keeps 8 dimensions.
    import joblib

    vec = joblib.load(tmp_path / "m.joblib").named_steps["bert"]
    assert vec.n_components == 8


def test_report_reproduces_the_command_given_to_main(tiny_model, tmp_path, capsys):
    data = _write_csv(tmp_path / "d.csv", _rows(24), header=("text", "label"))
    argv = ["baseline", str(data), "--model", tiny_model, "--no-cache", "-q", "--cv", "3", "--pooling", "mean",
            "--whitening", "none", "--C", "1", "--report", str(tmp_path / "rep")]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    report = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "```bash\nskbert " + " ".join(argv) + "\n```" in report


def test_saved_model_keeps_the_labels_type(tiny_model, tmp_path):
    """#19 item 12: integer labels in a CSV give a model that predicts ints."""
    rows = [(t, int(y == "pos")) for t, y in _rows(24)]
    data = _write_csv(tmp_path / "d.csv", rows, header=("text", "label"))
    out = _skbert("baseline", data, "--model", tiny_model, "--no-cache", "-q", "--cv", "3", "--pooling", "mean",
                  "--whitening", "none", "--C", "1", "--no-report", "--save-model", tmp_path / "m.joblib")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "24 texts, 2 classes (0 12, 1 12)" in out.stdout
    code = (
        "import joblib, sys, csv\n"
        "m = joblib.load(sys.argv[1])\n"
        "rows = list(csv.DictReader(open(sys.argv[2])))\n"
        "texts = [r['text'] for r in rows]; y = [int(r['label']) for r in rows]\n"
        "pred = m.predict(texts)\n"
        "print(pred.dtype.kind, m.score(texts, y), (pred == y).mean())\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.joblib"), str(data)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    kind, score, agreement = res.stdout.split()
    assert kind == "i"
    assert float(score) == float(agreement) > 0.5


@pytest.mark.parametrize(
    "labels, want",
    [
        (["1", "0", "-2"], [1, 0, -2]),
        (["1", "0", "x"], ["1", "0", "x"]),
        (["1.5", "0", "2"], ["1.5", "0", "2"]),
    ],
)
def test_csv_labels_are_ints_when_every_one_is(tmp_path, labels, want):
    from skbert.cli.io import read_texts

    path = _write_csv(tmp_path / "d.csv", [(f"t{i}", y) for i, y in enumerate(labels)], header=("text", "label"))
    assert read_texts(path, need_labels=True)[1] == want


def test_jsonl_labels_keep_their_json_type(tmp_path):
    from skbert.cli.io import read_texts
    from skbert.exceptions import InputError

    def read(values):
        path = tmp_path / "d.jsonl"
        path.write_text("".join(json.dumps({"text": "t", "label": v}) + "\n" for v in values), encoding="utf-8")
        return read_texts(path, need_labels=True)[1]

    assert read([1, 0]) == [1, 0] and read(["1", "0"]) == ["1", "0"] and read([True, False]) == [True, False]
    assert read([1, 0.5]) == [1.0, 0.5]
    with pytest.raises(InputError, match="mix int and str values"):
        read([1, "0"])
    with pytest.raises(InputError, match="row 2 has a list label"):
        read([1, [0]])


def test_cache_size_is_shown_and_capped(tiny_model, tmp_path, monkeypatch):
    """#19 item 13: what a run wrote, the total, and the default folder's cap."""
    from skbert import cache_info

    data = _write_csv(tmp_path / "d.csv", _rows(24), header=("text", "label"))
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "SKBERT_CACHE": ""}
    common = ["probe", data, "--model", tiny_model, "-q", "--cv", "3", "--pooling", "mean"]
    out = _skbert(*common, env=env)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "xdg" / "skbert"
    info = cache_info(folder)
    line = next(x for x in out.stdout.splitlines() if x.startswith("cache: "))
    assert line.startswith(f"cache: {folder}: +{info['entries']} entries, +")
    assert line.endswith(f"; {info['entries']} entries, {_size(info['bytes'])} in all (cap 2.0 GiB, --cache-max-bytes)")
    warm = _skbert(*common, env=env)
    assert f"cache: {folder}: +0 entries, +0 B this run; {info['entries']} entries" in warm.stdout

    # A cap smaller than the features: least recently used entries are evicted.
    small = info["bytes"] // 3
    capped = _skbert(*common, "--memory", tmp_path / "capped", "--cache-max-bytes", str(small))
    assert capped.returncode == 0, capped.stderr
    assert cache_info(tmp_path / "capped")["bytes"] <= small
    assert f"(cap {_size(small)}, --cache-max-bytes)" in capped.stdout
    # --memory DIR has no cap unless asked.
    mine = _skbert(*common, "--memory", tmp_path / "mine")
    assert "in all (no cap)" in mine.stdout


def _size(n):
    from skbert.cli.cache import _size as size

    return size(n)


def test_held_out_test_and_per_class_metrics(tiny_model, tmp_path):
    """#19 item 15: --test DATA scores the winner on held-out texts, per class too."""
    data = _write_csv(tmp_path / "train.csv", _rows(24), header=("text", "label"))
    test = _write_csv(tmp_path / "test.csv", _rows(12, seed=1), header=("text", "label"))
    out = _skbert("baseline", data, "--test", test, "--model", tiny_model, "--no-cache", "-q", "--cv", "3",
                  "--pooling", "mean", "--whitening", "none", "--C", "1", "--report", tmp_path / "rep")  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(f"held-out: {test}: 12 texts, accuracy "))
    assert lines[i + 1].split() == ["class", "precision", "recall", "f1", "support"]
    per_class = {line.split()[0]: line.split()[1:] for line in lines[i + 2 : i + 4]}
    assert sorted(per_class) == ["neg", "pos"] and [r[-1] for r in per_class.values()] == ["6", "6"]
    confusion = [list(map(int, line.split()[1:])) for line in lines[i + 5 : i + 7]]
    assert sum(map(sum, confusion)) == 12
    accuracy = float(lines[i].split("accuracy ")[1].split()[0])
    assert accuracy == pytest.approx((confusion[0][0] + confusion[1][1]) / 12, abs=1e-3)
    report = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert f"## Held-out test: {test}" in report and "| class | precision | recall | F1 | support |" in report
    assert "| true / predicted | neg | pos |" in report


def test_report_plot_legend_covers_no_point_and_title_names_the_data(tiny_model, tmp_path):
    """#19 item 15: the legend sits outside the axes; the title names the data."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from skbert.cli import report

    drawn = {}
    original = report.plot_probe

    def spy(table, *, ax=None, title=None):
        drawn["ax"], drawn["title"] = original(table, ax=ax, title=title), title
        return drawn["ax"]

    data = _write_csv(tmp_path / "reviews.csv", _rows(24), header=("text", "label"))
    mp = pytest.MonkeyPatch()
    mp.setattr(report, "plot_probe", spy)
    try:
        code = cli.main(["baseline", str(data), "--model", tiny_model, "--no-cache", "-q", "--cv", "3",
                         "--pooling", "cls,mean,max", "--whitening", "none,center", "--C", "1",
                         "--report", str(tmp_path / "rep")])  # fmt: skip
    finally:
        mp.undo()
    assert code == 0
    assert drawn["title"] == "reviews.csv: linear probe by layer"
    ax = drawn["ax"]
    fig = ax.figure
    assert isinstance(fig, Figure)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    box = ax.get_legend().get_window_extent(renderer)
    points = [ax.transData.transform(xy) for line in ax.get_lines() for xy in line.get_xydata()]
    assert points
    assert not any(box.contains(x, y) for x, y in points)
    assert box.x0 >= ax.get_window_extent(renderer).x1  # right of the axes
