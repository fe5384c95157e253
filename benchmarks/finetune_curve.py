"""Frozen probe vs BertClassifier as the training set grows (issue #20's table).

Dev-set accuracy on SST-2 (872 sentences, majority class 0.509) of
all-MiniLM-L6-v2 used

- ``probe``: frozen, as features for a logistic regression whose ``C`` is
  grid-searched (``BertVectorizer`` + ``GridSearchCV(LogisticRegression)``,
  5-fold, C in 1e-2 ... 1e3);
- ``previous``: ``BertClassifier`` with the defaults of 0.1.0.dev0 (exactly 3
  epochs, a randomly initialised head, no contrastive stage, learning rate
  5e-5: ``min_steps=0, head_init="random", contrastive_steps=0,
  learning_rate=5e-5, epochs=3``), which predicted one class at 100 texts;
- ``defaults``: ``BertClassifier()`` as it is now (a SetFit-style
  contrastive stage on up to 200 texts, the head initialised by a linear
  probe (LP-FT), at least 200 optimisation steps);
- ``recipe``: the fine-tuning guide's earlier recipe, ``freeze_layers=0,
  epochs=10`` with the previous head and schedule;
- ``head``, ``partial``, ``full``: the seed's picture (a head trained by
  gradient descent on frozen features, 4 of 6 layers frozen, nothing frozen),
  with the current defaults otherwise.

Each size is a random subset of the SST-2 training phrases (nested: a
smaller subset is part of every larger one; seed ``--seed``). For every fit
it prints the dev accuracy, the share of dev predicted positive, the
optimisation steps and the fit's wall and CPU time; at the end a
reStructuredText table, each method's accuracy minus the probe's at the same
size (the ratio that matters: never below it), and the issue's targets for
the defaults (n=100 >= 0.74, n=500 >= 0.82, n=2,000 >= 0.84; fit at 2,000
under 3 minutes on 2 cores) with whether they are met.

Run from the repository root (``probe``, ``previous`` and ``defaults``: about
12 minutes on two cores; ``recipe`` adds about half an hour, 1,250 steps at
2,000 texts)::

    python benchmarks/finetune_curve.py --data-home ../shared/data \\
        --sizes 100 500 2000 --methods probe previous defaults recipe \\
        --plot docs/_static/finetune_curve.png

``--sizes 100 --methods probe defaults`` is a quick run (3 minutes).
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_name  # noqa: E402

METHODS = {
    "probe": "frozen + LogisticRegression (grid-searched C)",
    "previous": "BertClassifier, 0.1.0.dev0 defaults",
    "defaults": "BertClassifier defaults",
    "recipe": "freeze_layers=0, epochs=10 (earlier recipe)",
    "head": "frozen, head by GD",
    "partial": "partial (freeze 4 of 6)",
    "full": "full fine-tuning (freeze_layers=0)",
}
#: 0.1.0.dev0's defaults, where they differ from today's.
PREVIOUS = dict(min_steps=0, head_init="random", contrastive_steps=0, learning_rate=5e-5,
                epochs=3)
#: Issue #20's targets for the defaults: dev accuracy at each size.
TARGETS = {100: 0.74, 500: 0.82, 2000: 0.84}
TARGET_FIT_SECONDS = (2000, 180.0)


def make_estimator(method, args):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from skbert import BertClassifier, BertVectorizer

    common = dict(model_name=args.model, random_state=args.seed, device="cpu")
    if method == "probe":
        search = GridSearchCV(
            LogisticRegression(max_iter=5000), {"C": np.logspace(-2, 3, 11)}, cv=5,
        )
        return make_pipeline(BertVectorizer(args.model, device="cpu"), search)
    if method == "previous":
        return BertClassifier(**PREVIOUS, **common)
    if method == "defaults":
        return BertClassifier(**common)
    if method == "recipe":
        return BertClassifier(freeze_layers=0, **{**PREVIOUS, "epochs": 10}, **common)
    if method == "head":
        return BertClassifier(freeze_layers="all", epochs=20, **common)
    if method == "partial":
        return BertClassifier(freeze_layers=4, **common)
    if method == "full":
        return BertClassifier(freeze_layers=0, **common)
    raise ValueError(method)


def rst_table(rows, sizes, methods):
    """A reStructuredText grid: one row per size, accuracy and fit wall s per method."""
    head = ["n train"] + [f"{METHODS[m]}" for m in methods]
    body = []
    for n in sizes:
        cells = [str(n)]
        for m in methods:
            r = rows.get((m, n))
            cells.append("" if r is None else f"{r['acc']:.3f} ({r['wall']:.0f} s)")
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
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS),
                        default=["probe", "previous", "defaults", "recipe"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--plot", metavar="PNG", default=None)
    args = parser.parse_args(argv)

    train_file = os.path.join(args.data_home, "sst2", "train.tsv")
    if not os.path.isfile(train_file):
        print(f"skipped: {train_file} not found (pass --data-home or set SKBERT_DATA)")
        return {}

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
    print(f"SST-2: {len(X)} train phrases, {len(X_dev)} dev sentences "
          f"(majority {max(np.mean(y_dev), 1 - np.mean(y_dev)):.3f}); model {args.model}")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads; seed {args.seed}")
    rows = {}
    for n in sizes:
        idx = order[:n]
        X_train, y_train = [X[i] for i in idx], y[idx]
        for m in args.methods:
            est = make_estimator(m, args)
            wall, cpu = time.perf_counter(), time.process_time()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                est.fit(X_train, y_train)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            pred = est.predict(X_dev)
            acc = float(np.mean(pred == y_dev))
            steps = getattr(est, "n_steps_", None)
            warned = [w for w in caught if w.category.__name__ == "ConvergenceWarning"
                      and "BertClassifier" in str(w.message)]
            rows[(m, n)] = {"acc": acc, "cpu": cpu, "wall": wall}
            print(f"n={n:5d}  {m:9s} dev acc {acc:.4f}  positive {np.mean(pred == 1):.0%}  "
                  f"steps {steps if steps is not None else '-':>4}  fit {wall:6.1f} wall s "
                  f"{cpu:7.1f} CPU s{'  (ConvergenceWarning)' if warned else ''}", flush=True)
    print()
    print("dev accuracy (fit wall seconds)")
    print(rst_table(rows, sizes, args.methods))
    if "probe" in args.methods:
        print("\naccuracy minus the frozen probe's at the same n")
        for m in args.methods:
            if m != "probe":
                diffs = [f"n={n}: {rows[(m, n)]['acc'] - rows[('probe', n)]['acc']:+.3f}"
                         for n in sizes]
                print(f"  {m:9s} " + ", ".join(diffs))
    if "defaults" in args.methods:
        print("\nissue #20's targets for the defaults")
        for n in sizes:
            if n in TARGETS:
                acc = rows[("defaults", n)]["acc"]
                print(f"  n={n}: {acc:.4f} against >= {TARGETS[n]}: "
                      f"{'met' if acc >= TARGETS[n] else 'NOT met'}")
        n, limit = TARGET_FIT_SECONDS
        if n in sizes:
            wall = rows[("defaults", n)]["wall"]
            print(f"  fit at n={n}: {wall:.0f} s against < {limit:.0f} s: "
                  f"{'met' if wall < limit else 'NOT met'}")
    if args.plot:
        plot(rows, sizes, args.methods, args.plot,
             "SST-2, all-MiniLM-L6-v2: frozen probe vs BertClassifier")
    return rows


if __name__ == "__main__":
    main()
