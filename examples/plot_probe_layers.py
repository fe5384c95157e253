"""
=====================================================
Which layer and which pooling? A linear probe on TREC
=====================================================

The practical question behind every frozen-BERT model is which hidden layer
and which pooling to use. The answer is a *linear probe*: the
cross-validated score of a logistic regression trained on the frozen
features of each layer. :func:`skbert.probing.probe_layers` computes the whole
table in one call and runs the model once per text for all of it.

This example probes all-MiniLM-L6-v2 on 600 questions of TREC (question
type, 6 classes), then lets :class:`skbert.probing.BertLayerSelector` pick the
layer inside a pipeline, by inner cross-validation on the training data only,
and scores that pipeline on the TREC test set.
"""

# %%
# The data
# --------
# A stratified sample of 600 training questions; the test set is the usual
# 500 TREC-10 questions. The data home comes from ``SKBERT_DATA``.
import tempfile
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline

from skbert._model.backend import forward_counts
from skbert.datasets import load_trec
from skbert.probing import BertLayerSelector, plot_probe, probe_layers

X_all, y_all = load_trec(split="train", data_home=None, return_X_y=True)
X_train, _, y_train, _ = train_test_split(
    X_all, y_all, train_size=600, stratify=y_all, random_state=0
)
X_test, y_test = load_trec(split="test", data_home=None, return_X_y=True)
classes, counts = np.unique(y_train, return_counts=True)
print(", ".join(f"{c}: {n}" for c, n in zip(classes, counts)))

# %%
# The probe table
# ---------------
# Every hidden state (0 is the embedding output, 6 the last layer) with
# [CLS], mean and max pooling, 5-fold stratified cross-validation. The
# table is a pandas DataFrame, one row per configuration. A feature cache
# (here a temporary folder) lets the layer selector below reuse the
# features instead of running the model again.
cache = tempfile.TemporaryDirectory(prefix="skbert-example-")
memory = cache.name
cv = StratifiedKFold(5, shuffle=True, random_state=0)
before = forward_counts()["texts"]
start = time.perf_counter()
table = probe_layers(X_train, y_train, poolings=("cls", "mean", "max"), cv=cv, memory=memory)
print(f"{time.perf_counter() - start:.0f} s, "
      f"{forward_counts()['texts'] - before} texts through the model "
      f"for {len(table)} configurations x {cv.get_n_splits()} folds")
print(table.pivot(index="layer", columns="pooling", values="mean_score").round(3))

# %%
# One line per pooling, error bars of one standard deviation over the folds,
# and the majority-class rate for reference.
ax = plot_probe(table, title="TREC (600 questions): linear probe by layer")

# %%
# Even the embedding output (layer 0, context-free word vectors) scores far
# above the majority class with mean pooling: which words a question uses
# says much about its type ("How many", "Who", "Where"). Context adds to
# it: mean pooling improves up to layer 5, and the last layer, trained for
# sentence similarity, is lower again. [CLS] of layer 0 is the same vector
# for every text, so its probe predicts the majority class; raw [CLS]
# vectors stay weak until the upper layers. Mean pooling is the safe choice
# at every layer.
#
# Choosing the layer inside a pipeline
# ------------------------------------
# Reading the table and hard-coding the winner uses all the data for the
# choice. :class:`~skbert.probing.BertLayerSelector` makes the choice in
# ``fit``, by inner cross-validation on the training data only, so it can sit
# in a pipeline that is scored on held-out data.
selector = BertLayerSelector(pooling="mean", cv=3, memory=memory)
model = make_pipeline(selector, LogisticRegression(max_iter=1000))
before = forward_counts()["texts"]
model.fit(X_train, y_train)
print(f"fit: {forward_counts()['texts'] - before} texts through the model")
print(f"chosen layer: {selector.best_layer_} "
      f"(inner CV accuracy {selector.best_score_:.3f})")
print({layer: round(score, 3) for layer, score in selector.scores_.items()})
print(f"TREC test accuracy: {model.score(X_test, y_test):.3f}")
cache.cleanup()
