"""A Dask cluster fills a store on S3; a grid search elsewhere reads it.

A real ``distributed.LocalCluster`` (2 worker processes, 1 thread each) embeds a
corpus into ``memory="s3://..."`` on moto's S3 server on 127.0.0.1 (the
``s3_store`` fixture of ``conftest.py``: real HTTP through s3fs, every request
counted by the server). Forward passes are counted in the workers with
``SKBERT_FORWARD_LOG`` and in this process with
``skbert._model.backend.forward_counts()``; never by timing. The workers' and this
process's in-memory layers are off (``SKBERT_CACHE_MEMORY_BYTES=0``) and this
process forgets the store's listings and indexes before each read, so every
read really reaches the server.
"""

import math

import numpy as np
import pytest

pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pytest.importorskip("moto.server")
pytest.importorskip("s3fs")
pd = pytest.importorskip("pandas")

import dask.dataframe as dd  # noqa: E402

from skbert import BertVectorizer, cache_copy, cache_info, cache_verify  # noqa: E402
from skbert._cache import segments as ss  # noqa: E402
from skbert._model import backend as _backend  # noqa: E402
from skbert._testing import (
    WORKER_ENV,
    ForwardLog,
    random_corpus,
    small_grid_search,
)  # noqa: E402
from skbert.engines import dask as skdask  # noqa: E402

pytestmark = pytest.mark.engines

#: Entries per segment, in the workers and here: small, so that a corpus of
#: a few hundred texts spans many segments.
SEGMENT_ENTRIES = 16

S3_WORKER_ENV = {**WORKER_ENV, "SKBERT_CACHE_MEMORY_BYTES": "0"}


def _log_texts(path):
    return ForwardLog(path).texts()


def _new_process():
    """Forget what this process knows of every segment store (as a new process would)."""
    ss._STATES.clear()
    ss._META_DONE.clear()
    from skbert._cache import memory as _memory_layer

    _memory_layer.clear()


def _small_segments():
    from skbert._cache import segments

    segments.SEGMENT_ENTRIES = SEGMENT_ENTRIES
    return segments.SEGMENT_ENTRIES


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    monkeypatch.setenv("SKBERT_CACHE_MEMORY_BYTES", "0")
    monkeypatch.setattr(ss, "SEGMENT_ENTRIES", SEGMENT_ENTRIES)
    _new_process()
    yield
    _new_process()


@pytest.fixture
def s3_cluster(s3_store, tmp_path):
    """A LocalCluster whose workers reach the S3 server and log their forward passes."""
    log = tmp_path / "forward.log"
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        env={**S3_WORKER_ENV, **s3_store.env, "SKBERT_FORWARD_LOG": str(log)},
    )
    client = distributed.Client(cluster)
    try:
        # Each worker process packs segments of SEGMENT_ENTRIES entries.
        assert set(client.run(_small_segments).values()) == {SEGMENT_ENTRIES}
        yield client, log
    finally:
        client.close()
        cluster.close()


def _series(texts, npartitions):
    return dd.from_pandas(pd.Series(texts, dtype=object), npartitions=npartitions, sort=False)


def test_cluster_fills_s3_once_then_gridsearch_reads_it(s3_cluster, s3_store, tiny_model, tmp_path):
    client, log = s3_cluster
    n_partitions = 6
    texts = random_corpus(200, 300, seed=11)
    n_unique = len(set(texts))
    # Duplicates sit in several partitions: a per-partition fill would embed them again.
    parts = np.array_split(np.array(texts, dtype=object), n_partitions)
    assert sum(len(set(p)) for p in parts) > n_unique
    vec = BertVectorizer(tiny_model, memory=s3_store.url)

    # Cold: one forward pass per unique text, all of them in the workers.
    client_before = _backend.forward_counts()["texts"]
    X = skdask.transform(vec, _series(texts, n_partitions)).compute()
    assert _log_texts(log) == n_unique
    assert _backend.forward_counts()["texts"] == client_before
    # The object store saw O(texts / segment size) PUTs, not O(texts): the
    # fill publishes full segments of SEGMENT_ENTRIES and one partial segment
    # per fill partition (the unique texts are hash-partitioned into
    # n_partitions), plus a namespace.json per worker.
    seg_puts = s3_store.requests.count("PUT", ".skseg")
    assert math.ceil(n_unique / SEGMENT_ENTRIES) <= seg_puts
    assert seg_puts <= n_unique // SEGMENT_ENTRIES + n_partitions
    assert s3_store.requests.count("PUT") <= seg_puts + 2
    assert seg_puts * 5 < n_unique
    segments = [k for k in s3_store.objects() if k.endswith(".skseg")]
    assert len(segments) == seg_puts
    assert cache_info(s3_store.url)["entries"] == n_unique
    report = cache_verify(s3_store.url)
    assert report["ok"] == n_unique and report["damaged"] == []

    # Bitwise what one process reads from the store (without running the
    # model); within 1e-6 of a computation without any store.
    _new_process()
    before = _backend.forward_counts()["texts"]
    reader = BertVectorizer(tiny_model, memory=s3_store.url)
    np.testing.assert_array_equal(X, reader.fit_transform(texts))
    assert _backend.forward_counts()["texts"] == before
    assert reader.last_cache_stats_["hits"] == n_unique
    fresh = BertVectorizer(tiny_model).fit_transform(texts)
    np.testing.assert_allclose(X, fresh, atol=1e-6)
    assert X.dtype == np.float32 and X.shape == fresh.shape

    # A second run on the cluster reads everything: no forward pass, no new segment.
    s3_store.requests.reset()
    X2 = skdask.transform(vec, _series(texts, n_partitions)).compute()
    assert _log_texts(log) == n_unique
    assert s3_store.requests.count("PUT", ".skseg") == 0
    assert s3_store.requests.count("GET", ".skseg") > 0  # really read from S3
    np.testing.assert_array_equal(X2, X)
    assert skdask.fill(vec, _series(texts, 4)) == {"texts": n_unique, "hits": n_unique, "misses": 0}
    assert s3_store.requests.count("PUT", ".skseg") == 0

    # A grid search in this process over layers x pooling reads it all from
    # S3: no forward pass, no PUT; and it equals the same search on a local
    # copy of the store (the same entries, byte for byte).
    y = np.array([int(any(w in t.split() for w in ("good", "great", "fun"))) for t in texts])
    assert 0 < y.sum() < len(y)
    local = tmp_path / "local"
    copied = cache_copy(s3_store.url, local)
    assert copied["copied"] == n_unique and copied["damaged"] == 0
    _new_process()
    s3_store.requests.reset()
    before = _backend.forward_counts()["texts"]
    on_s3 = small_grid_search(tiny_model, s3_store.url).fit(texts, y)
    assert _backend.forward_counts()["texts"] == before
    assert s3_store.requests.count("PUT") == 0
    assert s3_store.requests.count("GET", ".skseg") > 0
    on_disk = small_grid_search(tiny_model, local).fit(texts, y)
    assert _backend.forward_counts()["texts"] == before
    for key in ("mean_test_score", "std_test_score", "rank_test_score"):
        np.testing.assert_array_equal(on_s3.cv_results_[key], on_disk.cv_results_[key])
    assert on_s3.best_params_ == on_disk.best_params_
    np.testing.assert_array_equal(
        on_s3.best_estimator_.predict_proba(texts), on_disk.best_estimator_.predict_proba(texts)
    )
    assert _log_texts(log) == n_unique  # and the workers ran nothing more


# ------------------------------------------------------- a store that fails
def test_fill_into_a_missing_bucket_fails_on_the_client_with_the_cause(s3_cluster, s3_store, tiny_model):
    # The workers reach the server but the bucket does not exist: each worker
    # warns in its own log and computes uncached. The client must not get a
    # report of success ({'texts': n, 'hits': 0, 'misses': n}).
    client, log = s3_cluster
    texts = random_corpus(40, 60, seed=12)
    vec = BertVectorizer(tiny_model, memory=f"s3://{s3_store.bucket}-missing/cache")
    with pytest.raises(OSError, match=r"(?s)stored nothing: the \d+ texts .*-missing/cache.*"
                       r"(NoSuchBucket|not exist|FileNotFoundError).*Every worker"):
        skdask.fill(vec, _series(texts, 4))
    # transform runs the fill first: the same error, before any partition is assembled.
    with pytest.raises(OSError, match="stored nothing"):
        skdask.transform(vec, _series(texts, 4)).compute()


def test_fill_store_reports_the_store_failure(s3_store, tiny_model):
    # In-process: what one fill task sends to the client.
    from skbert.engines._common import fill_store

    texts = random_corpus(10, 12, seed=13)
    vec = BertVectorizer(tiny_model, memory=f"s3://{s3_store.bucket}-missing/cache").fit([""])
    with pytest.warns(Warning):  # the worker's own FeatureCacheWarning
        report = fill_store(vec, list(dict.fromkeys(texts)))
    n = len(set(texts))
    assert report["texts"] == report["misses"] == report["failed"] == n and report["hits"] == 0
    assert f"{s3_store.bucket}-missing/cache" in report["error"]
    good = BertVectorizer(tiny_model, memory=s3_store.url).fit([""])
    report = fill_store(good, list(dict.fromkeys(texts)))
    assert report["misses"] == n and report["failed"] == 0 and report["error"] == ""
