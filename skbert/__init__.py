"""skbert: frozen BERT features as scikit-learn hyperparameters."""

from ._backend import DEFAULT_MODEL
from ._chunking import TruncationWarning
from ._cache import FeatureCacheWarning, cache_clear, cache_info, cache_verify
from ._classifier import BertClassifier, DeviceFallbackWarning
from ._vectorizer import BertVectorizer
from .probing import BertLayerSelector, probe_layers

__version__ = "0.1.0.dev0"

__all__ = [
    "BertClassifier",
    "BertLayerSelector",
    "BertVectorizer",
    "DEFAULT_MODEL",
    "DeviceFallbackWarning",
    "FeatureCacheWarning",
    "cache_clear",
    "cache_info",
    "cache_verify",
    "probe_layers",
    "TruncationWarning",
    "__version__",
]
