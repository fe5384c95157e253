"""skbert on Spark: a real local Spark session (``local[2]``) and its Python workers.

Forward passes are counted across processes with ``SKBERT_FORWARD_LOG``,
set in the Python workers' environment through ``spark.executorEnv.*``,
never by timing. Spark needs Java 17 (or 11, 21); without Java the module
is skipped with that reason.
"""

import os
import shutil
import sys

import numpy as np
import pytest

from skbert import BertVectorizer, cache_info
from skbert._testing import WORKER_ENV, ForwardLog, labelled_corpus, random_corpus

pytest.importorskip("pyspark")
pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java (java on PATH or JAVA_HOME)", allow_module_level=True)

from pyspark.errors import PythonException  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from skbert.engines import spark as skspark  # noqa: E402

pytestmark = pytest.mark.engines


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    log = tmp_path_factory.mktemp("spark-log") / "forward.log"
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("skbert-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
    )
    for name, value in {**WORKER_ENV, "SKBERT_FORWARD_LOG": str(log)}.items():
        builder = builder.config(f"spark.executorEnv.{name}", value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session, ForwardLog(log)
    finally:
        session.stop()


def _frame(session, texts, n_partitions):
    """A DataFrame (id, text) whose partitions are consecutive slices of ``texts``."""
    rows = [(i, t) for i, t in enumerate(texts)]
    rdd = session.sparkContext.parallelize(rows, n_partitions)
    return session.createDataFrame(rdd, "id long, text string")


def _slices(texts, n_partitions):
    """The partitions of :func:`_frame` (``parallelize`` cuts at ``i * n // k``)."""
    n = len(texts)
    return [texts[i * n // n_partitions:(i + 1) * n // n_partitions] for i in range(n_partitions)]


def _by_id(df, column="features"):
    rows = sorted(df.select("id", column).collect(), key=lambda row: row["id"])
    assert [row["id"] for row in rows] == list(range(len(rows)))
    return np.array([row[column] for row in rows], dtype=np.float32)


# ---------------------------------------------------------------- the fill
def test_cold_fill_runs_the_model_once_per_unique_text_across_workers(spark, tiny_model, tmp_path):
    session, log = spark
    texts = random_corpus(90, 160, seed=1)
    n_unique = len(set(texts))
    # Duplicates sit in several partitions: a per-partition fill would embed them again.
    per_partition = sum(len(set(p)) for p in _slices(texts, 6))
    assert per_partition > n_unique
    df = _frame(session, texts, 6)
    memory = tmp_path / "store"
    params = {"memory": memory, "layers": [1, 2], "pooling": "mean_max"}
    vec = BertVectorizer(tiny_model, **params)

    before, pids_before = log.texts(), log.pids()
    out = skspark.transform(vec, df)
    assert out.columns == ["id", "text", "features"]
    X = _by_id(out)
    assert log.texts() - before == n_unique
    new_pids = log.pids() - pids_before
    assert new_pids and os.getpid() not in new_pids  # Spark's Python workers ran the model
    assert cache_info(memory)["entries"] == n_unique

    # Bitwise what one process reads from the same store; within 1e-6 of a fresh computation.
    np.testing.assert_array_equal(X, BertVectorizer(tiny_model, **params).fit_transform(texts))
    fresh = BertVectorizer(tiny_model, layers=[1, 2], pooling="mean_max").fit_transform(texts)
    np.testing.assert_allclose(X, fresh, rtol=0, atol=1e-6)
    assert X.shape == fresh.shape

    # A second run reads everything: no forward pass anywhere.
    before = log.texts()
    np.testing.assert_array_equal(_by_id(skspark.transform(vec, df)), X)
    assert skspark.fill(vec, df) == {"texts": n_unique, "hits": n_unique, "misses": 0}
    assert log.texts() == before


def test_fill_reports_and_extends_the_store(spark, tiny_model, tmp_path):
    session, log = spark
    first, second = random_corpus(40, 60, seed=2), random_corpus(50, 70, seed=3)
    vec = BertVectorizer(tiny_model, memory=tmp_path / "store")
    before = log.texts()
    report = skspark.fill(vec, _frame(session, first, 3), num_partitions=3)
    assert report == {"texts": len(set(first)), "hits": 0, "misses": len(set(first))}
    new = set(second) - set(first)
    report = skspark.fill(vec, _frame(session, second, 4))
    assert report["misses"] == len(new) and report["hits"] == len(set(second)) - len(new)
    assert log.texts() - before == len(set(first) | set(second))


def test_without_a_store_each_partition_is_embedded_in_place(spark, tiny_model):
    session, log = spark
    texts = random_corpus(30, 40, seed=4)
    vec = BertVectorizer(tiny_model, layers="all", layer_agg="mean")
    before = log.texts()
    X = _by_id(skspark.transform(vec, _frame(session, texts, 3), output_col="features"))
    # Duplicates within a partition run once; across partitions, once per partition.
    per_partition = sum(len(set(p)) for p in _slices(texts, 3))
    assert log.texts() - before == per_partition
    np.testing.assert_allclose(X, vec.fit_transform(texts), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="fill writes the feature store.*every executor reaches"):
        skspark.fill(vec, _frame(session, texts, 2))


def test_fitted_whitening_is_shipped_not_refitted(spark, tiny_model, tmp_path):
    session, _ = spark
    texts = random_corpus(40, 40, seed=5)
    vec = BertVectorizer(tiny_model, whitening="center", memory=tmp_path / "store")
    with pytest.raises(ValueError, match="fit it on the client first"):
        skspark.transform(vec, _frame(session, texts, 2))
    vec.fit(texts[:30])
    got = _by_id(skspark.transform(vec, _frame(session, texts, 3)))
    np.testing.assert_array_equal(got, vec.transform(texts))


@pytest.mark.parametrize("memory", [True, False])
def test_missing_text_names_partition_and_row(spark, tiny_model, tmp_path, memory):
    session, _ = spark
    texts = random_corpus(20, 20, seed=6)
    values = list(texts)
    values[13] = None
    df = _frame(session, values, 4)
    vec = BertVectorizer(tiny_model, memory=tmp_path / "store" if memory else None)
    # Partitions of 5 rows: row 13 is row 3 of partition 2.
    with pytest.raises(PythonException, match=r"row 3 of partition 2 .*is missing"):
        skspark.transform(vec, df).collect()
    if not memory:
        # Assembling a partition names the row's other columns too.
        with pytest.raises(PythonException, match=r"other columns: \{'id': 13\}"):
            skspark.transform(vec, df).collect()
    else:
        # Every row is checked before the fill's shuffle (nothing was embedded),
        # and named by its other columns there too.
        message = r"row 3 of partition 2 \(other columns: \{'id': 13\}\) is missing"
        with pytest.raises(PythonException, match=message):
            skspark.fill(vec, df)
        assert not (tmp_path / "store").exists()
    # Tasks of the failed jobs still running must not count in the next test.
    spark[1].settle()


def test_fill_into_a_missing_bucket_fails_with_the_cause(spark, s3_store, tiny_model):
    # The executors reach the S3 server (storage options travel with the
    # vectorizer) but the bucket does not exist: each Python worker warns in
    # its own log only; the driver must not report success.
    session, _ = spark
    texts = random_corpus(20, 30, seed=10)
    url = f"s3://{s3_store.bucket}-missing/cache"
    vec = BertVectorizer(tiny_model, memory=url, cache_storage_options=s3_store.storage_options)
    with pytest.raises(OSError, match=rf"(?s)stored nothing: .*{s3_store.bucket}-missing/cache.*"
                       "Every executor must reach and write the store"):
        skspark.fill(vec, _frame(session, texts, 2))


def test_bad_columns_are_refused_on_the_driver(spark, tiny_model, tmp_path):
    session, _ = spark
    df = _frame(session, ["a b", "c d"], 1)
    vec = BertVectorizer(tiny_model, memory=tmp_path / "store")
    with pytest.raises(ValueError, match=r"no column 'review'.*\['id', 'text'\]"):
        skspark.transform(vec, df, input_col="review")
    with pytest.raises(TypeError, match="'id' holds bigint, not string"):
        skspark.transform(vec, df, input_col="id")
    with pytest.raises(ValueError, match="already has a column 'text'"):
        skspark.transform(vec, df, output_col="text")
    with pytest.raises(TypeError, match="Expected a skbert.BertVectorizer"):
        skspark.fill(object(), df)


def test_spark_fill_then_gridsearch_reads_everything(spark, tiny_model, tmp_path, monkeypatch):
    from skbert._testing import small_grid_search

    session, log = spark
    texts, y = labelled_corpus(50, 64, seed=8)
    memory = tmp_path / "store"
    skspark.fill(BertVectorizer(tiny_model, memory=memory), _frame(session, texts, 4))
    # The search runs here, in the driver: log its forward passes too.
    monkeypatch.setenv("SKBERT_FORWARD_LOG", str(log.path))
    before = log.texts()
    small_grid_search(tiny_model, memory, n_jobs=1).fit(texts, y)
    assert log.texts() == before
