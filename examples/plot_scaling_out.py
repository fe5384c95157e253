"""
==============================================
Scaling out: fill a store on a cluster, search
==============================================

On a cluster, embed a corpus once with :mod:`skbert.engines.dask` into a
feature store that every machine reaches, then run grid searches anywhere
without the model. This example runs the whole flow on a
:class:`distributed.LocalCluster` of two workers, on 200 SST-2 sentences
(the bundled demo reviews when SST-2 is not on disk) and the bundled
all-MiniLM-L6-v2.

The workers here are threads of this process (``processes=False``): the
example starts in seconds, needs no worker processes to import torch and load
the model again, and runs the same way inside the documentation build. It
also lets this process count every forward pass (``forward_counts()``, a test
hook) the workers run. On a real cluster, use worker processes on many
machines and a store URL (``memory="s3://bucket/skbert"``), see
:ref:`scaling_out`; the calls are the same.
"""

# %%
# A corpus with duplicates, as a Dask Series
# ------------------------------------------
import logging
import tempfile
import time

import dask.dataframe as dd
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from distributed import Client, LocalCluster

from skbert import BertVectorizer, cache_info
from skbert._model.backend import forward_counts
from skbert.datasets import load_demo, load_sst2
from skbert.engines import dask as skdask

try:
    texts, y = load_sst2(split="dev", download_if_missing=False, return_X_y=True)
    source = "SST-2 dev"
except OSError:
    texts, y = load_demo(return_X_y=True)
    source = "bundled demo reviews"
texts, y = list(texts[:200]), np.asarray(y[:200])

# 300 rows, 200 unique texts: a third of the rows repeat another row, in
# other partitions.
corpus = texts + texts[:100]
series = dd.from_pandas(pd.Series(corpus, dtype=object), npartitions=4, sort=False)
print(f"{len(corpus)} rows ({len(set(corpus))} unique {source} sentences) in 4 partitions")

logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)  # one line per shuffle
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
client = Client(cluster)

# %%
# Fill the store: one forward pass per unique text
# ------------------------------------------------
# ``fill`` deduplicates the texts across partitions with Dask's own shuffle,
# so each unique text is embedded by one worker, once. The store is a local
# folder here; on a cluster it is a URL every worker reaches.
memory = tempfile.mkdtemp(prefix="skbert-scaling-")
vectorizer = BertVectorizer(memory=memory)

before = forward_counts()["texts"]
start = time.perf_counter()
report = skdask.fill(vectorizer, series)
fill_seconds = time.perf_counter() - start
print(f"fill: {report} in {fill_seconds:.1f} s; "
      f"forward passes: {forward_counts()['texts'] - before} texts")
print(f"store: {cache_info(memory)['entries']} entries")

# %%
# Features of the whole collection, read from the store
# ------------------------------------------------------
# ``transform`` returns a lazy Dask array (no ``meta=`` to give). The store
# is full, so computing it runs no model.
before = forward_counts()["texts"]
X = skdask.transform(vectorizer, series).compute()
print(f"features {X.shape}, {X.dtype}; forward passes: {forward_counts()['texts'] - before}")

# %%
# A grid search on the cluster, reading the store
# -----------------------------------------------
# Under ``joblib.parallel_backend("dask")``, GridSearchCV sends its fits to
# the workers. Every layer x pooling candidate is assembled from the stored
# statistics: no forward pass.
import joblib
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

pipe = make_pipeline(BertVectorizer(memory=memory), LogisticRegression(max_iter=1000))
grid = {
    "bertvectorizer__layers": [3, -1, [-2, -1]],
    "bertvectorizer__pooling": ["cls", "mean", "max"],
}
before = forward_counts()["texts"]
start = time.perf_counter()
with joblib.parallel_backend("dask"):
    search = GridSearchCV(pipe, grid, cv=3, n_jobs=-1).fit(texts, y)
grid_seconds = time.perf_counter() - start
print(f"grid search: {len(search.cv_results_['params']) * 3} fits in {grid_seconds:.1f} s; "
      f"forward passes: {forward_counts()['texts'] - before}")
print(f"best: {search.best_params_}, accuracy {search.best_score_:.3f}")

client.close()
cluster.close()

# %%
# The cost of each step
# ---------------------
fig, ax = plt.subplots(figsize=(6, 2.4))
ax.barh(["fill (model)", "grid search (store)"], [fill_seconds, grid_seconds], color=["C1", "C0"])
ax.set_xlabel("seconds")
ax.set_title(f"{len(set(corpus))} unique texts, {len(search.cv_results_['params']) * 3} fits")
fig.tight_layout()
plt.show()
