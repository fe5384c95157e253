"""skbert: frozen BERT features as scikit-learn hyperparameters."""

from ._backend import DEFAULT_MODEL, ModelChangedWarning
from ._chunking import TruncationWarning
from ._cache import FeatureCacheWarning, cache_clear, cache_info, cache_verify
from ._store import cache_compact, cache_copy
from ._classifier import BertClassifier, DeviceFallbackWarning
from ._st_config import ModelConfigWarning
from ._vectorizer import BertVectorizer
from ._whitening import WhiteningWarning
from .probing import BertLayerSelector, probe_layers
from ._persistence import SKOPS_TRUSTED_TYPES, pip_requirements

__version__ = "0.1.0.dev0"

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
