"""A SetFit-style few-shot baseline against which BertClassifier's small-data defaults are judged.

SetFit (Tunstall et al., 2022, "Efficient Few-Shot Learning Without Prompts")
fine-tunes a sentence encoder contrastively on pairs of training texts
(cosine similarity 1 for two texts of the same class, 0 otherwise), then fits
a logistic regression on the tuned embeddings. This script does that with
sentence-transformers' own modules and a plain torch loop (no ``setfit``
package): ``--iterations`` rounds, each pairing every training text with one
random text of its class and one of another class; AdamW at 2e-5, batches of
16 pairs, one pass; then ``LogisticRegression`` on the tuned
``SentenceTransformer.encode`` vectors.

It prints SST-2 dev accuracy (872 sentences) for each ``--sizes`` subset,
drawn as ``benchmarks/finetune_curve.py`` draws them (same seed, same texts),
so the rows compare with its table, and the wall time of the fit.

Example (about 3 minutes on two cores for 100 texts)::

    python benchmarks/setfit_baseline.py --data-home ../shared/data --sizes 100
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_name  # noqa: E402


def pairs_for(labels, iterations, rng):
    """SetFit's pairs: each text with one same-class and one other-class text, per round."""
    out = []
    for _ in range(iterations):
        for i, label in enumerate(labels):
            same, other = np.flatnonzero(labels == label), np.flatnonzero(labels != label)
            out.append((i, int(rng.choice(same)), 1.0))
            out.append((i, int(rng.choice(other)), 0.0))
    rng.shuffle(out)
    return out


def setfit(path, texts, labels, iterations, seed, batch_size=16, lr=2e-5):
    import torch
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    torch.manual_seed(seed)
    model = SentenceTransformer(path, device="cpu")
    pairs = pairs_for(labels, iterations, np.random.RandomState(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        a = model(model.tokenize([texts[i] for i, _, _ in batch]))["sentence_embedding"]
        b = model(model.tokenize([texts[j] for _, j, _ in batch]))["sentence_embedding"]
        target = torch.tensor([t for _, _, t in batch])
        loss = torch.nn.functional.mse_loss(torch.cosine_similarity(a, b), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    head = LogisticRegression(max_iter=2000).fit(model.encode(texts), labels)
    return model, head, len(pairs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=os.environ.get("SKBERT_DATA", "../shared/data"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100])
    parser.add_argument("--iterations", type=int, default=20, help="pair rounds (SetFit's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    train_file = os.path.join(args.data_home, "sst2", "train.tsv")
    if not os.path.isfile(train_file):
        print(f"skipped: {train_file} not found (pass --data-home or set SKBERT_DATA)")
        return {}
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        print("skipped: sentence-transformers is not installed")
        return {}
    import torch

    import skbert
    from skbert._model.backend import ModelSpec, resolve_model
    from skbert.datasets import load_sst2

    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_model(ModelSpec(skbert.DEFAULT_MODEL))
    X, y = load_sst2(split="train", data_home=args.data_home, download_if_missing=False,
                     return_X_y=True)
    X_dev, y_dev = load_sst2(split="dev", data_home=args.data_home, download_if_missing=False,
                             return_X_y=True)
    order = np.random.RandomState(args.seed).permutation(len(X))  # as finetune_curve.py
    print(f"CPU: {cpu_name()}, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads; seed {args.seed}, {args.iterations} pair rounds")
    rows = {}
    for n in sorted(args.sizes):
        idx = order[:n]
        texts, labels = [X[i] for i in idx], y[idx]
        start = time.perf_counter()
        model, head, n_pairs = setfit(path, texts, labels, args.iterations, args.seed)
        wall = time.perf_counter() - start
        acc = float(np.mean(head.predict(model.encode(list(X_dev))) == y_dev))
        rows[n] = {"acc": acc, "wall": wall}
        print(f"n={n:5d}  SetFit-style  dev acc {acc:.4f}  {n_pairs} pairs  fit {wall:6.1f} wall s",
              flush=True)
    return rows


if __name__ == "__main__":
    main()
