"""Scaling out: corpus embedding on a Dask cluster, and grid searches on a store in S3.

Two measurements, each compared with a reference measured in the same run:

(a) Throughput of corpus embedding with the real default model
    (all-MiniLM-L6-v2, bundled) on SST-2 sentences (``../shared/data/sst2``,
    or ``$SKBERT_DATA``; synthetic sentences when absent): a single-process
    ``BertVectorizer`` (torch's default threads) against
    ``skbert.engines.dask`` on a ``distributed.LocalCluster`` of 1, 2, 4 ...
    worker processes with one thread each. Two jobs: ``transform`` without a
    store (features back to the client) and ``fill`` of an empty local store
    (global deduplication by Dask's shuffle, entries written). The model is
    loaded on every worker before timing. Ratios are against the single
    process and against one worker. One more row runs one worker with the
    allocator setting that Dask's nanny gives every worker
    (``MALLOC_TRIM_THRESHOLD_``) left as it is, to show what
    ``skbert._model.runtime.tune_allocator`` wins.

(b) A warm ``GridSearchCV`` (layers x pooling x C of a LogisticRegression)
    reading its features from a store on a real S3-compatible server (moto's
    server mode on 127.0.0.1, through s3fs and HTTP) against the same entries
    in a local store. Each search runs in a fresh process, so that it really
    reads the store: as shipped (the in-memory layer serves a process's second
    read of an entry) and with the in-memory layer off
    (``SKBERT_CACHE_MEMORY_BYTES=0``: every clone reads from the store). The
    S3 store is a copy of the local one (``cache_copy``), so both hold the
    same bytes and the searches must agree bitwise.

The CPU model, the core count and the load average are printed: on a machine
with fewer cores than workers, the workers share cores, and other work on the
machine slows every row. Run::

    python benchmarks/distributed.py                       # 2,000 texts; 1, 2, 4 workers
    python benchmarks/distributed.py --n-texts 500 --workers 1 2 --grid-texts 300
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

# This script is named like the ``distributed`` package: keep its own folder
# off the import path, so that ``import distributed`` finds the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: 3 layers x 3 poolings x 2 C = 18 candidates (x 3 folds = 54 fits).
GRID = {
    "vec__layers": [-1, 3, [-2, -1]],
    "vec__pooling": ["mean", "cls", "max"],
    "clf__C": [0.1, 1.0],
}

_WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def cpu_model():
    return _gridsearch().cpu_model()


def _gridsearch():
    """``benchmarks/gridsearch.py``, loaded by path (this folder is off ``sys.path``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_skbert_bench_gridsearch", os.path.join(_HERE, "gridsearch.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_texts(data, n, seed=0):
    """``(texts, labels, source)``: unique SST-2 sentences, or synthetic ones."""
    loaded = _gridsearch().load_sentences(data, n, seed=seed)
    if loaded is not None:
        return (*loaded, f"SST-2 ({Path(data) / 'sst2' / 'train.tsv'})")
    rng = np.random.RandomState(seed)
    good = ["good", "great", "wonderful", "moving", "funny", "sharp"]
    bad = ["bad", "dull", "boring", "clumsy", "tedious", "flat"]
    nouns = ["film", "movie", "story", "plot", "cast", "script", "ending", "score"]
    fillers = ["the", "a", "very", "quite", "and", "with", "its", "this", "rather"]
    texts, labels = [], []
    while len(texts) < n:
        label = int(rng.randint(2))
        words = list(rng.choice(fillers, rng.randint(3, 12))) + list(rng.choice(nouns, 2))
        words.insert(rng.randint(len(words)), rng.choice(good if label else bad))
        text = " ".join(words) + f" {len(texts)}"
        texts.append(text)
        labels.append(label)
    return texts, np.array(labels), "synthetic sentences (SST-2 not found)"


def load_avg():
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


# ------------------------------------------------------------ (a) throughput
def _warm_model(model):
    from skbert import BertVectorizer

    BertVectorizer(model).fit_transform(["warm up the model"])
    return os.getpid()


def throughput(args, model, texts, tmp):
    import logging

    import dask.dataframe as dd
    import distributed
    import pandas as pd

    # The scheduler runs in this process: no warning per shuffle or slow
    # worker shutdown (set after importing distributed, which sets levels).
    logging.getLogger("distributed").setLevel(logging.ERROR)

    from skbert import BertVectorizer
    from skbert.engines import dask as skdask

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    n = len(texts)
    runs = {}  # (job, workers) -> best seconds; workers 0 = single process
    store = iter(range(10**6))

    def fresh_store():
        return os.path.join(tmp, f"store-{next(store)}")

    # Single process: the model loaded first, then timed, with torch's
    # default threads (workers = 0) and with one thread (workers = -1: what
    # one core does without Dask).
    _warm_model(model)
    import torch

    single_threads = torch.get_num_threads()
    want = None
    for _ in range(args.repeats):
        for key, threads in ((0, single_threads), (-1, 1)):
            torch.set_num_threads(threads)
            seconds, X = timed(lambda: BertVectorizer(model).fit_transform(texts))
            want = X if want is None else want
            runs[("transform", key)] = min(runs.get(("transform", key), np.inf), seconds)
            seconds, _ = timed(
                lambda: BertVectorizer(model, memory=fresh_store()).fit_transform(texts)
            )
            runs[("fill", key)] = min(runs.get(("fill", key), np.inf), seconds)
            print(f"  single process ({threads} torch thread(s)): transform "
                  f"{runs[('transform', key)]:.2f} s, fill {runs[('fill', key)]:.2f} s "
                  "(best so far)", flush=True)
    torch.set_num_threads(single_threads)

    series = dd.from_pandas(pd.Series(texts, dtype=object), npartitions=args.partitions, sort=False)
    max_diff = 0.0
    # Each Dask configuration: (key in runs, workers, workers' environment).
    # "untuned": one worker whose allocator keeps the 128 KiB mmap threshold
    # that Dask's MALLOC_TRIM_THRESHOLD_ freezes (MALLOC_MMAP_THRESHOLD_ set
    # makes skbert leave it alone; see skbert._model.runtime.tune_allocator).
    configs = [(w, w, _WORKER_ENV) for w in args.workers]
    if not args.skip_untuned:
        configs.append(("untuned", 1, {**_WORKER_ENV, "MALLOC_MMAP_THRESHOLD_": "131072"}))
    for key, workers, env in configs:
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True,
            dashboard_address=None, env=env,
        )  # fmt: skip
        client = distributed.Client(cluster)
        try:
            pids = client.run(_warm_model, model)  # the model loaded on every worker
            assert len(set(pids.values())) == workers
            for _ in range(args.repeats):
                seconds, X = timed(lambda: skdask.transform(BertVectorizer(model), series).compute())
                max_diff = max(max_diff, float(np.max(np.abs(X - want))))
                runs[("transform", key)] = min(runs.get(("transform", key), np.inf), seconds)
                vec = BertVectorizer(model, memory=fresh_store())
                seconds, report = timed(lambda: skdask.fill(vec, series))
                assert report["misses"] == len(set(texts)), report
                runs[("fill", key)] = min(runs.get(("fill", key), np.inf), seconds)
            print(f"  {key} worker(s): transform {runs[('transform', key)]:.2f} s, "
                  f"fill {runs[('fill', key)]:.2f} s (best of {args.repeats}); "
                  f"load average {load_avg()}", flush=True)
        finally:
            client.close()
            cluster.close()

    cores = os.cpu_count()
    print()
    print(f"(a) corpus embedding, {n:,} texts, {args.partitions} partitions, best of {args.repeats}")
    if max(args.workers) > cores:
        print(f"    NOTE: this machine has {cores} cores: with more than {cores} workers the "
              "workers share cores, so those rows cannot scale further.")
    header = (f"{'engine':<26}{'job':<11}{'seconds':>9}{'texts/s':>10}"
              f"{'vs single':>11}{'vs 1 worker':>13}")
    print(header)
    print("-" * len(header))
    for job in ("transform", "fill"):
        single = runs[(job, 0)]
        one = runs.get((job, 1))
        for key in [0, -1] + [key for key, _, _ in configs]:
            seconds = runs[(job, key)]
            name = (f"single process ({single_threads} thr)" if key == 0 else
                    "single process (1 thr)" if key == -1 else
                    "Dask, 1 worker, untuned" if key == "untuned" else
                    f"Dask, {key} worker{'s' if key > 1 else ''} x 1 thr")
            dask = key == "untuned" or key > 0
            vs_one = f"{one / seconds:>12.2f}x" if one and dask else f"{'':>13}"
            print(f"{name:<26}{job:<11}{seconds:>9.2f}{n / seconds:>10.1f}"
                  f"{single / seconds:>10.2f}x{vs_one}")
    print(f"largest |Dask transform - single process| = {max_diff:.2e}")
    return runs


# ------------------------------------------------------ (b) warm grid search
def grid_child(args):
    """In a fresh process: one warm grid search on ``args.grid_child``; prints JSON."""
    texts, y, _ = load_texts(args.data, args.grid_texts)
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from threadpoolctl import threadpool_limits

    from skbert import DEFAULT_MODEL, BertVectorizer
    from skbert._model.backend import forward_counts

    model = args.model or DEFAULT_MODEL
    pipe = Pipeline([("vec", BertVectorizer(model, memory=args.grid_child)),
                     ("clf", LogisticRegression(max_iter=2000))])
    with threadpool_limits(args.blas_threads, user_api="blas"):
        start = time.perf_counter()
        search = GridSearchCV(pipe, GRID, cv=3, n_jobs=1).fit(texts, y)
        seconds = time.perf_counter() - start
    print(json.dumps({
        "seconds": seconds,
        "forward": forward_counts()["texts"],
        "scores": search.cv_results_["mean_test_score"].tolist(),
        "best": str(search.best_params_),
    }))
    return 0


class _Moto:
    """moto's S3 server on 127.0.0.1, counting the HTTP requests it receives."""

    def __init__(self):
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        self.log, lock = [], threading.Lock()
        app = self.server._server.app

        def counting(environ, start_response):
            with lock:
                self.log.append((environ["REQUEST_METHOD"], environ.get("QUERY_STRING", "")))
            return app(environ, start_response)

        self.server._server.app = counting
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1",
                     ).create_bucket(Bucket="skbert-bench")  # fmt: skip
        self.url = "s3://skbert-bench/cache"

    def counts(self, since):
        out = {}
        for method, query in self.log[since:]:
            name = "LIST" if "list-type" in query else method
            out[name] = out.get(name, 0) + 1
        return out

    def stop(self):
        self.server.stop()


def warm_grid(args, model, texts, y, tmp):
    from skbert import BertVectorizer, cache_copy, cache_info

    local = os.path.join(tmp, "grid-local")
    start = time.perf_counter()
    BertVectorizer(model, memory=local).fit_transform(texts)
    print(f"  filled the local store with {len(texts):,} texts in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    moto = _Moto()
    try:
        os.environ.update(moto.env)  # for cache_copy / cache_info in this process
        report = cache_copy(local, moto.url)
        info = cache_info(moto.url)
        print(f"  copied to {moto.url} on {moto.endpoint}: {report['copied']:,} entries, "
              f"{report['segments']} segment(s), {info['bytes'] / 2**20:.1f} MiB", flush=True)

        child_env = {**os.environ, **moto.env}
        cmd = [sys.executable, os.path.abspath(__file__), "--data", args.data,
               "--grid-texts", str(len(texts)), "--blas-threads", str(args.blas_threads)]
        if args.model:
            cmd += ["--model", args.model]
        modes = {
            ("local", "as shipped"): (local, {}),
            ("S3", "as shipped"): (moto.url, {}),
            ("local", "memory layer off"): (local, {"SKBERT_CACHE_MEMORY_BYTES": "0"}),
            ("S3", "memory layer off"): (moto.url, {"SKBERT_CACHE_MEMORY_BYTES": "0"}),
        }
        results = {mode: [] for mode in modes}
        for _ in range(args.repeats):  # interleaved: a busy moment hits every mode alike
            for mode, (memory, extra) in modes.items():
                since = len(moto.log)
                out = subprocess.run(cmd + ["--grid-child", memory], env={**child_env, **extra},
                                     capture_output=True, text=True, check=False)
                if out.returncode:
                    raise RuntimeError(out.stderr[-3000:])
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["requests"] = moto.counts(since)
                results[mode].append(row)
                print(f"  {mode[0]:<6}{mode[1]:<18}{row['seconds']:8.2f} s, forward texts "
                      f"{row['forward']}, S3 requests {row['requests'] or '-'}", flush=True)
    finally:
        moto.stop()

    n_candidates = int(np.prod([len(v) for v in GRID.values()]))
    best = {mode: min(rows, key=lambda r: r["seconds"]) for mode, rows in results.items()}
    print()
    print(f"(b) warm GridSearchCV, {len(texts):,} texts, {n_candidates} candidates x 3 folds = "
          f"{3 * n_candidates} fits, each search in a fresh process, best of {args.repeats}")
    header = (f"{'store':<8}{'in-process memory layer':<26}{'seconds':>9}{'S3 / local':>12}"
              f"{'forward':>9}   S3 requests per search")
    print(header)
    print("-" * len(header))
    for layer in ("as shipped", "memory layer off"):
        base = best[("local", layer)]["seconds"]
        for store in ("local", "S3"):
            row = best[(store, layer)]
            reqs = ", ".join(f"{k} {v}" for k, v in sorted(row["requests"].items())) or "-"
            ratio = f"{row['seconds'] / base:>11.2f}x" if store == "S3" else f"{'':>12}"
            print(f"{store:<8}{layer:<26}{row['seconds']:>9.2f}{ratio}{row['forward']:>9}   {reqs}")
    scores = [r["scores"] for rows in results.values() for r in rows]
    same = all(s == scores[0] for s in scores)
    print(f"mean test scores bitwise equal across stores and runs: {same}; forward texts in "
          f"every search: {sorted({r['forward'] for rows in results.values() for r in rows})}")
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-texts", type=int, default=2000, help="texts for (a) (default: 2000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--partitions", type=int, default=8, help="Dask partitions (default: 8)")
    parser.add_argument("--grid-texts", type=int, default=500, help="texts for (b) (default: 500)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats; the best counts")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--skip-untuned", action="store_true",
                        help="skip the row of one Dask worker with glibc's frozen mmap threshold")
    parser.add_argument("--data", default=os.environ.get("SKBERT_DATA") or str(DEFAULT_DATA))
    parser.add_argument("--model", default=None, help="default: all-MiniLM-L6-v2 (bundled)")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads of the grid searches' classifiers (default: 1)")
    parser.add_argument("--grid-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.grid_child:
        return grid_child(args)

    warnings.simplefilter("ignore", FutureWarning)
    from skbert import DEFAULT_MODEL

    model = args.model or DEFAULT_MODEL
    texts, y, source = load_texts(args.data, max(args.n_texts, args.grid_texts))
    cores = os.cpu_count()
    print(f"model {model}; texts: {source}")
    print(f"CPU: {cpu_model()}, {cores} cores (os.cpu_count()); load average {load_avg()}")
    if max(args.workers) > cores:
        print(f"{max(args.workers)} workers on {cores} cores: workers beyond {cores} share cores.")
    print(f"python {sys.version.split()[0]}; command: python benchmarks/distributed.py "
          + " ".join(sys.argv[1:] if argv is None else argv))
    with tempfile.TemporaryDirectory(prefix="skbert-bench-dist-") as tmp:
        if not args.skip_throughput:
            throughput(args, model, texts[: args.n_texts], tmp)
            print()
        if not args.skip_grid:
            warm_grid(args, model, texts[: args.grid_texts], y[: args.grid_texts], tmp)
    print(f"\nload average at the end: {load_avg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
