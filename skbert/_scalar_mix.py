"""Learning an ELMo/AllenNLP scalar mix of layers from labels.

The mix is ``gamma * sum_l softmax(s)_l * x_l``: ``n_layers + 1`` parameters.
They are learned jointly with a linear head (logistic regression for class
labels, least squares for continuous targets) by full-batch L-BFGS on the
pooled training features, after which the head is thrown away: only the
layer weights and ``gamma`` are kept.
"""

import numpy as np

from ._assembly import softmax

__all__ = ["fit_scalar_mix"]


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
