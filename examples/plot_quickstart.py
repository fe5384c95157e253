"""
=================================================
Quickstart: search layers and pooling on SST-2
=================================================

:class:`~skbert.BertVectorizer` makes each representation choice a
hyperparameter. Here a :class:`~sklearn.model_selection.GridSearchCV` picks
the hidden layer and the token pooling of a frozen all-MiniLM-L6-v2 for
sentiment classification on a few hundred SST-2 sentences, and the chosen
pipeline is evaluated on the SST-2 dev set.

With ``memory=``, the vectorizer keeps the pooled statistics of every layer
of every text in an on-disk cache, so the model runs once per sentence for
the whole search: the 18 candidates times 3 folds are then assembled from
the cache in milliseconds.
"""

# %%
# Data
# ----
# SST-2 sentences are short movie-review snippets labelled positive or
# negative. The training split also holds many sub-sentence phrases; we draw
# 400 training examples of at least six words, and evaluate on the full dev
# set (872 sentences).
import shutil
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skbert import BertVectorizer
from skbert.datasets import load_sst2

train = load_sst2(split="train")
dev = load_sst2(split="dev")

rng = np.random.RandomState(0)
candidates = [i for i, text in enumerate(train.data) if len(text.split()) >= 6]
picked = rng.choice(candidates, size=400, replace=False)
X_train = [train.data[i] for i in picked]
y_train = train.target[picked]
X_dev, y_dev = dev.data, dev.target

print(f"{len(X_train)} training sentences, {len(X_dev)} dev sentences")
print("example:", X_train[0], "->", train.target_names[y_train[0]])

# %%
# The pipeline and the grid
# -------------------------
# The model has 6 transformer layers; hidden state 0 is the embedding output.
# We search the layer (1 to 6) and the pooling (``"cls"``, ``"mean"``,
# ``"max"``) with 3-fold cross-validation.
cache_dir = tempfile.mkdtemp(prefix="skbert-quickstart-")

pipe = make_pipeline(
    BertVectorizer(memory=cache_dir),
    LogisticRegression(max_iter=1000),
)
param_grid = {
    "bertvectorizer__layers": [1, 2, 3, 4, 5, 6],
    "bertvectorizer__pooling": ["cls", "mean", "max"],
}
grid = GridSearchCV(pipe, param_grid, cv=3)

start = time.perf_counter()
grid.fit(X_train, y_train)
print(f"grid search: {len(grid.cv_results_['params'])} candidates x 3 folds "
      f"in {time.perf_counter() - start:.1f} s")
print("best:", grid.best_params_, f"CV accuracy {grid.best_score_:.3f}")

# %%
# The refit pipeline read every sentence from the cache: no model run.
print(grid.best_estimator_.named_steps["bertvectorizer"].last_cache_stats_)

# %%
# Cross-validated accuracy of every candidate
# -------------------------------------------
results = pd.DataFrame(grid.cv_results_)
table = results.pivot_table(
    index="param_bertvectorizer__layers",
    columns="param_bertvectorizer__pooling",
    values="mean_test_score",
)[["cls", "mean", "max"]]
print(table.round(3))

fig, ax = plt.subplots(figsize=(5, 4))
im = ax.imshow(table.to_numpy(), cmap="viridis", aspect="auto")
ax.set_xticks(range(table.shape[1]), table.columns)
ax.set_yticks(range(table.shape[0]), [f"layer {layer}" for layer in table.index])
for (i, j), value in np.ndenumerate(table.to_numpy()):
    ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w")
ax.set_xlabel("pooling")
ax.set_title("SST-2, 3-fold CV accuracy (400 sentences)")
fig.colorbar(im, ax=ax)
fig.tight_layout()

# %%
# Evaluation on the dev set
# -------------------------
# ``GridSearchCV`` refits the best pipeline on all 400 training sentences.
# The dev sentences are new to the cache: the model runs on them once.
start = time.perf_counter()
dev_accuracy = grid.score(X_dev, y_dev)
print(f"dev accuracy of the best pipeline: {dev_accuracy:.3f} "
      f"({time.perf_counter() - start:.1f} s)")

# %%
# For comparison, the default representation (last layer, mean pooling)
# refit on the same sentences, and a majority-class baseline:
default = make_pipeline(BertVectorizer(memory=cache_dir), LogisticRegression(max_iter=1000))
default.fit(X_train, y_train)
print(f"default (layer -1, mean): {default.score(X_dev, y_dev):.3f}")
print(f"majority class:           {max(np.mean(y_dev), 1 - np.mean(y_dev)):.3f}")

# %%
# With 400 labelled sentences the differences between nearby candidates are
# within cross-validation noise; what matters is that the search costs one
# pass of the model over the texts, whatever the size of the grid.
shutil.rmtree(cache_dir)
