"""Truncation vs chunking on long IMDB reviews: probe accuracy and extraction time.

For each setting, the reviews are encoded once (cold, into a fresh feature
cache) with all-MiniLM-L6-v2, mean pooling of the last layer, and a
LogisticRegression probe is cross-validated on the features. The chunk
aggregations share one cache, so only the first of them runs the model.

Usage::

    SKBERT_DATA=../shared/data python benchmarks/long_documents.py --n-docs 1000

Prints a Markdown table; ``--out FILE`` also writes it.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-docs", type=int, default=1000, help="IMDB train reviews, balanced (default 1000)")
    parser.add_argument("--data-home", default=os.environ.get("SKBERT_DATA", "../shared/data"))
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--chunk-overlap", type=int, default=32)
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from skbert import BertVectorizer, TruncationWarning
    from skbert._model.backend import forward_counts, load_tokenizer, ModelSpec, DEFAULT_MODEL
    from skbert.datasets import load_imdb

    try:
        data = load_imdb(split="train", data_home=args.data_home, download_if_missing=False)
    except OSError as exc:
        print(f"skipped: IMDB data not available ({exc})")
        return 0
    rng = np.random.RandomState(0)
    y_all = np.asarray(data.target)
    idx = np.concatenate([
        rng.choice(np.flatnonzero(y_all == c), args.n_docs // 2, replace=False) for c in (0, 1)
    ])
    texts = [data.data[i] for i in idx]
    y = y_all[idx]
    tok = load_tokenizer(ModelSpec(DEFAULT_MODEL))
    lengths = np.array([len(ids) for ids in tok(texts, verbose=False)["input_ids"]])
    print(f"{len(texts)} IMDB reviews: median {int(np.median(lengths))} tokens, "
          f"{(lengths > 512).mean():.1%} over 512, {(lengths > 256).mean():.1%} over 256, "
          f"{(lengths > 128).mean():.1%} over 128", file=sys.stderr)

    configs = [(f"truncate {m}", dict(max_length=m)) for m in (128, 256, 512)]
    configs += [
        (f"chunk {args.chunk_size}/{args.chunk_overlap} {agg}",
         dict(long_text="chunk", chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap, chunk_agg=agg))
        for agg in ("mean", "token_mean", "max", "first")
    ]
    cv = StratifiedKFold(args.cv, shuffle=True, random_state=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, params in configs:
            memory = os.path.join(tmp, "chunks" if "chunk" in params.get("long_text", "") else name.replace(" ", "_"))
            vec = BertVectorizer(memory=memory, **params)
            before = forward_counts()["texts"]
            start = time.perf_counter()
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncationWarning)
                X = vec.fit_transform(texts)
            seconds = time.perf_counter() - start
            passes = forward_counts()["texts"] - before
            scores = cross_val_score(LogisticRegression(max_iter=2000, C=1.0), X, y, cv=cv)
            rows.append((name, scores.mean(), scores.std(), seconds, passes))
            print(f"{name}: {scores.mean():.4f} +/- {scores.std():.4f}  {seconds:.1f}s  {passes} sequences",
                  file=sys.stderr)
    base = next(r[3] for r in rows if r[0] == "truncate 512")
    lines = [
        "| setting | probe accuracy | extraction s (cold) | vs truncate 512 | sequences encoded |",
        "|---|---|---|---|---|",
    ]
    for name, mean, std, seconds, passes in rows:
        lines.append(f"| {name} | {mean:.4f} +/- {std:.4f} | {seconds:.1f} | {seconds / base:.2f}x | {passes} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
