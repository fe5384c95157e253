"""From texts to pooled statistics, and from statistics to features.

:mod:`.batches` plans batches and runs the model; :mod:`.cached` puts the
feature store in front of it; :mod:`.pooling` computes every token pooling of
every hidden state; :mod:`.assembly` combines the requested layers and
pooling (and fits the scalar mix); :mod:`.chunking` splits long documents
into windows and aggregates them.

The settings of one extraction travel as one frozen :class:`ExtractionSpec`
(and, through the cache, one :class:`StoreSpec`): the estimators build them,
the extraction functions read them.
"""

from dataclasses import dataclass

__all__ = ["ExtractionSpec", "StoreSpec"]


@dataclass(frozen=True)
class ExtractionSpec:
    """What to extract from a model, and how to batch it.

    Parameters
    ----------
    layers : tuple of int
        Non-negative hidden-state indices to yield, in this order.
    max_length : int
        The resolved token limit (texts are truncated to it).
    attention : bool, default=False
        Whether the attention-pooling statistics are needed (needs attention
        maps, which are slower).
    positional : bool, default=False
        Whether the ``"pos"`` statistics (last token, position-weighted
        mean, mean over the square root of the length) are needed.
    pool_skip : int, default=0
        Leading real tokens (an excluded prompt) left out of every statistic.
    pretokenized : bool, default=False
        The texts are token windows ``(input_ids, special_tokens_mask)`` with
        the special tokens already added (see :mod:`.chunking`).
    slots : tuple of int, default=None
        Compute only these statistic slots (see :mod:`.pooling`); the others
        are NaN. None computes all (what the feature cache stores).
    batch_size : int or "auto", default="auto"
    max_batch_tokens : int, "auto" or None, default="auto"
        See :func:`skbert._extraction.batches.resolve_batching`.
    dtype : {"float32", "float16", "bfloat16"}, default="float32"
        Compute dtype; statistics are always float32.
    verbose : bool, default=False
        Show a tqdm progress bar.
    """

    layers: tuple
    max_length: int
    attention: bool = False
    positional: bool = False
    pool_skip: int = 0
    pretokenized: bool = False
    slots: tuple = None
    batch_size: object = "auto"
    max_batch_tokens: object = "auto"
    dtype: str = "float32"
    verbose: bool = False

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        if self.slots is not None:
            object.__setattr__(self, "slots", tuple(int(i) for i in self.slots))


@dataclass(frozen=True)
class StoreSpec:
    """Where pooled statistics are cached, and under which key.

    Parameters
    ----------
    memory : str or path-like
        The cache folder, or a URL (see :mod:`skbert._cache.open`).
    fields : dict
        The namespace key: everything that changes the stored values (from
        :func:`skbert._extraction.cached.namespace_fields`).
    meta : dict
        A JSON description of the model for ``cache info``.
    n_hidden_states, hidden_size : int
        The model's shape: every hidden state's statistics are stored.
    dtype : {"float32", "float16"}, default="float32"
        Storage dtype of the entries.
    max_bytes : int, default=None
        Size cap of the store (least recently used entries go first).
    storage_options : dict, default=None
        Options of a URL store's fsspec file system.
    """

    memory: object
    fields: dict
    meta: dict
    n_hidden_states: int
    hidden_size: int
    dtype: str = "float32"
    max_bytes: int = None
    storage_options: dict = None
