"""
=========================================================
Frozen probe, partial and gradual fine-tuning
=========================================================

How much of a BERT should be trained? :class:`~skbert.BertClassifier` makes
the answer a hyperparameter: ``freeze_layers="all"`` trains only a linear head
on frozen features, ``freeze_layers=4`` also trains the top 2 of
all-MiniLM-L6-v2's 6 layers, and ``unfreeze="gradual"`` starts from the head
alone and unfreezes 2 layers per epoch from the top down.

This example fits the three on 300 SST-2 training phrases and scores them on
300 dev sentences, on a CPU. The sizes are kept tiny so that the example runs
in a minute or two; :ref:`finetuning` shows the full curve against
training-set size.
"""

# %%
# Data
# ----
import time

import matplotlib.pyplot as plt
import numpy as np

from skbert import BertClassifier
from skbert.datasets import load_sst2

X, y = load_sst2(split="train", return_X_y=True)
X_dev, y_dev = load_sst2(split="dev", return_X_y=True)
rng = np.random.RandomState(0)
train = rng.choice(len(X), size=300, replace=False)
dev = rng.choice(len(X_dev), size=300, replace=False)
X_train, y_train = [X[i] for i in train], y[train]
X_dev, y_dev = [X_dev[i] for i in dev], y_dev[dev]
print(f"{len(X_train)} training phrases, {len(X_dev)} dev sentences")

# %%
# Three ways to train the same model
# ----------------------------------
# All three share the representation (mean pooling of the last layer) and
# the random seed; they differ only in what is trained. The head-only fit
# runs the frozen encoder once and caches its features, so it can afford
# more epochs. ``min_steps=0`` runs exactly ``epochs`` epochs (by default a
# fit makes at least 200 optimisation steps: 11 epochs of these 300 texts),
# to keep the example short and the epochs comparable.
strategies = {
    "frozen (head only)": dict(freeze_layers="all", epochs=20),
    "partial (freeze 4 of 6)": dict(freeze_layers=4, epochs=3, min_steps=0),
    "gradual (2 layers/epoch)": dict(
        freeze_layers=0, unfreeze="gradual", unfreeze_step=2, epochs=3, min_steps=0
    ),
}
results = {}
for name, params in strategies.items():
    clf = BertClassifier(pooling="mean", random_state=0, **params)
    start = time.process_time()
    clf.fit(X_train, y_train)
    seconds = time.process_time() - start
    results[name] = (clf, clf.score(X_dev, y_dev), seconds)
    print(f"{name:26s} dev accuracy {results[name][1]:.3f}   fit {seconds:5.1f} CPU s")

# %%
# What was trained, epoch by epoch
# --------------------------------
# ``n_trainable_params_`` counts the parameters trained in each epoch, head
# included; ``trainable_layers_`` names them (0 is the embeddings). Gradual
# unfreezing starts with the head's 770 parameters and adds two layers per
# epoch: 3.5 million parameters on MiniLM (14.2 million on BERT-base). With
# only three epochs, its lower layers train for one epoch at the end of the
# learning-rate schedule; gradual unfreezing pays off over longer runs.
for name, (clf, _, _) in results.items():
    print(f"{name:26s} {clf.trainable_layers_}")

# %%
# Did it learn anything?
# ----------------------
# Each fit starts from a head fitted as a logistic regression on the frozen
# features (``head_init="probe"``, its ``C`` in ``probe_C_``) and compares its
# training loss with the loss of predicting the class frequencies alone
# (``prior_loss_``, the labels' entropy). A fit whose loss stays near it, or
# that predicts one class far more often than the labels do, warns with a
# :class:`~sklearn.exceptions.ConvergenceWarning`.
for name, (clf, _, _) in results.items():
    print(f"{name:26s} {clf.n_steps_:4d} steps, probe C={clf.probe_C_}, training loss "
          f"{clf.train_loss_:.3f} against {clf.prior_loss_:.3f} for the class frequencies")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
for name, (clf, acc, _) in results.items():
    epochs = np.arange(1, clf.n_iter_ + 1)
    ax1.step(epochs, np.asarray(clf.n_trainable_params_) / 1e6, where="mid", marker="o",
             label=name)
    ax2.plot(epochs, clf.loss_curve_, marker="o", label=f"{name} (dev {acc:.3f})")
ax1.set_xlabel("epoch")
ax1.set_ylabel("trainable parameters (millions)")
ax1.set_title("What each epoch trains")
ax2.set_xlabel("epoch")
ax2.set_ylabel("training loss")
ax2.set_title("Training loss")
ax1.legend(fontsize=8)
ax2.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# Searching the amount of fine-tuning
# -----------------------------------
# Because ``freeze_layers`` is an ordinary parameter, a grid search can pick
# it (this would refit 3 models per fold, so it is not run here)::
#
#     from sklearn.model_selection import GridSearchCV
#     search = GridSearchCV(
#         BertClassifier(epochs=3, random_state=0),
#         {"freeze_layers": ["all", 4, 0]},
#         cv=3,
#     ).fit(X_train, y_train)
#
# A fitted classifier pickles with its tuned weights, and
# ``save_pretrained(path)`` writes the tuned encoder as a Hugging Face folder
# that ``BertVectorizer(model_name=path)`` can use.
