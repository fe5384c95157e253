"""
===============================================
A grid search that runs the model once per text
===============================================

A grid search over representation choices — which layer, which pooling —
clones :class:`~skbert.BertVectorizer` for every candidate and fold. Without
a cache every clone runs the model again. With ``memory=DIR`` skbert stores,
per text, the pooled statistics of *every* layer, so the whole search runs
the model once per unique text, and a second search not at all.

This example runs the same :class:`~sklearn.model_selection.GridSearchCV`
twice on 300 SST-2 sentences and counts the texts that went through the
model (``skbert._model.backend.forward_counts()``, a test hook).
"""

# %%
# The data and the search
# -----------------------
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skbert import BertVectorizer, cache_clear, cache_info
from skbert._model.backend import forward_counts
from skbert.datasets import load_sst2

texts, y = load_sst2(split="dev", return_X_y=True)
texts, y = texts[:300], y[:300]

memory = tempfile.mkdtemp(prefix="skbert-example-")
grid = {
    "bertvectorizer__layers": [3, -1],
    "bertvectorizer__pooling": ["cls", "mean", "max"],
    "bertvectorizer__exclude_special_tokens": [False, True],
    "logisticregression__C": [0.1, 1.0],
}


def search():
    pipe = make_pipeline(BertVectorizer(memory=memory), LogisticRegression(max_iter=1000))
    before = forward_counts()["texts"]
    start = time.perf_counter()
    gs = GridSearchCV(pipe, grid, cv=3).fit(texts, y)
    return gs, forward_counts()["texts"] - before, time.perf_counter() - start


# %%
# Cold, then warm
# ---------------
# The first search fills the cache: each of the 300 texts runs through the
# model once, although 24 candidates x 3 folds = 72 pipelines are fitted. The
# second search finds everything on disk: no forward pass, and no model
# loaded.
cold, cold_texts, cold_s = search()
warm, warm_texts, warm_s = search()
n_fits = len(cold.cv_results_["params"]) * cold.n_splits_
# Without a cache each fit encodes its train and test fold, and the refit all texts.
uncached_texts = (n_fits + 1) * len(set(texts))
print(f"{n_fits} fits; texts through the model: cold {cold_texts}, warm {warm_texts}, "
      f"without a cache {uncached_texts}")
print(f"wall time: cold {cold_s:.1f} s, warm {warm_s:.1f} s")
print("best:", cold.best_params_, f"accuracy {cold.best_score_:.3f}")
assert cold_texts == len(set(texts)) and warm_texts == 0
assert np.array_equal(cold.cv_results_["mean_test_score"], warm.cv_results_["mean_test_score"])

# %%
# What the search chose
# ---------------------
# Every candidate's cross-validated accuracy, assembled from one pass.
scores = cold.cv_results_["mean_test_score"]
labels = [
    f"L{p['bertvectorizer__layers']} {p['bertvectorizer__pooling']}"
    f"{' -sp' if p['bertvectorizer__exclude_special_tokens'] else ''} C={p['logisticregression__C']}"
    for p in cold.cv_results_["params"]
]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5), width_ratios=[1, 2])
ax1.bar(["without cache\n(fits x texts)", "cold", "warm"], [uncached_texts, cold_texts, warm_texts],
        color=["0.6", "C0", "C2"])
ax1.set_ylabel("texts through the model")
ax1.set_title("forward passes")
order = np.argsort(scores)
ax2.barh(np.arange(len(scores)), scores[order], color="C0")
ax2.set_yticks(np.arange(len(scores)), [labels[i] for i in order], fontsize=7)
ax2.set_xlim(0.5, 1.0)
ax2.set_xlabel("cross-validated accuracy")
ax2.set_title("candidates")
fig.tight_layout()

# %%
# The cache
# ---------
# :func:`skbert.cache_info` reports entries, size and the last call's hits
# and misses; ``skbert cache info DIR`` prints the same.
info = cache_info(memory)
print(f"{info['entries']} entries, {info['bytes'] / 2**20:.1f} MiB "
      f"({info['bytes'] // info['entries']:,} bytes per text), last call: "
      f"{info['last_call']['hits']} hits, {info['last_call']['misses']} misses")
cache_clear(memory)
