"""skbert on Dask: a real LocalCluster of 2 worker processes, one thread each.

Forward passes are counted across processes with ``SKBERT_FORWARD_LOG``
(set in the workers' environment when the cluster starts), never by timing.
"""

import os
import re
import signal
import time

import numpy as np
import pytest

from skbert import BertVectorizer, cache_info, cache_verify
from skbert._testing import (
    WORKER_ENV,
    ForwardLog,
    check_gridsearch_on_cluster,
    labelled_corpus,
    random_corpus,
    small_grid_search,
)

dd = pytest.importorskip("dask.dataframe")
db = pytest.importorskip("dask.bag")
distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")

from skbert.engines import dask as skdask  # noqa: E402

pytestmark = pytest.mark.engines


def _start(log_path, n_workers=2):
    cluster = distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        env={**WORKER_ENV, "SKBERT_FORWARD_LOG": str(log_path)},
    )
    return cluster, distributed.Client(cluster)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    log = tmp_path_factory.mktemp("dask-log") / "forward.log"
    cluster, client = _start(log)
    try:
        yield client, ForwardLog(log)
    finally:
        client.close()
        cluster.close()


def _series(texts, npartitions):
    return dd.from_pandas(pd.Series(texts, dtype=object), npartitions=npartitions, sort=False)


# ---------------------------------------------------------------- the fill
def test_cold_fill_runs_the_model_once_per_unique_text_across_workers(cluster, tiny_model, tmp_path):
    client, log = cluster
    texts = random_corpus(90, 160, seed=1)
    n_unique = len(set(texts))
    series = _series(texts, 6)
    # Duplicates sit in several partitions: a per-partition fill would embed them again.
    per_partition = sum(len(set(p)) for p in np.array_split(np.array(texts, dtype=object), 6))
    assert per_partition > n_unique
    memory = tmp_path / "store"
    vec = BertVectorizer(tiny_model, memory=memory, layers=[1, 2], pooling="mean_max")

    before, pids_before = log.texts(), {pid for pid, _ in log.lines()}
    X = skdask.transform(vec, series).compute()
    assert log.texts() - before == n_unique
    worker_pids = set(client.run(os.getpid).values())
    new_pids = {pid for pid, _ in log.lines()} - pids_before
    assert new_pids <= worker_pids  # the workers ran the model, not the client
    assert cache_info(memory)["entries"] == n_unique
    # The model was loaded at most once per worker process.
    loaded = client.run(lambda: len(__import__("skbert._model.backend", fromlist=["_MODELS"])._MODELS))
    assert all(n <= 1 for n in loaded.values())
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in every worker: loading the
    # model undid its cost to the forward pass (see tune_allocator).
    tuned = client.run(lambda: __import__("skbert._model.runtime", fromlist=["_ALLOCATOR"])._ALLOCATOR["tuned"])
    assert {tuned[w] for w, n in loaded.items() if n} == {True}

    # Bitwise what one process reads from the same store, and bitwise a fresh
    # computation in this process (a text's vector does not depend on its batch
    # or process: #19, item 4).
    np.testing.assert_array_equal(X, BertVectorizer(tiny_model, memory=memory, layers=[1, 2],
                                                    pooling="mean_max").fit_transform(texts))
    fresh = BertVectorizer(tiny_model, layers=[1, 2], pooling="mean_max").fit_transform(texts)
    np.testing.assert_array_equal(X, fresh)
    assert X.dtype == np.float32 and X.shape == fresh.shape

    # A second run reads everything: no forward pass anywhere.
    before = log.texts()
    X2 = skdask.transform(vec, series).compute()
    assert log.texts() == before
    np.testing.assert_array_equal(X2, X)
    assert skdask.fill(vec, series) == {"texts": n_unique, "hits": n_unique, "misses": 0}


def test_fill_reports_and_extends_the_store(cluster, tiny_model, tmp_path):
    client, log = cluster
    first, second = random_corpus(40, 60, seed=2), random_corpus(50, 70, seed=3)
    vec = BertVectorizer(tiny_model, memory=tmp_path / "store")
    before = log.texts()
    report = skdask.fill(vec, _series(first, 3))
    assert report == {"texts": len(set(first)), "hits": 0, "misses": len(set(first))}
    new = set(second) - set(first)
    report = skdask.fill(vec, _series(second, 4))
    assert report["misses"] == len(new) and report["hits"] == len(set(second)) - len(new)
    assert log.texts() - before == len(set(first) | set(second))
    with pytest.raises(ValueError, match="fill writes the feature store.*every worker reaches"):
        skdask.fill(BertVectorizer(tiny_model), _series(first, 2))


def test_fill_into_a_store_no_worker_can_use_fails_with_the_cause(cluster, tiny_model, tmp_path):
    # The store's folder cannot be made (its parent is a file) on any worker:
    # each warns in its own log only; the client must not report success.
    client, log = cluster
    (tmp_path / "file").write_text("not a folder")
    memory = tmp_path / "file" / "store"
    vec = BertVectorizer(tiny_model, memory=memory)
    texts = random_corpus(20, 30, seed=10)
    with pytest.raises(OSError, match=r"(?s)stored nothing: the \d+ texts .*cannot use "
                       f"{re.escape(str(tmp_path / 'file'))}.*Every worker must reach and write the store"):
        skdask.fill(vec, _series(texts, 3))
    with pytest.raises(OSError, match="stored nothing"):
        skdask.transform(vec, _series(texts, 3)).compute()


def test_bag_and_dataframe_outputs_need_no_meta(cluster, tiny_model, tmp_path):
    texts = random_corpus(30, 45, seed=4)
    vec = BertVectorizer(tiny_model, memory=tmp_path / "store", layers="all", layer_agg="mean")
    want = BertVectorizer(tiny_model, memory=tmp_path / "store", layers="all",
                          layer_agg="mean").fit_transform(texts)
    index = pd.Index(range(1000, 1000 + len(texts)))
    series = dd.from_pandas(pd.Series(texts, index=index, dtype=object), npartitions=4)
    frame = skdask.transform(vec, series, output="dataframe")
    # Columns and dtypes are known before anything runs.
    fitted = vec.fit([""])
    assert list(frame.columns) == list(fitted.get_feature_names_out())
    assert set(frame.dtypes) == {np.dtype("float32")}
    got = frame.compute()
    assert list(got.index) == list(index)
    np.testing.assert_array_equal(got.to_numpy(), want)
    # A one-column DataFrame and a Bag give the same rows.
    one_col = dd.from_pandas(pd.DataFrame({"review": texts}), npartitions=3)
    np.testing.assert_array_equal(skdask.transform(vec, one_col).compute(), want)
    bag = db.from_sequence(texts, npartitions=5)
    np.testing.assert_array_equal(skdask.transform(vec, bag).compute(), want)
    # Without a store, each partition is embedded where it is.
    plain = skdask.transform(BertVectorizer(tiny_model, layers="all", layer_agg="mean"), bag)
    np.testing.assert_allclose(plain.compute(), want, atol=1e-6)


def test_fitted_whitening_is_shipped_not_refitted(cluster, tiny_model, tmp_path):
    texts = random_corpus(40, 40, seed=5)
    vec = BertVectorizer(tiny_model, whitening="center", memory=tmp_path / "store")
    with pytest.raises(ValueError, match="fit it on the client first"):
        skdask.transform(vec, _series(texts, 2))
    vec.fit(texts[:30])
    got = skdask.transform(vec, _series(texts, 3)).compute()
    np.testing.assert_array_equal(got, vec.transform(texts))


@pytest.mark.parametrize("memory", [True, False])
def test_missing_text_names_partition_row_and_label(cluster, tiny_model, tmp_path, memory):
    texts = random_corpus(20, 20, seed=6)
    values = list(texts)
    values[13] = None
    series = dd.from_pandas(
        pd.Series(values, index=range(100, 120), dtype=object), npartitions=4, sort=False
    )
    vec = BertVectorizer(tiny_model, memory=tmp_path / "store" if memory else None)
    # Partitions of 5 rows: row 13 is row 3 of partition 2.
    with pytest.raises(ValueError, match=r"row 3 of partition 2 \(index label 113\) is missing"):
        skdask.transform(vec, series).compute()
    bag = db.from_sequence(values, npartitions=4)
    with pytest.raises(ValueError, match=r"row 3 of partition 2 is missing"):
        skdask.transform(vec, bag).compute()
    values[13] = 7
    with pytest.raises(TypeError, match=r"row 3 of partition 2 is int"):
        skdask.transform(vec, db.from_sequence(values, npartitions=4)).compute()
    # The other partitions' tasks run on after each failure (Dask drops their
    # results): they must not count in the next test.
    cluster[1].settle()


# --------------------------------------------------------- grid search


def test_gridsearch_under_joblib_dask_backend_equals_one_process(cluster, tiny_model, tmp_path):
    client, log = cluster
    texts, y = labelled_corpus(60, 72, seed=7)
    pids = check_gridsearch_on_cluster("dask", tiny_model, tmp_path / "store", log, texts, y)
    assert pids and pids <= set(client.run(os.getpid).values())  # the workers ran the model


def test_distributed_fill_then_gridsearch_reads_everything(cluster, tiny_model, tmp_path):
    import joblib

    client, log = cluster
    texts, y = labelled_corpus(50, 64, seed=8)
    memory = tmp_path / "store"
    skdask.fill(BertVectorizer(tiny_model, memory=memory), _series(texts, 4))
    before = log.texts()
    with joblib.parallel_backend("dask"):
        small_grid_search(tiny_model, memory, n_jobs=-1).fit(texts, y)
    assert log.texts() == before


# --------------------------------------------------------------- crashes
def test_killed_worker_mid_fill_loses_nothing_published(tiny_model, tmp_path):
    log = ForwardLog(tmp_path / "forward.log")
    texts = random_corpus(2500, 2500, seed=9)
    memory = tmp_path / "store"
    vec = BertVectorizer(tiny_model, memory=memory, batch_size=4, max_batch_tokens=None)
    cluster, client = _start(log.path)
    try:
        future = client.compute(skdask.transform(vec, _series(texts, 8)))
        deadline = time.monotonic() + 120
        while len(log.lines()) < 40 and time.monotonic() < deadline and not future.done():
            time.sleep(0.02)
        assert not future.done(), "the fill ended before a worker could be killed"
        victim = log.lines()[-1][0]
        published = cache_info(memory)["entries"]  # just before the kill
        os.kill(victim, signal.SIGKILL)
        computed = log.texts()
        assert 0 < published < len(texts)
        # Dask reschedules the lost tasks on the restarted worker; if it gives
        # up instead, the rerun below must complete all the same.
        try:
            X = future.result(timeout=300)
        except distributed.KilledWorker:
            X = skdask.transform(vec, _series(texts, 8)).compute()
        assert cache_info(memory)["entries"] == len(texts)
        # Only what the killed worker had computed but not published ran
        # twice: nothing published was computed again.
        assert len(texts) <= log.texts() <= len(texts) + (computed - published)
        assert cache_verify(memory)["damaged"] == []
        before = log.texts()
        rerun = skdask.transform(vec, _series(texts, 8)).compute()
        assert log.texts() == before
        np.testing.assert_array_equal(rerun, X)
        assert victim not in set(client.run(os.getpid).values())
    finally:
        client.close()
        cluster.close()
