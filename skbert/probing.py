"""Layer probing and representation diagnostics.

The tutorial's practical question, "which layer and which pooling should I
use?", is answered by a linear probe per layer: the cross-validated score of a
simple classifier trained on the frozen features of each hidden state.
:func:`probe_layers` computes that whole table in one call, and
:class:`BertLayerSelector` makes the choice inside a pipeline by inner
cross-validation on the training data only.

Cost. The model runs once per unique text for the whole table: one
:class:`~skbert.BertVectorizer` pass with ``layers="all"`` yields every hidden
state, and with a feature cache (``memory=DIR``, or a temporary one when
several poolings are probed) every further pooling is assembled from the
cached statistics. The cross-validation then runs on those features with
scikit-learn's :func:`~sklearn.model_selection.cross_validate`, one call per
configuration, all on the same folds. Whitening is refitted on each training
fold, exactly as ``Pipeline([("bert", BertVectorizer(...)), ("clf", ...)])``
would do, so every score equals that pipeline's cross-validated score.

The diagnostics (:func:`anisotropy`, :func:`layer_similarity`,
:func:`layer_change`, :func:`pca_scatter`, :func:`vector_histogram`, written in
``skbert._diagnostics`` and public here) take feature arrays, e.g. from
:func:`layer_features`, return numbers, and draw with matplotlib (an optional
dependency, imported only when drawing) when ``plot=True`` or an ``ax`` is
given.
"""

import contextlib
import logging
import numbers
import os
import tempfile
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone, is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import ParameterGrid, check_cv, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ._diagnostics import (
    anisotropy,
    axes,
    layer_change,
    layer_similarity,
    pca_scatter,
    vector_histogram,
)
from ._extraction.assembly import POOLINGS
from ._model import backend as _backend
from ._model.backend import DEFAULT_MODEL
from ._validation import check_texts
from ._vectorizer import BertVectorizer
from ._whitening import WHITENINGS, Whitener
from .exceptions import FeatureCacheWarning

__all__ = [
    "BertLayerSelector",
    "anisotropy",
    "best_configuration",
    "layer_change",
    "layer_features",
    "layer_similarity",
    "make_probe_pipeline",
    "pca_scatter",
    "plot_probe",
    "probe_layers",
    "vector_histogram",
]

logger = logging.getLogger(__name__)

#: BertVectorizer parameters that change the extracted statistics; passed
#: through ``vectorizer_params``.
_EXTRACTION_PARAMS = frozenset(
    {
        "revision",
        "exclude_special_tokens",
        "max_length",
        "batch_size",
        "max_batch_tokens",
        "device",
        "dtype",
        "cache_dtype",
        "cache_max_bytes",
        "cache_storage_options",
        "trust_remote_code",
        "use_safetensors",
        "backend",
        "prompt",
        "prompt_name",
    }
)
#: BertVectorizer parameters applied after pooling (fitted per training fold).
_POST_PARAMS = frozenset({"n_components", "normalize"})


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _default_estimator():
    return LogisticRegression(max_iter=1000)


def _pandas():
    try:
        import pandas
    except ImportError:  # pragma: no cover - exercised by monkeypatching
        return None
    return pandas


def _as_tuple(value, what):
    if value is None or isinstance(value, str):
        return (value,)
    try:
        values = tuple(value)
    except TypeError:
        raise TypeError(f"{what} must be a str or a sequence of str; got {value!r}.") from None
    if not values:
        raise ValueError(f"{what} must not be empty.")
    return values


def _check_poolings(poolings):
    poolings = _as_tuple(poolings, "poolings")
    for p in poolings:
        if p not in POOLINGS:
            raise ValueError(
                f"Unknown pooling {p!r}; choose among {', '.join(map(repr, POOLINGS))}."
            )
    return tuple(dict.fromkeys(poolings))


def _check_whitening(whitening):
    out = []
    for w in _as_tuple(whitening, "whitening"):
        if w is None or w == "none":
            out.append(None)
        elif w in WHITENINGS:
            out.append(w)
        else:
            raise ValueError(
                f"Unknown whitening {w!r}; choose among None, "
                f"{', '.join(map(repr, WHITENINGS))}."
            )
    return tuple(dict.fromkeys(out))


def _split_vectorizer_params(vectorizer_params):
    params = dict(vectorizer_params or {})
    unknown = set(params) - _EXTRACTION_PARAMS - _POST_PARAMS
    if unknown:
        raise ValueError(
            f"vectorizer_params cannot hold {sorted(unknown)}: model_name, layers, "
            "pooling(s), whitening and memory are arguments of their own, and "
            "layer_agg / layer_weights do not apply to a per-layer probe. "
            f"Allowed keys: {sorted(_EXTRACTION_PARAMS | _POST_PARAMS)}."
        )
    extraction = {k: v for k, v in params.items() if k in _EXTRACTION_PARAMS}
    post = {k: v for k, v in params.items() if k in _POST_PARAMS}
    return extraction, post


@contextlib.contextmanager
def _scratch_memory(memory, needed):
    """``memory``, or a temporary cache folder for this call when ``needed``."""
    if memory is not None or not needed:
        yield memory
        return
    with tempfile.TemporaryDirectory(prefix="skbert-scratch-") as tmp, warnings.catch_warnings():
        # The user asked for no cache: a model that cannot be cached is
        # simply run again, without a warning about caching.
        warnings.simplefilter("ignore", FeatureCacheWarning)
        yield tmp


def _extract(texts, *, model_name, layers, poolings, memory, extraction_params, verbose):
    """Pooled features of every requested layer, per pooling.

    Returns
    -------
    layers : list of int
        Non-negative hidden-state indices (axis 1 of each array).
    features : dict
        pooling -> ndarray of float32, shape (n_texts, n_layers, dim).
    """
    # Attention pooling first: its pass also stores the base statistics, so
    # the other poolings are then read from the cache.
    order = sorted(poolings, key=lambda p: p != "attention")
    features = {}
    layer_ids = None
    with _scratch_memory(memory, needed=len(poolings) > 1) as mem:
        for pooling in order:
            vec = BertVectorizer(
                model_name,
                layers=layers,
                layer_agg="concat",
                pooling=pooling,
                memory=mem,
                verbose=verbose,
                **extraction_params,
            )
            flat = vec.fit_transform(texts)
            layer_ids = list(vec.layers_)
            features[pooling] = flat.reshape(len(texts), len(layer_ids), -1)
    return layer_ids, features


class _PostProcess(TransformerMixin, BaseEstimator):
    """Whitening and L2 normalisation of pooled features, as BertVectorizer does.

    Fitted on the training fold only, inside the probe's pipeline.
    """

    def __init__(self, whitening=None, n_components=None, normalize=False):
        self.whitening = whitening
        self.n_components = n_components
        self.normalize = normalize

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float32)
        self.whitener_ = None
        if self.whitening is not None:
            self.whitener_ = Whitener(self.whitening, self.n_components).fit(X)
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float32)
        if self.whitener_ is not None:
            X = self.whitener_.transform(X)
        if self.normalize:
            norms = np.linalg.norm(X, axis=1, keepdims=True)
            X = X / np.where(norms > 0, norms, 1.0)
        return X.astype(np.float32, copy=False)


def _scoring_name(scoring, estimator):
    if scoring is None:
        return "accuracy" if is_classifier(estimator) else "score"
    if isinstance(scoring, str):
        return scoring
    return getattr(scoring, "__name__", "score")


def _check_targets(y, n, estimator):
    y = np.asarray(y)
    if y.ndim != 1:
        y = y.ravel() if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D; got an array of shape {y.shape}.")
    if y.shape[0] != n:
        raise ValueError(
            f"X and y have inconsistent numbers of samples: {n} texts and "
            f"{y.shape[0]} targets."
        )
    if n == 0:
        raise ValueError("probe_layers received no texts.")
    if is_classifier(estimator):
        classes = np.unique(y)
        if classes.shape[0] < 2:
            raise ValueError(
                f"y has a single class ({classes[0]!r}); a probe needs at least two "
                "classes."
            )
    return y


class _StructuredTable(np.ndarray):
    """A structured array with a DataFrame-like ``attrs`` dict (no pandas)."""

    def __array_finalize__(self, obj):
        self.attrs = dict(getattr(obj, "attrs", None) or {})


def _make_table(columns):
    """A pandas DataFrame when pandas is installed, else a structured array.

    Either has ``attrs``, the facts of the run (see :func:`probe_layers`).
    """
    pd = _pandas()
    if pd is not None:
        return pd.DataFrame(columns)
    n = len(next(iter(columns.values())))
    dtype = []
    for name, values in columns.items():
        arr = np.asarray(values)
        if arr.dtype.kind in "iuf":
            dtype.append((name, arr.dtype))
        elif arr.dtype.kind == "U":
            dtype.append((name, f"U{max(1, arr.dtype.itemsize // 4)}"))
        else:
            dtype.append((name, object))
    table = np.empty(n, dtype=dtype)
    for name, values in columns.items():
        table[name] = values
    return table.view(_StructuredTable)


def table_columns(table):
    """Column name -> 1-D array, for a DataFrame or a structured array."""
    if hasattr(table, "columns"):
        return {c: table[c].to_numpy() for c in table.columns}
    return {name: np.asarray(table[name]) for name in table.dtype.names}


_CORE_COLUMNS = ("layer", "pooling", "whitening", "mean_score", "std_score", "fit_time")


# --------------------------------------------------------------------------
# probe_layers
# --------------------------------------------------------------------------
def probe_layers(
    X,
    y,
    *,
    model_name=DEFAULT_MODEL,
    layers="all",
    poolings=("cls", "mean", "max"),
    whitening=(None,),
    estimator=None,
    param_grid=None,
    cv=5,
    scoring=None,
    memory=None,
    n_jobs=None,
    vectorizer_params=None,
    error_score=np.nan,
    verbose=False,
):
    """Cross-validated linear-probe score of every layer, pooling and whitening.

    For each combination of hidden layer, pooling, whitening (and estimator
    parameters in ``param_grid``), the score is that of
    ``Pipeline([("bert", BertVectorizer(model_name, layers=layer,
    pooling=pooling, whitening=whitening, ...)), ("clf", estimator)])`` under
    :func:`~sklearn.model_selection.cross_validate` with the same folds for
    every configuration. The model runs once per unique text for the whole
    table (see the module description).

    Parameters
    ----------
    X : iterable of str
        The texts: list, 1-D array, pandas Series or one-column DataFrame.
    y : array-like of shape (n_samples,)
        The targets.
    model_name : str or path-like, default="sentence-transformers/all-MiniLM-L6-v2"
        Hub id or local folder of the encoder (see
        :class:`~skbert.BertVectorizer`).
    layers : int, sequence of int or "all", default="all"
        Hidden states to probe: 0 is the embedding output, negative indices
        count from the end.
    poolings : str or sequence of str, default=("cls", "mean", "max")
        Poolings to probe, among "cls", "mean", "max", "attention" and
        "mean_max".
    whitening : str, None or sequence of them, default=(None,)
        Whitenings to probe, among None (or "none"), "center", "whiten" and
        "abtt". Each is fitted on the training fold only.
    estimator : estimator object, default=None
        The probe. None means ``LogisticRegression(max_iter=1000)``.
    param_grid : dict or list of dict, default=None
        Parameters of ``estimator`` to search as well, as for
        :class:`~sklearn.model_selection.ParameterGrid`, e.g.
        ``{"C": [0.1, 1, 10]}``. Each parameter becomes a column of the table.
    cv : int, cross-validation generator or iterable, default=5
        As in :func:`~sklearn.model_selection.cross_validate`; an int means
        (stratified, for a classifier) K-fold. The folds are drawn once and
        shared by every configuration.
    scoring : str or callable, default=None
        One metric, as in :func:`~sklearn.model_selection.cross_validate`.
        None uses the estimator's ``score`` (accuracy for classifiers).
    memory : str or path-like, default=None
        Feature cache directory (see :class:`~skbert.BertVectorizer`). With a
        warm cache the model does not run at all. None uses a temporary cache
        for this call when several poolings are probed, and none otherwise.
    n_jobs : int, default=None
        Parallel jobs over the folds of each configuration.
    vectorizer_params : dict, default=None
        Further :class:`~skbert.BertVectorizer` parameters: ``revision``,
        ``exclude_special_tokens``, ``max_length``, ``batch_size``,
        ``max_batch_tokens``, ``device``, ``dtype``, ``backend``,
        ``prompt``, ``prompt_name``, ``cache_dtype``, ``cache_max_bytes``,
        ``cache_storage_options``, ``trust_remote_code``,
        ``use_safetensors``, ``n_components`` and ``normalize``.
    error_score : "raise" or numeric, default=np.nan
        Score of a fold whose fit fails, as in
        :func:`~sklearn.model_selection.cross_validate`; "raise" raises.
    verbose : bool, default=False
        Progress bars for the extraction and for the configurations.

    Returns
    -------
    table : pandas.DataFrame or numpy structured array
        One row per configuration, ordered by pooling, whitening, estimator
        parameters and layer, with columns ``layer`` (int, non-negative),
        ``pooling`` (str), ``whitening`` (str, ``"none"`` for None), one
        column per ``param_grid`` parameter, ``mean_score`` and ``std_score``
        (over the folds) and ``fit_time`` (mean seconds to fit the whitening
        and the probe on a training fold, features given). A DataFrame when
        pandas is installed, else a structured array; either has a dict
        ``attrs``: ``scoring``, ``n_splits``, ``n_samples``, ``model_name``,
        ``chance`` (majority-class accuracy, for classifiers scored by
        accuracy), ``extract_seconds`` and ``forward_texts`` (texts this
        process ran through the model).

    See Also
    --------
    plot_probe : Draw the table: score by layer, one line per pooling.
    BertLayerSelector : Pick the layer by inner cross-validation in a pipeline.

    Examples
    --------
    >>> from skbert.probing import probe_layers
    >>> texts = ["a good movie", "a great film", "a bad movie", "an awful film"] * 3
    >>> labels = [1, 1, 0, 0] * 3
    >>> table = probe_layers(texts, labels, model_name=tiny_model, poolings="mean", cv=3)
    >>> table[["layer", "pooling", "whitening"]].to_numpy().tolist()
    [[0, 'mean', 'none'], [1, 'mean', 'none'], [2, 'mean', 'none']]
    """
    texts = check_texts(X, estimator_name="probe_layers", ensure_min_samples=1)
    estimator = _default_estimator() if estimator is None else estimator
    y = _check_targets(y, len(texts), estimator)
    poolings = _check_poolings(poolings)
    whitenings = _check_whitening(whitening)
    extraction_params, post_params = _split_vectorizer_params(vectorizer_params)
    if isinstance(scoring, (list, tuple, set, dict)):
        raise ValueError("probe_layers scores one metric; pass a single scoring.")
    grid = list(ParameterGrid(param_grid if param_grid is not None else {}))
    param_names = list(dict.fromkeys(k for params in grid for k in params))
    clone(estimator).set_params(**{k: v for params in grid for k, v in params.items()})

    splitter = check_cv(cv, y, classifier=is_classifier(estimator))
    splits = list(splitter.split(np.zeros((len(texts), 1)), y))

    before = _backend.forward_counts()["texts"]
    start = time.perf_counter()
    layer_ids, features = _extract(
        texts,
        model_name=model_name,
        layers=layers,
        poolings=poolings,
        memory=memory,
        extraction_params=extraction_params,
        verbose=verbose,
    )
    extract_seconds = time.perf_counter() - start
    forward_texts = _backend.forward_counts()["texts"] - before

    configs = [
        (pooling, white, params, i)
        for pooling in poolings
        for white in whitenings
        for params in grid
        for i in range(len(layer_ids))
    ]
    columns = {"layer": [], "pooling": [], "whitening": []}
    columns.update({name: [] for name in param_names})
    columns.update(mean_score=[], std_score=[], fit_time=[])
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(configs), unit="config", desc="probe")
    # Many small fits: one BLAS/OpenMP thread each is several times faster
    # than oversubscribed thread pools (parallelise over folds with n_jobs).
    # The limits are restored on exit.
    with threadpool_limits(limits=1), contextlib.ExitStack() as stack:
        if bar is not None:
            stack.callback(bar.close)
        for pooling, white, params, i in configs:
            pipe = Pipeline(
                [
                    ("post", _PostProcess(white, **post_params)),
                    ("clf", clone(estimator).set_params(**params)),
                ]
            )
            result = cross_validate(
                pipe,
                features[pooling][:, i],
                y,
                cv=splits,
                scoring=scoring,
                n_jobs=n_jobs,
                error_score=error_score,
            )
            scores = result["test_score"]
            columns["layer"].append(int(layer_ids[i]))
            columns["pooling"].append(pooling)
            columns["whitening"].append("none" if white is None else white)
            for name in param_names:
                columns[name].append(params.get(name))
            columns["mean_score"].append(float(np.mean(scores)))
            columns["std_score"].append(float(np.std(scores)))
            columns["fit_time"].append(float(np.mean(result["fit_time"])))
            if bar is not None:
                bar.update()

    table = _make_table(columns)
    if hasattr(table, "attrs"):
        chance = None
        if is_classifier(estimator) and scoring in (None, "accuracy"):
            _, counts = np.unique(y, return_counts=True)
            chance = float(counts.max() / counts.sum())
        table.attrs.update(
            scoring=_scoring_name(scoring, estimator),
            n_splits=len(splits),
            n_samples=len(texts),
            model_name=str(model_name),
            chance=chance,
            extract_seconds=extract_seconds,
            forward_texts=int(forward_texts),
        )
    return table


def best_configuration(table):
    """The row of a :func:`probe_layers` table with the highest mean score.

    Ties go to the first row in table order (lower layer, earlier pooling).

    Parameters
    ----------
    table : pandas.DataFrame or structured array
        As returned by :func:`probe_layers`.

    Returns
    -------
    config : dict
        Column name -> value of the best row, with ``whitening`` mapped back
        to None for ``"none"``; ready for ``BertVectorizer(layers=...,
        pooling=..., whitening=...)``.
    """
    cols = table_columns(table)
    scores = np.asarray(cols["mean_score"], dtype=float)
    if scores.size == 0 or np.all(np.isnan(scores)):
        raise ValueError("The probe table has no finite score.")
    best = int(np.nanargmax(scores))
    config = {}
    for name, values in cols.items():
        value = values[best]
        config[name] = value.item() if hasattr(value, "item") else value
    if config.get("whitening") == "none":
        config["whitening"] = None
    return config


def make_probe_pipeline(
    config, *, model_name=DEFAULT_MODEL, estimator=None, memory=None, vectorizer_params=None
):
    """The unfitted pipeline that a probe-table row describes.

    Parameters
    ----------
    config : dict
        A row, e.g. from :func:`best_configuration`: ``layer``, ``pooling``,
        ``whitening`` and any estimator parameters.
    model_name, estimator, memory, vectorizer_params
        As in :func:`probe_layers`.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        ``Pipeline([("bert", BertVectorizer(...)), ("clf", estimator)])``.
    """
    estimator = _default_estimator() if estimator is None else estimator
    extraction, post = _split_vectorizer_params(vectorizer_params)
    whitening = config.get("whitening")
    whitening = None if whitening == "none" else whitening
    params = {k: v for k, v in config.items() if k not in _CORE_COLUMNS}
    vec = BertVectorizer(
        model_name,
        layers=int(config["layer"]),
        pooling=config["pooling"],
        whitening=whitening,
        memory=memory,
        **extraction,
        **post,
    )
    return Pipeline([("bert", vec), ("clf", clone(estimator).set_params(**params))])


def plot_probe(table, *, ax=None, title=None):
    """Draw probe scores by layer: one line per pooling, error bars of one std.

    With several whitenings, each (pooling, whitening) pair gets its own
    line: one colour per pooling, one line style per whitening. Where the
    table also varies estimator parameters, each point shows the best of
    them. A dotted line marks the majority-class accuracy when the table
    knows it.

    Parameters
    ----------
    table : pandas.DataFrame or structured array
        As returned by :func:`probe_layers`.
    ax : matplotlib Axes, default=None
        Where to draw; None makes a new figure.
    title : str, default=None

    Returns
    -------
    ax : matplotlib Axes
    """
    cols = table_columns(table)
    attrs = getattr(table, "attrs", {}) or {}
    ax = axes(ax)
    layer = np.asarray(cols["layer"], dtype=int)
    mean = np.asarray(cols["mean_score"], dtype=float)
    std = np.asarray(cols["std_score"], dtype=float)
    pooling = np.asarray(cols["pooling"]).astype(str)
    white = np.asarray(cols["whitening"]).astype(str)
    several_whitenings = len(set(white)) > 1
    styles = ["-", "--", "-.", ":"]
    white_order = list(dict.fromkeys(white))
    for k, p in enumerate(dict.fromkeys(pooling)):
        for w in white_order:
            sel = (pooling == p) & (white == w)
            if not sel.any():
                continue
            xs, ys, es = [], [], []
            for lay in sorted(set(layer[sel])):
                rows = np.flatnonzero(sel & (layer == lay))
                best = rows[np.nanargmax(mean[rows])] if np.isfinite(mean[rows]).any() else rows[0]
                xs.append(lay)
                ys.append(mean[best])
                es.append(std[best])
            label = f"{p}, {w}" if several_whitenings else p
            ax.errorbar(
                xs, ys, yerr=es, marker="o", capsize=3, color=f"C{k % 10}",
                linestyle=styles[white_order.index(w) % len(styles)], label=label,
            )  # fmt: skip
    if attrs.get("chance") is not None:
        ax.axhline(attrs["chance"], color="grey", linestyle=":", linewidth=1, label="majority class")
    ax.set_xlabel("layer (0 = embedding output)")
    scoring = attrs.get("scoring", "score")
    n_splits = attrs.get("n_splits")
    ax.set_ylabel(f"{scoring} ({n_splits}-fold CV)" if n_splits else scoring)
    ax.set_xticks(sorted(set(layer.tolist())))
    ax.grid(alpha=0.3)
    ax.legend(title="pooling" + (", whitening" if several_whitenings else ""), fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------
# BertLayerSelector
# --------------------------------------------------------------------------
class BertLayerSelector(TransformerMixin, BaseEstimator):
    """Frozen-BERT features from the layer that inner cross-validation picks.

    In ``fit``, a linear probe is cross-validated on the training texts for
    every candidate layer (with :func:`probe_layers`); the best layer wins
    and a :class:`~skbert.BertVectorizer` for it is fitted on the same
    training texts. Only the data passed to ``fit`` are used, so inside
    ``cross_val_score`` or ``GridSearchCV`` the choice never sees a test fold.

    Parameters
    ----------
    model_name : str or path-like, default="sentence-transformers/all-MiniLM-L6-v2"
        Hub id or local folder of the encoder.
    layers : sequence of int or "all", default="all"
        Candidate hidden states (0 is the embedding output).
    pooling : {"mean", "cls", "max", "attention", "mean_max"}, default="mean"
        Token pooling.
    whitening : {"center", "whiten", "abtt"} or None, default=None
        Post-processing, fitted on each inner training fold and finally on
        the training texts.
    estimator : estimator object, default=None
        The probe used for the choice. None means
        ``LogisticRegression(max_iter=1000)``.
    cv : int, cross-validation generator or iterable, default=3
        Inner cross-validation.
    scoring : str or callable, default=None
        Metric of the choice; None uses the estimator's ``score``.
    memory : str or path-like, default=None
        Feature cache directory. None runs the model once per training text
        in ``fit`` and ``fit_transform`` (through a temporary cache where the
        features are needed twice), and again in every ``transform``.
    vectorizer_params : dict, default=None
        Further :class:`~skbert.BertVectorizer` parameters, as in
        :func:`probe_layers`.
    n_jobs : int, default=None
        Parallel jobs over the inner folds.
    verbose : bool, default=False
        Progress bars.

    Attributes
    ----------
    best_layer_ : int
        The chosen hidden-state index (non-negative).
    best_score_ : float
        Its mean inner cross-validation score.
    scores_ : dict of int to float
        Mean inner cross-validation score of every candidate layer.
    vectorizer_ : BertVectorizer
        Fitted on the training texts with ``layers=best_layer_``.

    See Also
    --------
    probe_layers : The full probe table.

    Examples
    --------
    >>> from skbert.probing import BertLayerSelector
    >>> texts = ["a good movie", "a great film", "a bad movie", "an awful film"] * 3
    >>> labels = [1, 1, 0, 0] * 3
    >>> sel = BertLayerSelector(model_name=tiny_model, cv=3).fit(texts, labels)
    >>> sorted(sel.scores_)
    [0, 1, 2]
    >>> sel.transform(texts).shape
    (12, 32)
    """

    _parameter_constraints = {
        "model_name": [str, os.PathLike],
        "layers": [Interval(numbers.Integral, None, None, closed="neither"), "array-like", StrOptions({"all"})],
        "pooling": [StrOptions(set(POOLINGS))],
        "whitening": [StrOptions(set(WHITENINGS)), None],
        "estimator": [HasMethods(["fit"]), None],
        "cv": ["cv_object"],
        "scoring": [str, callable, None],
        "memory": [str, os.PathLike, None],
        "vectorizer_params": [dict, None],
        "n_jobs": [numbers.Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model_name=DEFAULT_MODEL,
        *,
        layers="all",
        pooling="mean",
        whitening=None,
        estimator=None,
        cv=3,
        scoring=None,
        memory=None,
        vectorizer_params=None,
        n_jobs=None,
        verbose=False,
    ):
        self.model_name = model_name
        self.layers = layers
        self.pooling = pooling
        self.whitening = whitening
        self.estimator = estimator
        self.cv = cv
        self.scoring = scoring
        self.memory = memory
        self.vectorizer_params = vectorizer_params
        self.n_jobs = n_jobs
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Pick the layer by inner cross-validation on ``X, y`` and fit its vectorizer.

        Parameters
        ----------
        X : iterable of str
            Training texts.
        y : array-like of shape (n_samples,)
            Training targets.

        Returns
        -------
        self : BertLayerSelector
        """
        texts = check_texts(X, estimator_name=type(self).__name__, ensure_min_samples=1)
        # With whitening, the final vectorizer needs the training features
        # again: a temporary cache keeps that to one forward pass.
        with _scratch_memory(self.memory, needed=self.whitening is not None) as mem:
            self._fit(texts, y, mem)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y):
        """Fit, then encode the training texts, running the model once per text.

        Parameters
        ----------
        X : iterable of str
        y : array-like of shape (n_samples,)

        Returns
        -------
        X_new : ndarray of float32, shape (n_samples, n_features_out)
        """
        texts = check_texts(X, estimator_name=type(self).__name__, ensure_min_samples=1)
        with _scratch_memory(self.memory, needed=True) as mem:
            self._fit(texts, y, mem)
            self.vectorizer_.set_params(memory=mem)
            try:
                return self.vectorizer_.transform(texts)
            finally:
                self.vectorizer_.set_params(memory=self.memory)

    def _fit(self, texts, y, mem):
        table = probe_layers(
            texts,
            y,
            model_name=self.model_name,
            layers=self.layers,
            poolings=(self.pooling,),
            whitening=(self.whitening,),
            estimator=self.estimator,
            cv=self.cv,
            scoring=self.scoring,
            memory=mem,
            n_jobs=self.n_jobs,
            vectorizer_params=self.vectorizer_params,
            verbose=self.verbose,
        )
        cols = table_columns(table)
        self.scores_ = {
            int(layer): float(score)
            for layer, score in zip(cols["layer"], cols["mean_score"], strict=True)
        }
        best = best_configuration(table)
        self.best_layer_ = int(best["layer"])
        self.best_score_ = float(best["mean_score"])
        pipe = make_probe_pipeline(
            best,
            model_name=self.model_name,
            memory=mem,
            vectorizer_params=self.vectorizer_params,
        )
        vec = pipe.named_steps["bert"].set_params(verbose=self.verbose)
        self.vectorizer_ = vec.fit(texts, y)
        # A scratch cache disappears after fit: do not keep pointing at it.
        self.vectorizer_.set_params(memory=self.memory)

    def transform(self, X):
        """Encode texts with the chosen layer.

        Parameters
        ----------
        X : iterable of str

        Returns
        -------
        X_new : ndarray of float32, shape (n_samples, n_features_out)
        """
        check_is_fitted(self, "vectorizer_")
        return self.vectorizer_.transform(X)

    def get_feature_names_out(self, input_features=None):
        """Output feature names, those of the fitted vectorizer.

        Returns
        -------
        names : ndarray of str
        """
        check_is_fitted(self, "vectorizer_")
        return self.vectorizer_.get_feature_names_out(input_features)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        # Texts in, float32 out: no input dtype is preserved.
        tags.transformer_tags.preserves_dtype = []
        return tags


# --------------------------------------------------------------------------
# diagnostics
# --------------------------------------------------------------------------
def layer_features(
    X, *, model_name=DEFAULT_MODEL, layers="all", pooling="mean", memory=None, verbose=False, **vectorizer_params
):
    """Pooled features of every requested hidden state, stacked by layer.

    Parameters
    ----------
    X : iterable of str
    model_name : str or path-like, default="sentence-transformers/all-MiniLM-L6-v2"
    layers : int, sequence of int or "all", default="all"
    pooling : {"mean", "cls", "max", "attention", "mean_max"}, default="mean"
    memory : str or path-like, default=None
        Feature cache directory.
    verbose : bool, default=False
    **vectorizer_params
        Further extraction parameters of :class:`~skbert.BertVectorizer`
        (``max_length``, ``batch_size``, ``exclude_special_tokens``, ...).

    Returns
    -------
    H : ndarray of float32, shape (n_samples, n_layers, dim)
        ``H[:, i]`` are the features of the i-th requested layer (for
        ``"all"``, hidden state i; 0 is the embedding output).

    Examples
    --------
    >>> from skbert.probing import layer_features
    >>> layer_features(["one text", "another"], model_name=tiny_model).shape
    (2, 3, 32)
    """
    texts = check_texts(X, estimator_name="layer_features")
    extraction, post = _split_vectorizer_params(vectorizer_params)
    if post:
        raise ValueError(f"layer_features returns raw pooled features; {sorted(post)} do not apply.")
    _, features = _extract(
        texts,
        model_name=model_name,
        layers=layers,
        poolings=(_check_poolings(pooling)[0],),
        memory=memory,
        extraction_params=extraction,
        verbose=verbose,
    )
    return next(iter(features.values()))
