"""Tests for skbert.datasets: offline, against the reference copy of the data.

The reference copy lives next to the repository, in ``../shared/data``; the
tests that need it are skipped when it is absent. Downloads are exercised
end to end against a loopback HTTP server (127.0.0.1 only) serving raw
releases rebuilt from the reference copy.
"""

import ast
import hashlib
import http.server
import os
import shutil
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from skbert import datasets
from skbert.datasets import get_data_home, load_imdb, load_sst2, load_stsb, load_trec
from skbert.exceptions import DatasetChecksumError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# URL paths of the raw releases, as pinned in each SOURCE.txt.
SST2_RAW = (
    "/awake020/pytorch_Bert_sst2/ce2ab1719d32182e6233b24b2de246bd32814fde/SST-2/{}.tsv"
)
TREC_RAW = "/trangnt08/q_class_en/3ffc1b21503e89e5eab6bf12ab9eb46d16a14851/data/{}"
TREC_FILES = {"train": "train_5500.label", "test": "TREC_10.label"}
STSB_RAW = (
    "/zhangzhenhu/Semantic-Texual-Similarity-Toolkits/"
    "c55a72f51bd15a8bd75114247c06984b432050f9/data/stsbenchmark/sts-{}.csv"
)

LOADERS = {"sst2": load_sst2, "trec": load_trec, "stsb": load_stsb, "imdb": load_imdb}
SPLITS = {
    "sst2": ["train", "dev", "test"],
    "trec": ["train", "test"],
    "stsb": ["train", "dev", "test"],
    "imdb": ["train", "test"],
}


@pytest.fixture
def shared():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No user data home, no mirror, no proxy for loopback requests."""
    monkeypatch.delenv("SKBERT_DATA", raising=False)
    monkeypatch.delenv("SKBERT_DATA_URL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


# ---------------------------------------------------------------------------
# Loopback server
# ---------------------------------------------------------------------------


class _Server:
    def __init__(self, files):
        self.files = dict(files)
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def serve(monkeypatch):
    """Start a loopback server for {path: bytes} and point the loaders at it."""
    servers = []

    def start(files):
        server = _Server(files)
        servers.append(server)
        monkeypatch.setenv("SKBERT_DATA_URL", server.url)
        return server

    yield start
    for server in servers:
        server.close()


def _data_lines(path):
    """Lines of a skbert TSV file after the header, without their LF."""
    return path.read_bytes().decode("utf-8").split("\n")[1:-1]


def raw_sst2(shared, split):
    """Invert the SST-2 processing: back to a GLUE-style release."""
    lines = _data_lines(shared / "sst2" / f"{split}.tsv")
    if split == "train":
        # As in the pinned release: label first, CRLF line ends (the CR is
        # still at the end of each reference line).
        return ("label\tsentence\r\n" + "".join(f"{x}\n" for x in lines)).encode()
    rows = [x.split("\t") for x in lines]
    return ("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for y, t in rows)).encode()


def raw_trec(shared, split):
    """Invert the TREC processing: 'COARSE:fine question' lines, latin-1."""
    rows = [x.split("\t") for x in _data_lines(shared / "trec" / f"{split}_fine.tsv")]
    return "".join(f"{y} {t}\n" for y, t in rows).encode("latin-1")


def raw_stsb(shared, split):
    """Invert the STS-B processing: 7 columns (made-up metadata), some extra."""
    out = []
    for i, x in enumerate(_data_lines(shared / "stsb" / f"{split}.tsv")):
        score, s1, s2 = x.split("\t")
        row = f"main-news\theadlines\t2015\t{i:04d}\t{score}\t{s1}\t{s2}"
        if i % 7 == 3:
            row += "\tCC BY 4.0\thttps://example.invalid/source"
        out.append(row)
    return "\n".join(out).encode("utf-8")  # no final newline, as released


def raw_release(shared):
    files = {}
    for split in SPLITS["sst2"]:
        files[SST2_RAW.format(split)] = raw_sst2(shared, split)
    for split in SPLITS["trec"]:
        files[TREC_RAW.format(TREC_FILES[split])] = raw_trec(shared, split)
    for split in SPLITS["stsb"]:
        files[STSB_RAW.format(split)] = raw_stsb(shared, split)
    return files


# ---------------------------------------------------------------------------
# The reference copy: counts and label distributions of SOURCE.txt
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "split, n, zeros",
    [("train", 67_349, 29_780), ("dev", 872, 428), ("test", 1_821, None)],
)
def test_sst2(shared, split, n, zeros):
    bunch = load_sst2(split=split, data_home=shared)
    assert len(bunch.data) == len(bunch.target) == n
    assert bunch.target.dtype == np.int64
    assert set(np.unique(bunch.target)) == {0, 1}
    if zeros is not None:
        assert np.sum(bunch.target == 0) == zeros
    assert bunch.target_names == ["negative", "positive"]
    assert bunch.split == split
    assert "SST-2" in bunch.DESCR
    assert all(isinstance(t, str) and t for t in bunch.data)
    # The CRLF line ends of the train file never leak into the text.
    assert not any("\r" in t or "\t" in t for t in bunch.data)


def test_sst2_first_rows(shared):
    bunch = load_sst2(split="train", data_home=shared)
    assert bunch.data[:2] == [
        "hide new secretions from the parental units",
        "contains no wit , only labored gags",
    ]
    assert bunch.target[:3].tolist() == [0, 0, 1]


TREC_COUNTS = {
    "train": {
        "ABBR": 86,
        "DESC": 1162,
        "ENTY": 1250,
        "HUM": 1223,
        "LOC": 835,
        "NUM": 896,
    },
    "test": {"ABBR": 9, "DESC": 138, "ENTY": 94, "HUM": 65, "LOC": 81, "NUM": 113},
}


@pytest.mark.parametrize("split, n_fine", [("train", 50), ("test", 42)])
def test_trec(shared, split, n_fine):
    coarse = load_trec(split=split, data_home=shared)
    labels, counts = np.unique(coarse.target, return_counts=True)
    assert (
        dict(zip(labels.tolist(), counts.tolist(), strict=True)) == TREC_COUNTS[split]
    )
    assert coarse.target_names == sorted(TREC_COUNTS[split])

    fine = load_trec(split=split, fine=True, data_home=shared)
    assert fine.data == coarse.data
    assert len(np.unique(fine.target)) == n_fine
    assert len(fine.target_names) == 50
    assert set(fine.target) <= set(fine.target_names)
    assert [y.split(":")[0] for y in fine.target] == coarse.target.tolist()
    if split == "test":
        assert coarse.data[0] == "How far is it from Denver to Aspen ?"
        assert fine.target[0] == "NUM:dist"


@pytest.mark.parametrize(
    "split, n", [("train", 5_749), ("dev", 1_500), ("test", 1_379)]
)
def test_stsb(shared, split, n):
    bunch = load_stsb(split=split, data_home=shared)
    assert len(bunch.data) == len(bunch.sentence1) == len(bunch.sentence2) == n
    assert bunch.target.shape == (n,) and bunch.target.dtype == np.float64
    assert bunch.target.min() >= 0.0 and bunch.target.max() <= 5.0
    assert bunch.target.min() == 0.0 and bunch.target.max() == 5.0
    assert bunch.data == list(zip(bunch.sentence1, bunch.sentence2, strict=True))
    assert all(isinstance(p, tuple) and len(p) == 2 for p in bunch.data)
    if split == "test":
        assert bunch.data[0] == (
            "A girl is styling her hair.",
            "A girl is brushing her hair.",
        )
        assert bunch.target[0] == 2.5


@pytest.mark.parametrize("split", ["train", "test"])
def test_imdb(shared, split):
    bunch = load_imdb(split=split, data_home=shared)
    assert len(bunch.data) == 2_000
    assert np.bincount(bunch.target).tolist() == [1_000, 1_000]
    assert bunch.target_names == ["negative", "positive"]
    # Positive reviews come first in the files.
    assert bunch.target[0] == 1 and bunch.target[-1] == 0
    # Long documents: some reviews are far beyond 512 tokens.
    assert max(len(t.split()) for t in bunch.data) > 400


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_return_X_y(shared, name):
    split = SPLITS[name][-1]
    bunch = LOADERS[name](split=split, data_home=shared)
    X, y = LOADERS[name](split=split, data_home=shared, return_X_y=True)
    assert X == bunch.data
    np.testing.assert_array_equal(y, bunch.target)


# ---------------------------------------------------------------------------
# Parameters and data home
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, split",
    [
        ("sst2", "validation"),
        ("trec", "dev"),
        ("stsb", "valid"),
        ("imdb", "dev"),
        ("sst2", None),
    ],
)
def test_bad_split(tmp_path, name, split):
    valid = ", ".join(repr(s) for s in SPLITS[name])
    with pytest.raises(
        ValueError, match=f"must be a str among {{{valid}}}. Got {split!r}"
    ):
        LOADERS[name](split=split, data_home=tmp_path)


def test_get_data_home(monkeypatch, tmp_path):
    default = tmp_path / "home" / "skbert_data"
    assert get_data_home() == str(default)
    assert default.is_dir()

    monkeypatch.setenv("SKBERT_DATA", str(tmp_path / "env"))
    assert get_data_home() == str(tmp_path / "env")
    assert get_data_home(tmp_path / "arg") == str(tmp_path / "arg")
    assert get_data_home("~/x") == str(tmp_path / "home" / "x")


def test_env_data_home_is_used(monkeypatch, shared):
    monkeypatch.setenv("SKBERT_DATA", str(shared))
    bunch = load_trec(split="test")
    assert bunch.filename == os.path.join(str(shared), "trec", "test.tsv")
    assert len(bunch.data) == 500


def test_download_if_missing_false(tmp_path, serve):
    server = serve({})
    with pytest.raises(OSError, match="download_if_missing"):
        load_sst2(split="dev", data_home=tmp_path, download_if_missing=False)
    assert server.requests == []


def test_imdb_is_never_downloaded(tmp_path, serve):
    server = serve({})
    for download in (True, False):
        with pytest.raises(
            FileNotFoundError, match=r"does not download IMDB.*train\.tsv"
        ):
            load_imdb(data_home=tmp_path, download_if_missing=download)
    assert server.requests == []


# ---------------------------------------------------------------------------
# Checksums of local files
# ---------------------------------------------------------------------------


def _copy(shared, home, relpath):
    target = home / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared / relpath, target)
    return target


def test_corrupted_local_file(shared, tmp_path, serve):
    server = serve({})
    path = _copy(shared, tmp_path, "sst2/dev.tsv")
    data = bytearray(path.read_bytes())
    data[data.index(b"\n0\t") + 1] = ord("1")  # flip one label, same size
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetChecksumError, match=r"dev\.tsv.*delete it") as info:
        load_sst2(split="dev", data_home=tmp_path)
    assert str(path) in str(info.value)
    assert server.requests == []  # not silently replaced

    path = _copy(shared, tmp_path, "imdb/test.tsv")
    with open(path, "ab") as f:
        f.write(b"pos\tan extra review\n")
    with pytest.raises(DatasetChecksumError, match="replace it with a good copy"):
        load_imdb(split="test", data_home=tmp_path)


def test_checksum_is_verified_once_per_file(shared, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_VERIFIED", {})
    calls = []
    sha256_file = datasets._sha256_file

    def counting(path):
        calls.append(path)
        return sha256_file(path)

    monkeypatch.setattr(datasets, "_sha256_file", counting)
    path = _copy(shared, tmp_path, "trec/test.tsv")
    for _ in range(3):
        load_trec(split="test", data_home=tmp_path)
    assert len(calls) == 1

    # A rewritten file is checked again, and a bad one is caught.
    data = path.read_bytes().replace(b"Denver", b"Dallas")
    path.write_bytes(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DatasetChecksumError):
        load_trec(split="test", data_home=tmp_path)
    assert len(calls) == 2


# ---------------------------------------------------------------------------
# Downloads through a loopback server
# ---------------------------------------------------------------------------


def test_download_end_to_end(shared, tmp_path, serve):
    server = serve(raw_release(shared))
    home = tmp_path / "empty_home"

    for split in SPLITS["sst2"]:
        load_sst2(split=split, data_home=home)
    for split in SPLITS["trec"]:
        load_trec(split=split, data_home=home)
    for split in SPLITS["stsb"]:
        load_stsb(split=split, data_home=home)
    assert len(server.requests) == 8

    written = sorted(
        p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()
    )
    expected = [f"{d}/{s}.tsv" for d in ("sst2", "stsb") for s in SPLITS[d]] + [
        f"trec/{s}{f}.tsv" for s in SPLITS["trec"] for f in ("", "_fine")
    ]
    assert written == sorted(expected)  # no temporary file left behind
    for relpath in written:
        assert (home / relpath).read_bytes() == (shared / relpath).read_bytes(), relpath

    # Everything is local now: no further request, same content as the copy.
    for name in ("sst2", "trec", "stsb"):
        for split in SPLITS[name]:
            got = LOADERS[name](split=split, data_home=home)
            ref = LOADERS[name](split=split, data_home=shared)
            assert got.data == ref.data
            np.testing.assert_array_equal(got.target, ref.target)
    load_trec(split="test", fine=True, data_home=home)
    assert len(server.requests) == 8


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda b: b.replace(b"cliches", b"cliche"), "SHA-256"),
        (lambda b: b[: b.index(b"\n", len(b) // 2) + 1], "SHA-256"),
        (lambda b: b[: len(b) // 2 - 3], "unexpected SST-2 line"),
        (lambda b: b"<html><body>Rate limited</body></html>\n", "unexpected header"),
        (lambda b: b"\xff\xfe" + b, "not valid utf-8"),
    ],
    ids=["edited", "truncated", "cut-mid-line", "error-page", "not-utf8"],
)
def test_corrupted_download_writes_nothing(shared, tmp_path, serve, corrupt, match):
    url = SST2_RAW.format("dev")
    serve({url: corrupt(raw_sst2(shared, "dev"))})
    with pytest.raises(DatasetChecksumError, match=match) as info:
        load_sst2(split="dev", data_home=tmp_path)
    assert url in str(info.value)
    assert not (tmp_path / "sst2").exists() or list((tmp_path / "sst2").iterdir()) == []


def test_corrupted_stsb_download(shared, tmp_path, serve):
    raw = raw_stsb(shared, "test").replace(b"\t2.500\t", b"\t2.5\t", 1)
    serve({STSB_RAW.format("test"): raw})
    with pytest.raises(DatasetChecksumError, match="stsb|test.tsv"):
        load_stsb(split="test", data_home=tmp_path)
    assert not (tmp_path / "stsb" / "test.tsv").exists()


def test_trec_download_is_all_or_nothing(shared, tmp_path, serve):
    # A changed fine label leaves the coarse file intact, but the raw file is
    # not the pinned release: neither file is written.
    raw = raw_trec(shared, "test").replace(b"NUM:dist ", b"NUM:other ", 1)
    serve({TREC_RAW.format(TREC_FILES["test"]): raw})
    with pytest.raises(DatasetChecksumError, match=r"trec/test_fine\.tsv"):
        load_trec(split="test", data_home=tmp_path)
    assert list((tmp_path / "trec").glob("*")) == []


def test_download_404(tmp_path, serve):
    server = serve({})
    with pytest.raises(OSError, match="Failed to download") as info:
        load_trec(split="test", data_home=tmp_path)
    message = str(info.value)
    assert server.url + TREC_RAW.format("TREC_10.label") in message
    assert "404" in message and "data_home" in message
    assert not (tmp_path / "trec" / "test.tsv").exists()


def test_download_connection_refused(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("SKBERT_DATA_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(
        OSError, match=f"Failed to download http://127.0.0.1:{port}/"
    ) as info:
        load_stsb(split="dev", data_home=tmp_path)
    assert "data_home" in str(info.value)


# ---------------------------------------------------------------------------
# The module itself
# ---------------------------------------------------------------------------


def test_module_imports_are_light():
    tree = ast.parse(Path(datasets.__file__).read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # only skbert's own exception classes, which import nothing
                assert (node.level, node.module) == (1, "exceptions")
                continue
            modules.add(node.module)
    third_party = {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names}
    assert third_party <= {"numpy", "sklearn.utils"}


def test_pinned_checksums_match_reference_copy(shared):
    pinned = {}
    for line in (shared / "SHA256SUMS").read_text().splitlines():
        digest, relpath = line.split()
        pinned[relpath] = digest
    assert datasets._SHA256 == pinned
    some = "trec/test.tsv"
    assert hashlib.sha256((shared / some).read_bytes()).hexdigest() == pinned[some]
