"""skbert on Ray: a real local Ray cluster of 2 CPUs, Ray Data actors and joblib's ray backend.

Forward passes are counted across processes with ``SKBERT_FORWARD_LOG``,
set in every worker's environment by the job's ``runtime_env``, never by
timing. The embedding actors ask for half a CPU each (``num_cpus=0.5``): two
actors of one CPU each would hold both CPUs of the cluster, and the tasks
that check and deduplicate the texts (and the shuffle's aggregators) could
never be scheduled.
"""

import os

import numpy as np
import pytest

from skbert import BertVectorizer, cache_info
from skbert._testing import (
    WORKER_ENV,
    ForwardLog,
    check_gridsearch_on_cluster,
    labelled_corpus,
    random_corpus,
)

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("pandas")

from skbert.engines import ray as skray  # noqa: E402

pytestmark = pytest.mark.engines

#: Per embedding actor: leaves CPUs to the tasks that feed the actors.
_ACTOR = {"concurrency": 2, "num_cpus": 0.5}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    log = tmp_path_factory.mktemp("ray-log") / "forward.log"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 2**20,
        runtime_env={"env_vars": {**WORKER_ENV, "SKBERT_FORWARD_LOG": str(log)}},
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    try:
        yield ForwardLog(log)
    finally:
        ray.shutdown()


def _dataset(texts, n_blocks):
    rows = [{"id": i, "text": t} for i, t in enumerate(texts)]
    return ray.data.from_items(rows, override_num_blocks=n_blocks)


def _by_id(rows, column="embedding"):
    rows = sorted(rows, key=lambda row: row["id"])
    assert [row["id"] for row in rows] == list(range(len(rows)))
    return np.stack([np.asarray(row[column]) for row in rows])


# ---------------------------------------------------------------- the fill
def test_cold_fill_runs_the_model_once_per_unique_text_across_actors(cluster, tiny_model, tmp_path):
    log = cluster
    texts = random_corpus(90, 160, seed=1)
    n_unique = len(set(texts))
    # Duplicates sit in several blocks: a per-block fill would embed them again.
    per_block = sum(len(set(b)) for b in np.array_split(np.array(texts, dtype=object), 4))
    assert per_block > n_unique
    ds = _dataset(texts, 4)
    memory = tmp_path / "store"
    params = {"memory": memory, "layers": [1, 2], "pooling": "mean_max"}

    before, pids_before = log.texts(), {pid for pid, _ in log.lines()}
    X = _by_id(skray.embed(ds, BertVectorizer(tiny_model, **params), **_ACTOR).take_all())
    assert log.texts() - before == n_unique
    new_pids = {pid for pid, _ in log.lines()} - pids_before
    assert new_pids and os.getpid() not in new_pids  # the actors ran the model
    assert len(new_pids) <= _ACTOR["concurrency"]
    assert cache_info(memory)["entries"] == n_unique

    # Bitwise what one process reads from the same store, and bitwise a fresh
    # computation in this process (a text's vector does not depend on its batch
    # or process: #19, item 4).
    np.testing.assert_array_equal(X, BertVectorizer(tiny_model, **params).fit_transform(texts))
    fresh = BertVectorizer(tiny_model, layers=[1, 2], pooling="mean_max").fit_transform(texts)
    np.testing.assert_array_equal(X, fresh)
    assert X.dtype == np.float32 and X.shape == fresh.shape

    # A second run reads everything: no forward pass anywhere.
    before = log.texts()
    vec = BertVectorizer(tiny_model, **params)
    assert skray.fill(ds, vec, **_ACTOR) == {"texts": n_unique, "hits": n_unique, "misses": 0}
    # The callable class straight in map_batches, pandas batches, built from parameters.
    again = ds.map_batches(
        skray.BertEmbedder,
        fn_constructor_kwargs={"model_name": tiny_model, **params, "output_column": "features"},
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.5,
    )
    np.testing.assert_array_equal(_by_id(again.take_all(), "features"), X)
    assert log.texts() == before


def test_fill_reports_and_extends_the_store(cluster, tiny_model, tmp_path):
    log = cluster
    first, second = random_corpus(40, 60, seed=2), random_corpus(50, 70, seed=3)
    vec = BertVectorizer(tiny_model, memory=tmp_path / "store")
    before = log.texts()
    report = skray.fill(_dataset(first, 3), vec, **_ACTOR)
    assert report == {"texts": len(set(first)), "hits": 0, "misses": len(set(first))}
    new = set(second) - set(first)
    report = skray.fill(_dataset(second, 2), vec, **_ACTOR)
    assert report["misses"] == len(new) and report["hits"] == len(set(second)) - len(new)
    assert log.texts() - before == len(set(first) | set(second))
    with pytest.raises(ValueError, match="fill writes the feature store"):
        skray.fill(_dataset(first, 1), BertVectorizer(tiny_model))


@pytest.mark.parametrize("memory", [True, False])
def test_missing_text_names_the_batch_row_and_other_columns(cluster, tiny_model, tmp_path, memory):
    texts = random_corpus(20, 20, seed=6)
    values = list(texts)
    values[13] = None
    ds = _dataset(values, 4)
    vec = BertVectorizer(tiny_model, memory=tmp_path / "store" if memory else None)
    if memory:
        # The fill (run now, on the driver) names the row by its number in the
        # dataset's order, not within a batch, and by its other columns.
        message = (r"row 13 of the dataset \(numbered from 0 in the dataset's order.*"
                   r"\{'id': 13\}\) is missing \(None\)")
        with pytest.raises(ValueError, match=message):
            skray.embed(ds, vec, **_ACTOR)
        cluster.settle()  # batches still running elsewhere must not count in the next test
        # The texts are checked before the deduplicating shuffle: nothing was embedded.
        assert not (tmp_path / "store").exists() or cache_info(tmp_path / "store")["entries"] == 0
        return
    # Lazily, in an actor: the row within its batch and the row's other columns (its id).
    # Ray raises its own RayTaskError, which carries the worker's ValueError and message.
    message = r"ValueError: .*row \d+ of batch.*\{'id': 13\}\) is missing \(None\)"
    with pytest.raises(ray.exceptions.RayTaskError, match=message):
        skray.embed(ds, vec, **_ACTOR).take_all()
    cluster.settle()


def test_fill_into_a_missing_bucket_fails_with_the_cause(cluster, s3_store, tiny_model):
    # The actors reach the S3 server (storage options travel with the
    # vectorizer) but the bucket does not exist: each actor warns in its own
    # log only; the driver must not report success.
    texts = random_corpus(20, 30, seed=10)
    url = f"s3://{s3_store.bucket}-missing/cache"
    vec = BertVectorizer(tiny_model, memory=url, cache_storage_options=s3_store.storage_options)
    with pytest.raises(OSError, match=rf"(?s)stored nothing: .*{s3_store.bucket}-missing/cache.*"
                       "Every worker must reach and write the store"):
        skray.fill(_dataset(texts, 2), vec, **_ACTOR)


# --------------------------------------------------------- grid search


def test_gridsearch_under_joblib_ray_backend_equals_one_process(cluster, tiny_model, tmp_path):
    from ray.util.joblib import register_ray

    register_ray()
    texts, y = labelled_corpus(60, 72, seed=7)
    pids = check_gridsearch_on_cluster("ray", tiny_model, tmp_path / "store", cluster, texts, y)
    assert pids and os.getpid() not in pids  # Ray's workers ran the model
