"""Frozen probe vs partial vs full fine-tuning, against training-set size.

The seed's last picture: dev-set accuracy on SST-2 of all-MiniLM-L6-v2 used

- frozen, as features for a logistic regression (``BertVectorizer`` +
  ``LogisticRegression``, the tutorial's recommendation for little data),
- frozen, with a linear head trained by gradient descent
  (``BertClassifier(freeze_layers="all")``),
- partially fine-tuned: embeddings and the first 4 of 6 layers frozen
  (``BertClassifier(freeze_layers=4)``),
- fully fine-tuned (``BertClassifier(freeze_layers=0)``),

for training subsets of growing size, with the CPU time of each fit. Every
fit starts from the same pre-trained weights, and each size is a random
subset of the SST-2 training phrases (nested: a smaller subset is part of
every larger one); accuracy is measured on the 872 dev sentences.

Run from the repository root::

    python benchmarks/finetune_curve.py --data-home ../shared/data \\
        --sizes 100 300 1000 2000 --threads 1 --plot docs/_static/finetune_curve.png

``--sizes 100 --methods full`` is a quick smoke run. The table printed at the
end is reStructuredText, ready for ``docs/finetuning.rst``. "CPU s" is the
process CPU time of the fit (all threads together: ``time.process_time``),
"wall s" the elapsed time; the dev-set prediction is not included in either.
On a shared machine, ``--threads 1`` keeps CPU time free of the time that
idle worker threads spend spinning.
"""

import argparse
import os
import platform
import time

import numpy as np

METHODS = {
    "probe": "frozen + LogisticRegression",
    "head": "frozen, head by GD",
    "partial": "partial (freeze 4 of 6)",
    "full": "full fine-tuning",
}


def make_estimator(method, args):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from skbert import BertClassifier, BertVectorizer

    common = dict(
        model_name=args.model, pooling="mean", batch_size=args.batch_size,
        random_state=args.seed, device="cpu",
    )
    if method == "probe":
        return make_pipeline(
            BertVectorizer(args.model, pooling="mean", device="cpu"),
            LogisticRegression(max_iter=2000),
        )
    if method == "head":
        return BertClassifier(freeze_layers="all", epochs=args.head_epochs, **common)
    if method == "partial":
        return BertClassifier(freeze_layers=4, epochs=args.epochs, **common)
    if method == "full":
        return BertClassifier(freeze_layers=0, epochs=args.epochs, **common)
    raise ValueError(method)


def rst_table(rows, sizes, methods):
    """A reStructuredText grid: one row per size, accuracy and CPU s per method."""
    head = ["n train"] + [f"{METHODS[m]}" for m in methods]
    body = []
    for n in sizes:
        cells = [str(n)]
        for m in methods:
            r = rows.get((m, n))
            cells.append("" if r is None else f"{r['acc']:.3f} ({r['cpu']:.0f} s)")
        body.append(cells)
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    line = "  ".join("=" * w for w in widths)
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line, fmt(head), line] + [fmt(r) for r in body] + [line])


def plot(rows, sizes, methods, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m, marker in zip(methods, "osD^v"):
        xs = [n for n in sizes if (m, n) in rows]
        ax.plot(xs, [rows[(m, n)]["acc"] for n in xs], marker=marker, label=METHODS[m])
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(n) for n in sizes])
    ax.set_xlabel("training examples (SST-2 train subset)")
    ax.set_ylabel("dev accuracy (872 sentences)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def main(argv=None):
    from skbert import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=os.environ.get("SKBERT_DATA", "../shared/data"))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 2000])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--epochs", type=int, default=3, help="epochs of partial/full")
    parser.add_argument("--head-epochs", type=int, default=20, help="epochs of the head-only fit")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--plot", metavar="PNG", default=None)
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from skbert.datasets import load_sst2

    X, y = load_sst2(split="train", data_home=args.data_home, download_if_missing=False,
                     return_X_y=True)
    X_dev, y_dev = load_sst2(split="dev", data_home=args.data_home, download_if_missing=False,
                             return_X_y=True)
    order = np.random.RandomState(args.seed).permutation(len(X))
    sizes = sorted(args.sizes)
    print(f"SST-2: {len(X)} train phrases, {len(X_dev)} dev sentences; model {args.model}")
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"epochs {args.epochs} (head-only: {args.head_epochs}), batch size {args.batch_size}, "
          f"seed {args.seed}")
    rows = {}
    for n in sizes:
        idx = order[:n]
        X_train, y_train = [X[i] for i in idx], y[idx]
        for m in args.methods:
            est = make_estimator(m, args)
            wall, cpu = time.perf_counter(), time.process_time()
            est.fit(X_train, y_train)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            acc = float(np.mean(est.predict(X_dev) == y_dev))
            rows[(m, n)] = {"acc": acc, "cpu": cpu, "wall": wall}
            print(f"n={n:5d}  {METHODS[m]:28s}  dev acc {acc:.3f}  fit {cpu:7.1f} CPU s "
                  f"{wall:7.1f} wall s", flush=True)
    print()
    print("dev accuracy (fit CPU seconds)")
    print(rst_table(rows, sizes, args.methods))
    if args.plot:
        plot(rows, sizes, args.methods, args.plot,
             "SST-2, all-MiniLM-L6-v2: frozen vs fine-tuned")
    return rows


if __name__ == "__main__":
    main()
