"""
=========================================================
[CLS] vs mean vs max pooling, and anisotropy
=========================================================

How should the token vectors of a sentence become one vector? This example
compares three poolings of the last layer of all-MiniLM-L6-v2 on pairs of
STS-B sentences that annotators scored as near-equivalent or as unrelated,
then looks at *anisotropy*, the tendency of sentence vectors to share a
common direction, and at what whitening does to it.

See :ref:`pooling` and :ref:`whitening` for the exact definitions.
"""

# %%
# Similar and dissimilar pairs
# ----------------------------
# STS-B scores sentence pairs from 0 (unrelated) to 5 (equivalent). We take
# 150 test pairs scored at least 4 ("similar") and 150 scored at most 1
# ("dissimilar").
import shutil
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA

from skbert import BertVectorizer
from skbert.datasets import load_stsb

stsb = load_stsb(split="test")
rng = np.random.RandomState(0)
similar = rng.choice(np.flatnonzero(stsb.target >= 4.0), size=150, replace=False)
dissimilar = rng.choice(np.flatnonzero(stsb.target <= 1.0), size=150, replace=False)
pairs = np.concatenate([similar, dissimilar])
left = [stsb.sentence1[i] for i in pairs]
right = [stsb.sentence2[i] for i in pairs]
is_similar = np.arange(len(pairs)) < len(similar)

for i in (similar[0], dissimilar[0]):
    print(f"{stsb.target[i]:.1f}  {stsb.sentence1[i]!r}  /  {stsb.sentence2[i]!r}")


def cosine(a, b):
    """Row-wise cosine similarity."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


# %%
# Cosine similarity per pooling
# -----------------------------
# The three vectorizers share an on-disk feature cache, so the model runs
# once per sentence; ``"cls"`` and ``"max"`` are assembled from the cache.
cache_dir = tempfile.mkdtemp(prefix="skbert-pooling-")
poolings = ["cls", "mean", "max"]
cosines = {}
for pooling in poolings:
    vec = BertVectorizer(pooling=pooling, memory=cache_dir).fit(left + right)
    cosines[pooling] = cosine(vec.transform(left), vec.transform(right))
    sim, dis = cosines[pooling][is_similar], cosines[pooling][~is_similar]
    print(f"{pooling:>4}: similar {sim.mean():.2f}, dissimilar {dis.mean():.2f}, "
          f"gap {sim.mean() - dis.mean():.2f}")

fig, ax = plt.subplots(figsize=(6, 3.8))
positions = np.arange(len(poolings))
ax.boxplot([cosines[p][is_similar] for p in poolings], positions=positions - 0.18,
           widths=0.3, patch_artist=True, boxprops={"facecolor": "tab:green"})
ax.boxplot([cosines[p][~is_similar] for p in poolings], positions=positions + 0.18,
           widths=0.3, patch_artist=True, boxprops={"facecolor": "tab:red"})
ax.set_xticks(positions, poolings)
ax.set_ylabel("cosine similarity")
ax.set_title("STS-B test pairs: similar (green) vs dissimilar (red)")
fig.tight_layout()

# %%
# What matters is not the level of the cosines but how well they separate
# the two groups: the gap between the boxes. The [CLS] vector of a model
# trained on mean-pooled sentence embeddings, as this one is, carries little
# of the sentence's meaning, and max pooling is dominated by a few large
# dimensions shared by all sentences, so similar and dissimilar pairs overlap
# more there; mean pooling separates them best. For a plain pre-trained BERT
# the tutorial behind skbert reports the same ordering (similar / dissimilar:
# cls 0.94 / 0.82, mean 0.87 / 0.54, max 0.93 / 0.80).
#
# Anisotropy
# ----------
# If sentence vectors occupied all directions evenly, two random sentences
# would have a cosine near 0. We measure the cosine of 5,000 random pairs of
# different test sentences, for each pooling, before and after whitening.
# Whitening is fitted on 1,500 sentences of the STS-B *train* split and
# applied to the test sentences; the cache again spares the model all but
# one pass over each sentence.
train = load_stsb(split="train")
fit_sentences = list(rng.choice(train.sentence1 + train.sentence2, size=1500, replace=False))
test_sentences = sorted(set(left + right))
i, j = rng.randint(len(test_sentences), size=(2, 5000))
keep = i != j
i, j = i[keep], j[keep]

features = {}
fig, axes = plt.subplots(1, len(poolings), figsize=(10, 3.2), sharey=True)
bins = np.linspace(-1, 1, 81)
for ax, pooling in zip(axes, poolings):
    for whitening in (None, "whiten"):
        vec = BertVectorizer(pooling=pooling, whitening=whitening, memory=cache_dir)
        X = vec.fit(fit_sentences).transform(test_sentences)
        features[pooling, whitening] = X
        random_cos = cosine(X[i], X[j])
        label = "raw" if whitening is None else "whitened"
        print(f"{pooling:>4}, {label:>8}: random-pair cosine {random_cos.mean():.3f} "
              f"+/- {random_cos.std():.3f}")
        ax.hist(random_cos, bins=bins, alpha=0.6, label=label)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_title(f'pooling="{pooling}"')
    ax.set_xlabel("cosine of random pairs")
axes[0].set_ylabel("pairs")
axes[0].legend()
fig.tight_layout()

# %%
# all-MiniLM-L6-v2 was trained with a contrastive objective on mean-pooled
# vectors, which spreads them: random pairs of mean-pooled sentences are
# already nearly orthogonal. Its [CLS] and max-pooled vectors were not
# trained that way, and they sit in a narrow cone, as the raw vectors of a
# plain BERT do whatever the pooling. Whitening (zero mean, identity
# covariance on the training sentences) brings every pooling back to random
# cosines around 0.
#
# A picture of the cone
# ---------------------
# Projected on their first two principal directions, *without* removing the
# mean, the raw max-pooled vectors sit far from the origin (the black cross):
# every vector shares a large common component, which inflates all cosines.
# Whitened vectors are centred on the origin.
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, whitening in zip(axes, (None, "whiten")):
    X = features["max", whitening]
    components = PCA(n_components=2).fit(X).components_
    projected = X @ components.T
    ax.scatter(projected[:, 0], projected[:, 1], s=4, alpha=0.5)
    ax.plot(0, 0, "k+", markersize=14, mew=2)
    ax.set_title(f'max pooling, whitening={whitening!r}')
    ax.set_xlabel("PC 1 (origin kept)")
    ax.set_ylabel("PC 2")
    ax.set_aspect("equal", adjustable="datalim")
fig.tight_layout()

# %%
# Whether whitening helps a downstream task is an empirical question: see
# :ref:`sphx_glr_auto_examples_plot_whitening_stsb.py`.
shutil.rmtree(cache_dir)
