"""Representation diagnostics: numbers about sentence vectors, and their pictures.

:func:`anisotropy`, :func:`layer_similarity`, :func:`layer_change`,
:func:`pca_scatter` and :func:`vector_histogram` take feature arrays (e.g.
from :func:`skbert.probing.layer_features`), return numbers, and draw with
matplotlib (an optional dependency, imported only when drawing) when
``plot=True`` or an ``ax`` is given. They are public as ``skbert.probing.*``.
"""

import numpy as np
from sklearn.utils import check_random_state

from ._whitening import Whitener

__all__ = [
    "anisotropy",
    "layer_change",
    "layer_similarity",
    "pca_scatter",
    "vector_histogram",
    "pyplot",
    "axes",
]


def pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "Drawing needs matplotlib: pip install matplotlib "
            "(or pip install 'skbert[plot]')."
        ) from None
    return plt


def axes(ax):
    if ax is None:
        ax = pyplot().subplots()[1]
    return ax


def _as_float(X, what, ndim):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim not in ndim:
        raise ValueError(f"{what} must have {' or '.join(map(str, ndim))} dimensions; got shape {X.shape}.")
    return X


def _cosine_rows(A, B):
    na = np.linalg.norm(A, axis=-1)
    nb = np.linalg.norm(B, axis=-1)
    denom = np.where((na > 0) & (nb > 0), na * nb, 1.0)
    return np.sum(A * B, axis=-1) / denom


def _random_pairs(n, n_pairs, rng):
    if n < 2:
        raise ValueError(f"anisotropy needs at least 2 vectors; got {n}.")
    i = rng.integers(n, size=n_pairs)
    j = (i + rng.integers(1, n, size=n_pairs)) % n  # never i itself
    return i, j


def anisotropy(X, *, n_pairs=10000, random_state=0, plot=False, ax=None):
    """Mean cosine similarity of random pairs, before and after whitening.

    Raw BERT sentence vectors sit in a narrow cone: unrelated texts have a
    high cosine similarity. Centering (subtracting the mean) and whitening
    (zero mean, identity covariance, fitted on ``X`` itself) remove it, which
    this function measures on the same random pairs.

    Parameters
    ----------
    X : array-like of shape (n_samples, dim) or (n_samples, n_layers, dim)
        Sentence vectors, or per-layer vectors from :func:`layer_features`.
    n_pairs : int, default=10000
        Random pairs of distinct texts.
    random_state : int, RandomState instance or None, default=0
    plot : bool, default=False
        Draw: for 2-D input, histograms of the pair cosines; for 3-D input,
        mean cosine by layer.
    ax : matplotlib Axes, default=None
        Where to draw (implies ``plot=True``).

    Returns
    -------
    result : dict
        ``"raw"``, ``"centered"`` and ``"whitened"``: the mean pair cosine,
        a float for 2-D input, an ndarray of shape (n_layers,) for 3-D input.

    Examples
    --------
    >>> import numpy as np
    >>> from skbert.probing import anisotropy
    >>> rng = np.random.default_rng(0)
    >>> cone = rng.normal(size=(500, 16)) + 5.0  # all vectors share a direction
    >>> res = anisotropy(cone)
    >>> bool(res["raw"] > 0.9), bool(abs(res["whitened"]) < 0.05)
    (True, True)
    """
    X = _as_float(X, "X", (2, 3))
    rng = np.random.default_rng(check_random_state(random_state).randint(2**32 - 1))
    i, j = _random_pairs(X.shape[0], int(n_pairs), rng)
    stacked = X if X.ndim == 3 else X[:, None, :]
    out = {"raw": [], "centered": [], "whitened": []}
    pair_cos = {}
    for layer in range(stacked.shape[1]):
        H = stacked[:, layer]
        variants = {
            "raw": H,
            "centered": H - H.mean(axis=0),
            "whitened": Whitener("whiten").fit(H).transform(H).astype(np.float64),
        }
        for name, V in variants.items():
            cos = _cosine_rows(V[i], V[j])
            out[name].append(float(cos.mean()))
            pair_cos[name] = cos
    if X.ndim == 2:
        result = {k: v[0] for k, v in out.items()}
    else:
        result = {k: np.asarray(v) for k, v in out.items()}
    if plot or ax is not None:
        ax = axes(ax)
        if X.ndim == 2:
            bins = np.linspace(-1, 1, 61)
            for name in ("raw", "whitened"):
                ax.hist(pair_cos[name], bins=bins, alpha=0.6, label=f"{name} (mean {result[name]:.2f})")
            ax.set_xlabel("cosine similarity of random pairs")
            ax.set_ylabel("pairs")
        else:
            layers = np.arange(stacked.shape[1])
            for name, v in result.items():
                ax.plot(layers, v, marker="o", label=name)
            ax.set_xlabel("layer (0 = embedding output)")
            ax.set_ylabel("mean cosine of random pairs")
            ax.set_xticks(layers)
            ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return result


def layer_similarity(H, *, plot=False, ax=None):
    """Layer-by-layer mean cosine similarity of the same text's vectors.

    Parameters
    ----------
    H : array-like of shape (n_samples, n_layers, dim)
        Per-layer vectors, e.g. from :func:`layer_features`.
    plot : bool, default=False
        Draw a heatmap.
    ax : matplotlib Axes, default=None
        Where to draw (implies ``plot=True``).

    Returns
    -------
    S : ndarray of shape (n_layers, n_layers)
        ``S[a, b]`` is the mean over texts of the cosine between the text's
        layer-a and layer-b vectors; symmetric, ones on the diagonal (except
        for all-zero vectors).

    Examples
    --------
    >>> import numpy as np
    >>> from skbert.probing import layer_similarity
    >>> H = np.random.default_rng(0).normal(size=(10, 3, 8))
    >>> layer_similarity(H).shape
    (3, 3)
    """
    H = _as_float(H, "H", (3,))
    norms = np.linalg.norm(H, axis=2, keepdims=True)
    U = H / np.where(norms > 0, norms, 1.0)
    S = np.einsum("nad,nbd->ab", U, U) / max(H.shape[0], 1)
    if plot or ax is not None:
        ax = axes(ax)
        im = ax.imshow(S, vmin=min(0.0, S.min()), vmax=1.0, cmap="viridis")
        n = S.shape[0]
        if n <= 16:
            for a in range(n):
                for b in range(n):
                    ax.text(b, a, f"{S[a, b]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if S[a, b] < 0.6 else "black")  # fmt: skip
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xlabel("layer")
        ax.set_ylabel("layer")
        ax.figure.colorbar(im, ax=ax, label="mean cosine")
    return S


def layer_change(H, *, relative=False, plot=False, ax=None):
    """Mean L2 change of a text's vector between adjacent layers.

    Parameters
    ----------
    H : array-like of shape (n_samples, n_layers, dim)
        Per-layer vectors, e.g. from :func:`layer_features`.
    relative : bool, default=False
        Divide each change by the norm of the lower layer's vector.
    plot : bool, default=False
        Draw the change per layer transition.
    ax : matplotlib Axes, default=None
        Where to draw (implies ``plot=True``).

    Returns
    -------
    change : ndarray of shape (n_layers - 1,)
        ``change[l]`` is the mean over texts of ``||H[:, l + 1] - H[:, l]||``.

    Examples
    --------
    >>> import numpy as np
    >>> from skbert.probing import layer_change
    >>> H = np.zeros((2, 3, 4)); H[:, 1] = 1.0; H[:, 2] = 3.0
    >>> layer_change(H).tolist()
    [2.0, 4.0]
    """
    H = _as_float(H, "H", (3,))
    if H.shape[1] < 2:
        raise ValueError("layer_change needs at least 2 layers.")
    diff = np.linalg.norm(np.diff(H, axis=1), axis=2)
    if relative:
        base = np.linalg.norm(H[:, :-1], axis=2)
        diff = diff / np.where(base > 0, base, 1.0)
    change = diff.mean(axis=0)
    if plot or ax is not None:
        ax = axes(ax)
        labels = [f"{a}\u2192{a + 1}" for a in range(change.shape[0])]
        ax.bar(labels, change)
        ax.set_xlabel("layer transition")
        ax.set_ylabel("relative L2 change" if relative else "mean L2 change")
        ax.grid(alpha=0.3, axis="y")
    return change


def pca_scatter(X, y=None, *, n_components=2, plot=False, ax=None, max_points=5000, random_state=0):
    """Project vectors on their first principal components, coloured by label.

    Parameters
    ----------
    X : array-like of shape (n_samples, dim)
        Sentence vectors.
    y : array-like of shape (n_samples,), default=None
        Labels used for colours.
    n_components : int, default=2
    plot : bool, default=False
        Draw a scatter of the first two components.
    ax : matplotlib Axes, default=None
        Where to draw (implies ``plot=True``).
    max_points : int, default=5000
        At most this many points are drawn (a random subset); the projection
        uses all of them.
    random_state : int, RandomState instance or None, default=0

    Returns
    -------
    result : dict
        ``"embedding"``: ndarray of shape (n_samples, n_components);
        ``"explained_variance_ratio"``: ndarray of shape (n_components,).

    Examples
    --------
    >>> import numpy as np
    >>> from skbert.probing import pca_scatter
    >>> res = pca_scatter(np.random.default_rng(0).normal(size=(20, 5)))
    >>> res["embedding"].shape
    (20, 2)
    """
    from sklearn.decomposition import PCA

    X = _as_float(X, "X", (2,))
    pca = PCA(n_components=n_components, random_state=random_state)
    Z = pca.fit_transform(X)
    result = {"embedding": Z, "explained_variance_ratio": pca.explained_variance_ratio_}
    if plot or ax is not None:
        ax = axes(ax)
        rng = check_random_state(random_state)
        idx = np.arange(Z.shape[0])
        if Z.shape[0] > max_points:
            idx = np.sort(rng.choice(Z.shape[0], max_points, replace=False))
        if y is None:
            ax.scatter(Z[idx, 0], Z[idx, 1], s=8, alpha=0.6)
        else:
            y = np.asarray(y)
            for label in np.unique(y):
                sel = idx[y[idx] == label]
                ax.scatter(Z[sel, 0], Z[sel, 1], s=8, alpha=0.6, label=str(label))
            ax.legend(fontsize="small", markerscale=2)
        evr = pca.explained_variance_ratio_
        ax.set_xlabel(f"PC 1 ({evr[0]:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({evr[1]:.0%} of variance)" if evr.shape[0] > 1 else "")
    return result


def vector_histogram(x, *, bins=50, plot=False, ax=None):
    """Distribution of the values of one vector.

    BERT vectors typically have a few "rogue" dimensions far larger than the
    rest; ``argmax_abs`` names the largest.

    Parameters
    ----------
    x : array-like of shape (dim,)
        One vector.
    bins : int, default=50
    plot : bool, default=False
        Draw the histogram.
    ax : matplotlib Axes, default=None
        Where to draw (implies ``plot=True``).

    Returns
    -------
    result : dict
        ``counts`` and ``edges`` (as :func:`numpy.histogram`), ``mean``,
        ``std``, ``min``, ``max``, ``argmax_abs`` (index of the largest
        absolute value) and ``kurtosis`` (excess; 0 for a normal
        distribution).

    Examples
    --------
    >>> from skbert.probing import vector_histogram
    >>> res = vector_histogram([0.0, 1.0, 2.0, -8.0], bins=4)
    >>> res["argmax_abs"], res["counts"].tolist()
    (3, [1, 0, 0, 3])
    """
    x = _as_float(x, "x", (1,))
    counts, edges = np.histogram(x, bins=bins)
    std = float(x.std())
    kurt = float(np.mean(((x - x.mean()) / std) ** 4) - 3.0) if std > 0 else 0.0
    result = {
        "counts": counts,
        "edges": edges,
        "mean": float(x.mean()),
        "std": std,
        "min": float(x.min()),
        "max": float(x.max()),
        "argmax_abs": int(np.argmax(np.abs(x))),
        "kurtosis": kurt,
    }
    if plot or ax is not None:
        ax = axes(ax)
        ax.hist(x, bins=edges)
        ax.set_xlabel("value")
        ax.set_ylabel("dimensions")
        ax.set_title(f"mean {result['mean']:.3f}, std {std:.3f}, max |x| at dim {result['argmax_abs']}",
                     fontsize="small")  # fmt: skip
    return result
