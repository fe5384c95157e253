"""Assembly: from pooled statistics to the requested features (numpy only).

The order is fixed and documented: every selected layer is pooled on its own
(:func:`pool_layers`), then the pooled layers are combined
(:func:`combine_layers`).
"""

import numpy as np

from ._pooling import STAT_SLOTS

__all__ = [
    "POOLINGS",
    "LAYER_AGGS",
    "pooling_slots",
    "pooling_groups",
    "pool_layers",
    "combine_layers",
    "softmax",
]

POOLINGS = (
    "cls",
    "mean",
    "max",
    "attention",
    "mean_max",
    "last_token",
    "weighted_mean",
    "mean_sqrt_len",
)
#: Poolings read from the ``"pos"`` statistics (see :mod:`skbert._pooling`).
POSITIONAL_POOLINGS = ("last_token", "weighted_mean", "mean_sqrt_len")
LAYER_AGGS = ("concat", "mean", "weighted", "scalar_mix")


def pooling_slots(pooling, exclude_special_tokens):
    """Statistic slots (see :mod:`skbert._pooling`) that make up ``pooling``."""
    suffix = "_content" if exclude_special_tokens else ""
    if pooling == "cls":
        return [STAT_SLOTS["cls"]]
    if pooling == "mean_max":
        return [STAT_SLOTS["mean" + suffix], STAT_SLOTS["max" + suffix]]
    return [STAT_SLOTS[pooling + suffix]]


def pooling_groups(pooling):
    """Which optional statistic groups ``pooling`` reads: ``(attention, positional)``."""
    return pooling == "attention", pooling in POSITIONAL_POOLINGS


def pool_layers(stats, pooling, exclude_special_tokens):
    """Pick the pooled vectors out of statistics.

    Parameters
    ----------
    stats : ndarray, shape (n, n_layers, n_stats, hidden)
    pooling : str
    exclude_special_tokens : bool

    Returns
    -------
    pooled : ndarray, shape (n, n_layers, hidden * k)
        ``k`` is 2 for ``"mean_max"`` (mean then max), else 1.
    """
    slots = pooling_slots(pooling, exclude_special_tokens)
    n, n_layers, _, hidden = stats.shape
    return stats[:, :, slots, :].reshape(n, n_layers, len(slots) * hidden)


def softmax(weights):
    """Numerically stable softmax of a 1-D array."""
    w = np.asarray(weights, dtype=np.float64)
    w = np.exp(w - w.max())
    return w / w.sum()


def combine_layers(pooled, layer_agg, weights=None, gamma=1.0):
    """Combine pooled layers into one vector per text.

    Parameters
    ----------
    pooled : ndarray, shape (n, n_layers, dim)
    layer_agg : {"concat", "mean", "weighted", "scalar_mix"}
    weights : ndarray of shape (n_layers,), optional
        Normalised layer weights for ``"weighted"`` and ``"scalar_mix"``.
    gamma : float, default=1.0
        Scale of the scalar mix.

    Returns
    -------
    features : ndarray of float32, shape (n, n_layers * dim) for concat,
        else (n, dim)
    """
    n, n_layers, dim = pooled.shape
    if n_layers == 1:
        out = pooled[:, 0, :]
        if layer_agg == "scalar_mix":
            out = out * np.float32(gamma)
        return np.ascontiguousarray(out, dtype=np.float32)
    if layer_agg == "concat":
        return np.ascontiguousarray(pooled.reshape(n, n_layers * dim), dtype=np.float32)
    if layer_agg == "mean":
        return pooled.mean(axis=1, dtype=np.float64).astype(np.float32)
    w = np.asarray(weights, dtype=np.float64)
    out = np.einsum("nld,l->nd", pooled.astype(np.float64, copy=False), w)
    if layer_agg == "scalar_mix":
        out *= gamma
    return out.astype(np.float32)
