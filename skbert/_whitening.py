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
"""

import numpy as np

__all__ = ["WHITENINGS", "Whitener"]

WHITENINGS = ("center", "whiten", "abtt")


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
