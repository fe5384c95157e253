"""
==================================================
Long documents on IMDB: truncation vs chunking
==================================================

BERT-style encoders read at most 512 tokens; many IMDB reviews are longer, and
truncation silently drops their ends. With ``long_text="chunk"``,
:class:`~skbert.BertVectorizer` splits each review into token windows
(``chunk_size`` tokens, ``chunk_overlap`` shared between neighbours, cut at
word boundaries), encodes every window, pools within each window and then
aggregates the windows with ``chunk_agg``.

This example compares, on 200 reviews of the IMDB training split, a linear
probe on truncated reviews (128 and 256 tokens) with one on chunked reviews
(windows of 128 tokens). The chunk aggregations share one feature cache, so
only the first runs the model.
"""

# %%
# Data
# ----
import tempfile
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from skbert import BertVectorizer, TruncationWarning
from skbert.datasets import load_imdb

imdb = load_imdb(split="train")
rng = np.random.RandomState(0)
idx = np.concatenate([rng.choice(np.flatnonzero(imdb.target == c), 100, replace=False) for c in (0, 1)])
texts = [imdb.data[i] for i in idx]
y = imdb.target[idx]
print(f"{len(texts)} reviews, median {int(np.median([len(t.split()) for t in texts]))} words")

# %%
# Truncation warns how many texts it cut
# --------------------------------------
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", TruncationWarning)
    BertVectorizer(max_length=128).fit(texts[:20]).transform(texts[:20])
print(caught[0].message)

# %%
# Probe accuracy by setting
# -------------------------
cv = StratifiedKFold(5, shuffle=True, random_state=0)
cache = tempfile.mkdtemp(prefix="skbert-long-")
settings = {
    "truncate 128": dict(max_length=128),
    "truncate 256": dict(max_length=256),
    "chunk mean": dict(long_text="chunk", chunk_size=128, chunk_agg="mean"),
    "chunk token_mean": dict(long_text="chunk", chunk_size=128, chunk_agg="token_mean"),
    "chunk max": dict(long_text="chunk", chunk_size=128, chunk_agg="max"),
    "chunk first": dict(long_text="chunk", chunk_size=128, chunk_agg="first"),
}
scores, seconds = {}, {}
for name, params in settings.items():
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        X = BertVectorizer(memory=cache, **params).fit_transform(texts)
    seconds[name] = time.perf_counter() - start
    scores[name] = cross_val_score(LogisticRegression(max_iter=2000), X, y, cv=cv)
    print(f"{name:>17}: {scores[name].mean():.3f} +/- {scores[name].std():.3f}  "
          f"({seconds[name]:.1f} s to encode)")

# %%
# "chunk first" reads about the same tokens as "truncate 128" (its window
# ends at a word boundary), while the other aggregations read the whole
# review. With 200 reviews the folds are small, so differences of a few
# points are within noise; ``benchmarks/long_documents.py`` runs the larger
# comparison reported in the user guide. The windows are encoded once: switching
# ``chunk_agg`` afterwards costs no forward pass.
fig, ax = plt.subplots(figsize=(7, 3.5))
names = list(scores)
ax.barh(names, [scores[n].mean() for n in names], xerr=[scores[n].std() for n in names], color="C0")
ax.set_xlabel("5-fold probe accuracy")
ax.set_xlim(0.5, 1.0)
ax.set_title("IMDB, all-MiniLM-L6-v2, mean pooling, last layer")
fig.tight_layout()
plt.show()
