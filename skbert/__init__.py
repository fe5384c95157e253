"""skbert: frozen BERT features as scikit-learn hyperparameters."""

from ._backend import DEFAULT_MODEL
from ._vectorizer import BertVectorizer

__version__ = "0.1.0.dev0"

__all__ = ["BertVectorizer", "DEFAULT_MODEL", "__version__"]
