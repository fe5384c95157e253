"""What approximate backends cost in accuracy: SST-2 probe and STS-B.

For each setting (the exact float32 default, ``backend="compile"``,
``backend="int8"`` and ``dtype="bfloat16"`` on the CPU, ``dtype="float16"``/``"bfloat16"``
on a GPU)
this prints, with the mean-pooled last layer of all-MiniLM-L6-v2:

- the SST-2 linear-probe accuracy: LogisticRegression fitted on the first
  ``--n-train`` training sentences, scored on the 872 dev sentences;
- the STS-B dev Spearman correlation of pair cosines with the gold scores;
- the cosine of each vector to the float32 one (mean and minimum).

Data come from ``--data-home`` (default ``../shared/data``); the script skips
with a message when they are absent.

Example::

    python benchmarks/accuracy.py                       # CPU: torch, compile, int8, bfloat16
    python benchmarks/accuracy.py --device cuda         # GPU: float32, float16, bfloat16
"""

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"

CPU_SETTINGS = {
    "float32": {},
    "compile": {"backend": "compile"},
    "int8": {"backend": "int8"},
    # Pays on CPUs with bfloat16 instructions (amx_bf16, avx512_bf16 in lscpu).
    "bfloat16": {"dtype": "bfloat16"},
}
GPU_SETTINGS = {
    "float32": {},
    "float16": {"dtype": "float16"},
    "bfloat16": {"dtype": "bfloat16"},
}


def _read(path, columns):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        idx = [header.index(c) for c in columns]
        return [[row[i] for i in idx] for row in reader]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--settings", default=None, help="comma-separated subset")
    parser.add_argument("--model", default=None)
    parser.add_argument("--data-home", default=os.environ.get("SKBERT_DATA", str(DEFAULT_DATA)))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    data = Path(args.data_home)
    files = [data / "sst2" / "train.tsv", data / "sst2" / "dev.tsv", data / "stsb" / "dev.tsv"]
    missing = [f for f in files if not f.is_file()]
    if missing:
        print(f"SKIPPED: benchmark data not found ({missing[0]}); pass --data-home.")
        return 0

    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression

    import skbert
    from skbert import BertVectorizer
    from skbert._model.backend import ModelSpec, resolve_model

    path = args.model or resolve_model(ModelSpec(skbert.DEFAULT_MODEL))
    train = _read(files[0], ["label", "text"])[: args.n_train]
    dev = _read(files[1], ["label", "text"])
    sts = _read(files[2], ["score", "sentence1", "sentence2"])
    x_train = [t for _, t in train]
    y_train = np.array([int(y) for y, _ in train])
    x_dev = [t for _, t in dev]
    y_dev = np.array([int(y) for y, _ in dev])
    s1 = [a for _, a, _ in sts]
    s2 = [b for _, _, b in sts]
    gold = np.array([float(s) for s, _, _ in sts])
    texts = x_train + x_dev + s1 + s2

    gpu = args.device.startswith("cuda")
    settings = GPU_SETTINGS if gpu else CPU_SETTINGS
    if args.settings:
        settings = {k: v for k, v in settings.items() if k in args.settings.split(",")}
    rows, ref = [], None
    print(f"{len(texts)} texts on {args.device}")
    print(f"{'setting':<10}{'SST-2 acc':>10}{'STS-B rho':>11}{'mean cos':>10}{'min cos':>10}{'seconds':>9}")
    for name, params in settings.items():
        vec = BertVectorizer(path, device=args.device, **params).fit(["warm up"])
        start = time.perf_counter()
        X = vec.transform(texts)
        seconds = time.perf_counter() - start
        n_tr, n_dev, n_sts = len(x_train), len(x_dev), len(s1)
        Xtr, Xdev = X[:n_tr], X[n_tr : n_tr + n_dev]
        A = X[n_tr + n_dev : n_tr + n_dev + n_sts]
        B = X[n_tr + n_dev + n_sts :]
        clf = LogisticRegression(max_iter=2000).fit(Xtr, y_train)
        acc = float(clf.score(Xdev, y_dev))
        cos_pairs = np.sum(A * B, 1) / (np.linalg.norm(A, axis=1) * np.linalg.norm(B, axis=1))
        rho = float(spearmanr(cos_pairs, gold).statistic)
        if ref is None:
            ref = X
        cos = np.sum(X * ref, 1) / (np.linalg.norm(X, axis=1) * np.linalg.norm(ref, axis=1))
        row = {
            "setting": name, "sst2_accuracy": acc, "stsb_spearman": rho,
            "mean_cosine_to_float32": float(cos.mean()), "min_cosine_to_float32": float(cos.min()),
            "seconds": seconds,
        }
        rows.append(row)
        print(f"{name:<10}{100 * acc:>9.2f}%{rho:>11.4f}{cos.mean():>10.5f}{cos.min():>10.5f}"
              f"{seconds:>9.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
