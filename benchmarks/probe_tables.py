"""Linear-probe tables of all-MiniLM-L6-v2 on SST-2 and TREC, for the docs.

For each data set, :func:`skbert.probing.probe_layers` scores a logistic
regression (``max_iter=1000``, C=1) on the frozen features of every hidden
state (0 = embedding output .. 6), for cls / mean / max pooling, without and
with whitening, by 5-fold stratified cross-validation (shuffled, seed 0).
Writes, into ``--out`` (default ``docs/_static``):

- ``probe_<name>.csv``: the tidy table;
- ``probe_<name>.png``: :func:`skbert.probing.plot_probe`;
- ``probe_<name>_table.txt``: the table as an RST list-table (layers x
  poolings), for ``.. include::`` in the docs;
- ``diagnostics_sst2.png``: anisotropy, layer similarity, layer change and a
  PCA scatter of the SST-2 subset (mean pooling).

and prints the tables, the best configuration, the time and the number of
texts that went through the model. With a warm feature cache (``--memory``)
a rerun runs the model zero times.

    SKBERT_DATA=../shared/data python benchmarks/probe_tables.py --memory ~/.cache/skbert

Data: SST-2 ``train`` (a seeded random sample of ``--sst2-n`` phrases) and
TREC ``train`` (all 5,452 questions, 6 coarse classes), read with
:mod:`skbert.datasets` from ``$SKBERT_DATA`` (no download).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"sst2": "SST-2", "trec": "TREC"}


def _rst_table(table, title):
    rows = table.to_dict("records")
    poolings = list(dict.fromkeys(r["pooling"] for r in rows))
    whitenings = list(dict.fromkeys(r["whitening"] for r in rows))
    keys = [(p, w) for w in whitenings for p in poolings]
    best = max(rows, key=lambda r: r["mean_score"])
    cell = {(r["layer"], r["pooling"], r["whitening"]): r for r in rows}
    lines = [f".. list-table:: {title}", "   :header-rows: 1", "", "   * - layer"]
    lines += [f"     - {p}" + ("" if w == "none" else f" + {w}") for p, w in keys]
    for layer in sorted({r["layer"] for r in rows}):
        lines.append(f"   * - {layer}")
        for key in keys:
            r = cell[(layer, *key)]
            text = f"{r['mean_score']:.3f} ± {r['std_score']:.3f}"
            lines.append(f"     - **{text}**" if r is best else f"     - {text}")
    return "\n".join(lines) + "\n"


def _print_pivot(table):
    pivot = table.pivot_table(index="layer", columns=["whitening", "pooling"], values="mean_score")
    print(pivot.round(3).to_string())


def run(name, texts, y, args, out):
    from sklearn.model_selection import StratifiedKFold

    from skbert.probing import best_configuration, probe_layers
    from skbert.cli.report import save_probe_plot

    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    start = time.perf_counter()
    table = probe_layers(
        texts, y, poolings=("cls", "mean", "max"), whitening=(None, "whiten"),
        cv=cv, memory=args.memory, n_jobs=args.n_jobs, verbose=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    best = best_configuration(table)
    classes, counts = np.unique(y, return_counts=True)
    print(f"\n== {NAMES[name]}: {len(texts)} texts, {len(classes)} classes, majority {counts.max() / counts.sum():.3f}")
    print(f"features: {table.attrs['forward_texts']} texts through the model, {table.attrs['extract_seconds']:.1f} s; "
          f"total {seconds:.1f} s")  # fmt: skip
    _print_pivot(table)
    print(f"best: layer {best['layer']}, {best['pooling']}, whitening {best['whitening']}: "
          f"{best['mean_score']:.3f} ± {best['std_score']:.3f}")  # fmt: skip
    table.to_csv(out / f"probe_{name}.csv", index=False, float_format="%.4f")
    save_probe_plot(table, out / f"probe_{name}.png",
                    title=f"{NAMES[name]} ({len(texts)} texts): linear probe of all-MiniLM-L6-v2")  # fmt: skip
    (out / f"probe_{name}_table.txt").write_text(
        _rst_table(table, f"{NAMES[name]}: accuracy, 5-fold CV (mean ± std)"), encoding="utf-8"
    )
    return table


def diagnostics(texts, y, args, out):
    from matplotlib.figure import Figure

    from skbert.probing import anisotropy, layer_change, layer_features, layer_similarity, pca_scatter

    H = layer_features(texts, pooling="mean", memory=args.memory)
    fig = Figure(figsize=(11, 8), layout="constrained")
    axes = fig.subplots(2, 2)
    aniso = anisotropy(H, ax=axes[0, 0])
    axes[0, 0].set_title("anisotropy: mean cosine of random pairs")
    S = layer_similarity(H, ax=axes[0, 1])
    axes[0, 1].set_title("layer-to-layer cosine (same sentence)")
    change = layer_change(H, relative=True, ax=axes[1, 0])
    axes[1, 0].set_title("relative L2 change between adjacent layers")
    labels = np.where(np.asarray(y) == 1, "positive", "negative")
    pca = pca_scatter(H[:, -1], labels, ax=axes[1, 1])
    axes[1, 1].set_title("PCA of the last layer (mean pooling)")
    fig.savefig(out / "diagnostics_sst2.png", dpi=110)
    print("\n== diagnostics (SST-2 subset, mean pooling)")
    for key, values in aniso.items():
        print(f"anisotropy {key:>8}: " + " ".join(f"{v:.3f}" for v in values))
    print("similarity layer 0 vs others: " + " ".join(f"{v:.3f}" for v in S[0]))
    print("similarity layer 1 vs 6: " f"{S[1, -1]:.3f}")
    print("relative change: " + " ".join(f"{v:.3f}" for v in change))
    print("PCA explained variance ratio: " + " ".join(f"{v:.3f}" for v in pca["explained_variance_ratio"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sst2-n", type=int, default=2000)
    parser.add_argument("--memory", default=None, help="feature cache folder (default: none)")
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "docs" / "_static"))
    parser.add_argument("--only", choices=["sst2", "trec"], default=None)
    args = parser.parse_args(argv)

    from skbert.datasets import load_sst2, load_trec

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_home = os.environ.get("SKBERT_DATA")
    print(f"python {sys.version.split()[0]}, data home {data_home}, cache {args.memory}")
    if args.only in (None, "sst2"):
        texts, y = load_sst2(split="train", data_home=data_home, download_if_missing=False, return_X_y=True)
        idx = np.sort(np.random.default_rng(0).choice(len(texts), args.sst2_n, replace=False))
        texts, y = [texts[i] for i in idx], y[idx]
        run("sst2", texts, y, args, out)
        diagnostics(texts, y, args, out)
    if args.only in (None, "trec"):
        texts, y = load_trec(split="train", data_home=data_home, download_if_missing=False, return_X_y=True)
        run("trec", texts, y, args, out)


if __name__ == "__main__":
    main()
