"""A grid search over representation choices: what the feature cache saves.

On SST-2 sentences (``../shared/data/sst2/train.tsv``, or ``$SKBERT_DATA``),
runs one ``GridSearchCV`` over layers x pooling x whitening x C with the
real default model (all-MiniLM-L6-v2) four ways and prints forward passes,
wall time and ratios, all measured in this run:

(a) ``BertVectorizer`` without a cache: every fold and candidate encodes again;
(b) the same inside ``Pipeline(memory=joblib.Memory(...))``: sklearn caches whole
    ``fit_transform`` calls, so only candidates that differ in the classifier
    alone reuse features; every layer, pooling and fold encodes again;
(c) ``BertVectorizer(memory=DIR)``, cold: one forward pass per unique text;
(d) the same again, warm: no forward pass, no model loaded.

It also times one plain extraction pass over the unique texts (best of three). The target:
(c) costs at most 1.2 x (one extraction pass + (d)), where (d) is what the
grid search costs without any model (cache reads, assembly, whitening and
classifier fits).

    python benchmarks/gridsearch.py --n-texts 300
"""

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_sentences(data, n, seed=0):
    path = Path(data) / "sst2" / "train.tsv"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rng = np.random.RandomState(seed)
    seen, texts, labels = set(), [], []
    for i in rng.permutation(len(rows)):
        text = rows[i]["text"]
        if text in seen or len(text.split()) < 4:  # sentences, not one-word phrases
            continue
        seen.add(text)
        texts.append(text)
        labels.append(int(rows[i]["label"]))
        if len(texts) == n:
            break
    return texts, np.array(labels)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-texts", type=int, default=300, help="unique SST-2 sentences (default: 300)")
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--data", default=os.environ.get("SKBERT_DATA") or str(DEFAULT_DATA))
    parser.add_argument("--model", default=None, help="default: all-MiniLM-L6-v2 (bundled)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads for whitening and the classifier (default: 1; "
                        "on a busy machine more threads make timings erratic)")
    args = parser.parse_args(argv)

    loaded = load_sentences(args.data, args.n_texts)
    if loaded is None:
        print(f"SST-2 not found under {args.data}/sst2: skipping (point --data or SKBERT_DATA at it).")
        return 0
    texts, y = loaded

    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    from skbert import DEFAULT_MODEL, BertVectorizer, cache_info
    from skbert._backend import forward_counts

    model = args.model or DEFAULT_MODEL
    grid = {
        "vec__layers": [-1, 3],
        "vec__pooling": ["mean", "cls", "max"],
        "vec__whitening": [None, "whiten"],
        "clf__C": [0.1, 1.0],
    }
    n_candidates = int(np.prod([len(v) for v in grid.values()]))
    print(f"model {model}, {len(texts)} unique SST-2 sentences, {n_candidates} candidates x "
          f"{args.cv} folds = {n_candidates * args.cv} fits, device {args.device}, "
          f"torch threads {__import__('torch').get_num_threads()}")

    def pipeline(memory=None, pipe_memory=None):
        vec = BertVectorizer(model, memory=memory, device=args.device)
        clf = LogisticRegression(max_iter=2000)
        return Pipeline([("vec", vec), ("clf", clf)], memory=pipe_memory)

    def measure(name, fn):
        before = forward_counts()
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        after = forward_counts()
        row = {
            "name": name,
            "seconds": seconds,
            "texts": after["texts"] - before["texts"],
            "batches": after["batches"] - before["batches"],
            "result": result,
        }
        print(f"  {name}: {seconds:.1f} s, {row['texts']:,} texts forward", flush=True)
        return row

    def search(**kw):
        return GridSearchCV(pipeline(**kw), grid, cv=args.cv, n_jobs=1).fit(texts, y)

    # Load the model once outside every measurement.
    BertVectorizer(model, device=args.device).fit_transform(texts[:2])
    from threadpoolctl import threadpool_limits

    def best(rows):
        return min(rows, key=lambda row: row["seconds"])

    def one_pass():
        return measure("one extraction pass, no cache",
                       lambda: BertVectorizer(model, device=args.device).fit_transform(texts))

    with threadpool_limits(args.blas_threads, user_api="blas"), \
            tempfile.TemporaryDirectory(prefix="skbert-bench-") as tmp:
        # Cheap measurements are repeated (the best counts) and interleaved
        # with the expensive ones, so that a busy moment on a shared machine
        # does not decide a ratio.
        passes = [one_pass(), one_pass()]
        plain = measure("(a) no cache", lambda: search())
        joblib_memory = measure("(b) Pipeline(memory=joblib.Memory)", lambda: search(
            pipe_memory=joblib.Memory(os.path.join(tmp, "joblib"), verbose=0)))
        colds, warms = [], []
        for k in range(2):
            skb = os.path.join(tmp, f"skbert{k}")
            passes.append(one_pass())
            colds.append(measure("(c) skbert memory, cold", lambda: search(memory=skb)))
            warms.append(measure("(d) skbert memory, warm", lambda: search(memory=skb)))
        info = cache_info(skb)

    one, cold, warm = best(passes), best(colds), best(warms)
    rows = [plain, joblib_memory, cold, warm]
    print()
    print(f"{'mode (best of repeats)':<38}{'forward texts':>14}{'batches':>9}{'wall s':>9}"
          f"{'time / (a)':>12}{'fwd / (a)':>11}")
    for row in [one] + rows:
        print(f"{row['name']:<38}{row['texts']:>14,}{row['batches']:>9,}{row['seconds']:>9.1f}"
              f"{row['seconds'] / plain['seconds']:>12.3f}"
              f"{row['texts'] / max(plain['texts'], 1):>11.4f}")
    scores = [r["result"].cv_results_["mean_test_score"] for r in rows]
    diff = max(float(np.max(np.abs(s - scores[0]))) for s in scores)
    target = one["seconds"] + warm["seconds"]
    print()
    print(f"cache: {info['entries']:,} entries, {info['bytes'] / 2**20:.1f} MiB, "
          f"{info['bytes'] / max(info['entries'], 1):,.0f} bytes per text")
    print(f"(c) forward texts / unique texts: {cold['texts'] / len(texts):.3f}   "
          f"(d) forward texts: {warm['texts']}")
    print(f"(c) / (one pass + (d)) = {cold['seconds']:.1f} / ({one['seconds']:.1f} + "
          f"{warm['seconds']:.1f}) = {cold['seconds'] / target:.3f}   (target <= 1.2)")
    print(f"(a) / (c) = {plain['seconds'] / cold['seconds']:.1f}x   "
          f"(a) / (d) = {plain['seconds'] / warm['seconds']:.1f}x")
    print(f"best params identical: {len({str(r['result'].best_params_) for r in rows}) == 1}; "
          f"largest difference of a mean test score from (a): {diff:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
