"""Fitted numpy transforms of the embedding space: center, whiten, all-but-the-top.

These are learned in ``fit`` on the training texts only and applied in
``transform``. All statistics are computed in float64.

- ``"center"``: subtract the training mean.
- ``"whiten"``: BERT-whitening (Su et al., 2021): subtract the mean ``mu`` and
  multiply by ``W = U diag(1 / sqrt(s))`` where ``U, s`` come from the SVD of
  the covariance; keep the first ``n_components`` columns. Directions whose
  variance is numerically zero (a rank-deficient or even rank-zero covariance,
  as layer 0's [CLS] vector, identical for every text) are mapped to 0 rather
  than divided by zero.
- ``"abtt"``: all-but-the-top (Mu & Viswanath, 2018): subtract the mean and
  remove the projections on the top ``n_components`` principal directions
  (default ``max(1, dim // 100)``).

``"whiten"`` fitted on ``n`` samples of ``dim >= n`` dimensions keeping ``n``
or more components warns with :class:`WhiteningWarning`: the covariance has
rank at most ``n - 1``, so the kept directions include ones whose variance is
noise.

A grid search fits the same whitening on the same training features again and
again (one fit per classifier candidate): fits are memoised in-process, keyed
by the method, ``n_components`` and a digest of the training matrix, with a
small bound (:data:`FIT_MEMO_ENTRIES`, :data:`FIT_MEMO_BYTES`). A memoised fit
is a copy of the first one, bitwise identical to fitting again.
"""

import hashlib
import threading
import warnings
from collections import OrderedDict

import numpy as np

from .exceptions import WhiteningWarning

__all__ = ["WHITENINGS", "Whitener", "WhiteningWarning"]

WHITENINGS = ("center", "whiten", "abtt")

#: At most this many fitted whitenings are memoised per process (0 disables).
FIT_MEMO_ENTRIES = 32
#: ... and at most this many bytes of fitted arrays.
FIT_MEMO_BYTES = 64 << 20

_MEMO = OrderedDict()  # key -> (fitted attributes, nbytes)
_MEMO_LOCK = threading.Lock()
_FITTED = ("mean_", "n_features_out_", "explained_variance_", "components_", "top_directions_")


class Whitener:
    """A fitted linear map ``x -> (x - mean_) @ components_`` (plus ABTT).

    Parameters
    ----------
    method : {"center", "whiten", "abtt"}
    n_components : int or None
        Kept dimensions for ``"whiten"``; removed directions for ``"abtt"``.
    """

    def __init__(self, method, n_components=None):
        self.method = method
        self.n_components = n_components

    def fit(self, X):
        X = np.asarray(X)
        if self.method == "whiten":
            _warn_rank(X.shape, self.n_components)
        key = _memo_key(self.method, self.n_components, X)
        if key is not None:
            with _MEMO_LOCK:
                hit = _MEMO.get(key)
                if hit is not None:
                    _MEMO.move_to_end(key)
            if hit is not None:
                for name, value in hit[0].items():
                    setattr(self, name, value.copy() if isinstance(value, np.ndarray) else value)
                return self
        self._fit(X)
        if key is not None:
            _memo_store(key, {n: getattr(self, n) for n in _FITTED if hasattr(self, n)})
        return self

    def _fit(self, X):
        X = np.asarray(X, dtype=np.float64)
        n, dim = X.shape
        self.mean_ = X.mean(axis=0)
        self.n_features_out_ = dim
        if self.method == "center":
            return self
        Xc = X - self.mean_
        # Covariance via SVD of the centred data: stable and rank-aware.
        _, sing, vt = np.linalg.svd(Xc, full_matrices=False)
        var = sing**2 / max(n - 1, 1)
        # With n < dim the SVD gives n directions; the rest have zero variance
        # and are mapped to 0 (whiten) or left alone (abtt), so zero rows
        # stand in for them without computing an orthonormal completion.
        if vt.shape[0] < dim:
            vt = np.vstack([vt, np.zeros((dim - vt.shape[0], dim))])
            var = np.concatenate([var, np.zeros(dim - var.shape[0])])
        tol = max(var.max(initial=0.0) * dim * np.finfo(np.float32).eps, 1e-12)
        self.explained_variance_ = var
        if self.method == "whiten":
            k = dim if self.n_components is None else min(int(self.n_components), dim)
            scale = np.where(var[:k] > tol, 1.0 / np.sqrt(np.maximum(var[:k], tol)), 0.0)
            self.components_ = vt[:k].T * scale
            self.n_features_out_ = k
        else:  # abtt
            d = max(1, dim // 100) if self.n_components is None else int(self.n_components)
            self.top_directions_ = vt[: min(d, dim)]
        return self

    def transform(self, X):
        Xc = np.asarray(X, dtype=np.float64) - self.mean_
        if self.method == "whiten":
            Xc = Xc @ self.components_
        elif self.method == "abtt":
            top = self.top_directions_
            Xc = Xc - (Xc @ top.T) @ top
        return Xc.astype(np.float32)


def _warn_rank(shape, n_components):
    """Warn when ``"whiten"`` keeps at least as many directions as samples."""
    n, dim = shape
    kept = dim if n_components is None else min(int(n_components), dim)
    if n == 0 or kept < n:
        return
    if n >= 3:
        advice = (
            f"Pass n_components={max(1, n // 2)} (at most {n - 1}, fewer is "
            "safer), fit on more texts (several times the dimension), or use "
            "whitening='center'."
        )
    else:
        advice = "Fit on more texts (several times the dimension), or use whitening='center'."
    warnings.warn(
        f"whitening='whiten' was fitted on {n} samples of {dim} dimensions and "
        f"keeps {kept}: the covariance has rank at most {n - 1} < {kept}, so "
        "the kept directions include ones whose variance is noise, and "
        f"whitening amplifies it to unit variance. {advice}",
        WhiteningWarning,
        stacklevel=3,
    )


def _memo_key(method, n_components, X):
    """The memo key of a fit, or None when memoising is off or not worth it."""
    if FIT_MEMO_ENTRIES <= 0 or method == "center" or X.ndim != 2:
        return None
    data = np.ascontiguousarray(X)
    digest = hashlib.blake2b(memoryview(data).cast("B"), digest_size=32).digest()
    return (method, n_components, data.shape, data.dtype.str, digest)


def _memo_store(key, fitted):
    nbytes = sum(v.nbytes for v in fitted.values() if isinstance(v, np.ndarray))
    if nbytes > FIT_MEMO_BYTES:
        return
    fitted = {
        name: value.copy() if isinstance(value, np.ndarray) else value
        for name, value in fitted.items()
    }
    with _MEMO_LOCK:
        _MEMO[key] = (fitted, nbytes)
        _MEMO.move_to_end(key)
        total = sum(size for _, size in _MEMO.values())
        while _MEMO and (len(_MEMO) > FIT_MEMO_ENTRIES or total > FIT_MEMO_BYTES):
            _, (_, size) = _MEMO.popitem(last=False)
            total -= size


def clear_fit_memo():
    """Forget every memoised fit."""
    with _MEMO_LOCK:
        _MEMO.clear()
