"""
==================================
What each layer knows
==================================

An encoder with :math:`L` layers gives :math:`L + 1` hidden states: the
embedding output (index 0) and one per transformer layer. How different are
they? This example takes the mean-pooled vectors of all 7 hidden states of
all-MiniLM-L6-v2 for 400 STS-B sentences and measures how similar the layers
are to each other, how much each layer changes the vector, and how
anisotropic each layer's vectors are.

The features come from one :class:`~skbert.BertVectorizer` with
``layers="all"`` and ``layer_agg="concat"``, whose output is reshaped into
``(n_texts, n_hidden_states, hidden_size)``; the diagnostics are the
functions of :mod:`skbert.probing`.
"""

# %%
# Per-layer features
# ------------------
# With ``layer_agg="concat"`` the pooled layers are laid out one after the
# other, so a reshape recovers one vector per text and layer.
import matplotlib.pyplot as plt
import numpy as np

from skbert import BertVectorizer
from skbert.datasets import load_stsb
from skbert.probing import anisotropy, layer_change, layer_similarity

stsb = load_stsb(split="test")
sentences = list(dict.fromkeys(stsb.sentence1))[:400]

vec = BertVectorizer(layers="all", layer_agg="concat", pooling="mean")
X = vec.fit_transform(sentences)
n_states = len(vec.layers_)
H = X.reshape(len(sentences), n_states, vec.hidden_size_)
print(f"{X.shape} features -> H of shape {H.shape} "
      f"({vec.n_layers_} transformer layers + the embedding output)")

# %%
# Layer-to-layer similarity
# -------------------------
# ``S[a, b]`` is the mean, over sentences, of the cosine between a
# sentence's layer-``a`` vector and its layer-``b`` vector. It is a few lines
# of numpy:
U = H / np.linalg.norm(H, axis=2, keepdims=True)
S = np.einsum("nad,nbd->ab", U, U) / len(sentences)

# %%
# :func:`skbert.probing.layer_similarity` computes the same and draws it.
fig, ax = plt.subplots(figsize=(5.5, 4.5))
S_probe = layer_similarity(H, ax=ax)
ax.set_title("mean cosine between a sentence's layers")
fig.tight_layout()
assert np.allclose(S, S_probe, atol=1e-5)
print(np.round(S, 2))

# %%
# Adjacent layers are similar, and the similarity falls with the distance
# between layers: each layer rewrites part of the representation. In this
# model the last layer stands apart from all the others: it is the one that
# the sentence-similarity training shaped most. (For a plain BERT-base, the
# tutorial behind skbert reports a cosine of about 0.5 between layers 1
# and 12.)
#
# How much does each layer change the vector?
# -------------------------------------------
# The mean L2 distance between a sentence's vectors in adjacent layers,
# absolute and relative to the norm of the lower layer's vector.
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
change = layer_change(H, ax=axes[0])
relative = layer_change(H, relative=True, ax=axes[1])
axes[0].set_title("mean L2 change")
axes[1].set_title("relative L2 change")
fig.tight_layout()
for a, (c, r) in enumerate(zip(change, relative)):
    print(f"layer {a} -> {a + 1}: L2 change {c:.2f} ({r:.0%} of the norm)")

# %%
# Anisotropy by layer
# -------------------
# The mean cosine of random pairs of *different* sentences at each layer,
# raw, centred and whitened (each fitted on these sentences). A high raw
# value means the layer's vectors share a common direction.
fig, ax = plt.subplots(figsize=(6, 3.5))
result = anisotropy(H, ax=ax)
ax.set_title("random-pair cosine by layer")
fig.tight_layout()
for layer, value in enumerate(result["raw"]):
    print(f"layer {layer}: raw random-pair cosine {value:.3f}")

# %%
# In this model, trained with a contrastive objective on the mean-pooled last
# layer, anisotropy is strongest in the middle of the network and almost
# gone at the last layer, the one the training shaped. Which layer is best
# for a task is a separate question, answered by a probe: see
# :func:`skbert.probing.probe_layers`, or put ``layers`` in a grid search
# as in :ref:`sphx_glr_auto_examples_plot_quickstart.py`.
