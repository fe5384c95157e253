"""Assembly: from pooled statistics to the requested features (numpy only).

The order is fixed and documented: every selected layer is pooled on its own
(:func:`pool_layers`), then the pooled layers are combined
(:func:`combine_layers`).

With ``layer_agg="scalar_mix"`` the combination is an ELMo/AllenNLP scalar
mix, ``gamma * sum_l softmax(s)_l * x_l`` (``n_layers + 1`` parameters),
learned by :func:`fit_scalar_mix` jointly with a linear head (logistic
regression for class labels, least squares for continuous targets) by
full-batch L-BFGS on the pooled training features, after which the head is
thrown away: only the layer weights and ``gamma`` are kept. That fit alone
uses torch, imported when it runs.
"""

import numpy as np

from .pooling import STAT_SLOTS

__all__ = [
    "POOLINGS",
    "LAYER_AGGS",
    "pooling_parts",
    "pooling_slots",
    "pooling_groups",
    "pool_layers",
    "combine_layers",
    "softmax",
    "fit_scalar_mix",
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
#: Poolings read from the ``"pos"`` statistics (see :mod:`skbert._extraction.pooling`).
POSITIONAL_POOLINGS = ("last_token", "weighted_mean", "mean_sqrt_len")
LAYER_AGGS = ("concat", "mean", "weighted", "scalar_mix")


def pooling_parts(pooling):
    """The single poolings concatenated by ``pooling``.

    ``"mean_max"`` is ``["mean", "max"]``; several poolings joined by ``"+"``
    (``"max+mean"``, as a sentence-transformers Pooling module with several
    modes resolves) are concatenated in that order.
    """
    parts = []
    for part in str(pooling).split("+"):
        parts += ["mean", "max"] if part == "mean_max" else [part]
    return parts


def pooling_slots(pooling, exclude_special_tokens):
    """Statistic slots (see :mod:`skbert._extraction.pooling`) that make up ``pooling``."""
    suffix = "_content" if exclude_special_tokens else ""
    return [
        STAT_SLOTS["cls"] if part == "cls" else STAT_SLOTS[part + suffix]
        for part in pooling_parts(pooling)
    ]


def pooling_groups(pooling):
    """Which optional statistic groups ``pooling`` reads: ``(attention, positional)``."""
    parts = pooling_parts(pooling)
    return "attention" in parts, any(part in POSITIONAL_POOLINGS for part in parts)


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
        ``k`` is the number of poolings concatenated (see :func:`pooling_parts`):
        2 for ``"mean_max"`` (mean then max), else 1 for a single pooling.
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


# ------------------------------------------------------------ scalar mix
def fit_scalar_mix(pooled, y, *, alpha=1e-3, max_iter=200, random_state=None):
    """Learn scalar-mix weights from pooled layers and targets.

    Parameters
    ----------
    pooled : ndarray, shape (n, n_layers, dim)
    y : array-like of shape (n,)
        Class labels, or continuous targets.
    alpha : float, default=1e-3
        L2 penalty on the linear head.
    max_iter : int, default=200
    random_state : int, RandomState instance or None
        Seeds the head's initialisation (through
        :func:`sklearn.utils.check_random_state`; None means a fixed seed,
        so the mix is deterministic).

    Returns
    -------
    weights : ndarray of shape (n_layers,)
        Softmax-normalised layer weights.
    gamma : float
    """
    import torch
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import type_of_target

    y = np.asarray(y)
    kind = type_of_target(y)
    n, n_layers, dim = pooled.shape
    X = torch.as_tensor(np.asarray(pooled, dtype=np.float32))
    # Condition the problem: one global scale, identical for every layer, so
    # relative layer magnitudes (part of what the mix learns) are preserved.
    centre = X.mean(dim=0, keepdim=True)
    scale = (X - centre).std().clamp_min(1e-12)
    X = (X - centre) / scale

    # None keeps the historical fixed seed; an int or a RandomState instance
    # goes through check_random_state (the instance is advanced, as sklearn does).
    seed = 0 if random_state is None else int(check_random_state(random_state).randint(2**31))
    generator = torch.Generator().manual_seed(seed)
    if kind in ("binary", "multiclass"):
        classes, codes = np.unique(y, return_inverse=True)
        n_out = len(classes)
        target = torch.as_tensor(codes, dtype=torch.long)
        loss_fn = torch.nn.functional.cross_entropy
    elif kind in ("continuous", "multiclass-multioutput", "continuous-multioutput"):
        yy = y.reshape(n, -1).astype(np.float32)
        yy = (yy - yy.mean(axis=0)) / np.maximum(yy.std(axis=0), 1e-12)
        n_out = yy.shape[1]
        target = torch.as_tensor(yy)
        loss_fn = torch.nn.functional.mse_loss
    else:
        raise ValueError(
            f"layer_agg='scalar_mix' learns layer weights from y, which must be "
            f"class labels or continuous targets; got target type {kind!r}."
        )
    s = torch.zeros(n_layers, requires_grad=True)
    log_gamma = torch.zeros(1, requires_grad=True)
    W = (0.01 * torch.randn(dim, n_out, generator=generator)).requires_grad_(True)
    b = torch.zeros(n_out, requires_grad=True)
    params = [s, log_gamma, W, b]
    opt = torch.optim.LBFGS(params, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        mix = torch.exp(log_gamma) * torch.einsum("nld,l->nd", X, torch.softmax(s, 0))
        loss = loss_fn(mix @ W + b, target) + alpha * (W**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    weights = softmax(s.detach().numpy())
    # gamma was learned on rescaled features; it applies to the raw ones.
    gamma = float(torch.exp(log_gamma.detach()))
    return weights, gamma
