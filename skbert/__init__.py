"""skbert: frozen BERT features as scikit-learn hyperparameters."""

from ._cache import cache_clear, cache_compact, cache_copy, cache_info, cache_verify
from ._classifier import BertClassifier
from ._model.backend import DEFAULT_MODEL
from ._persistence import SKOPS_TRUSTED_TYPES, pip_requirements
from ._vectorizer import BertVectorizer
from ._version import __version__
from .exceptions import (
    DeviceFallbackWarning,
    FeatureCacheWarning,
    ModelChangedWarning,
    ModelConfigWarning,
    TruncationWarning,
    WhiteningWarning,
)
from .probing import BertLayerSelector, probe_layers

__all__ = [
    "BertClassifier",
    "BertLayerSelector",
    "BertVectorizer",
    "DEFAULT_MODEL",
    "DeviceFallbackWarning",
    "FeatureCacheWarning",
    "ModelChangedWarning",
    "ModelConfigWarning",
    "cache_clear",
    "cache_compact",
    "cache_copy",
    "cache_info",
    "cache_verify",
    "probe_layers",
    "pip_requirements",
    "SKOPS_TRUSTED_TYPES",
    "TruncationWarning",
    "WhiteningWarning",
    "__version__",
]
