"""The per-text feature store: bytes and keys, nothing of BERT.

:func:`open_store` gives the store a ``memory`` value names (a local folder or
a URL); the ``cache_*`` functions are the public maintenance tools, re-exported
by :mod:`skbert`.

The modules, lowest layer first (none imports one above it): ``posix`` (safe
folder operations) and ``format`` (entry bytes, keys, sizes); ``memory`` (the
in-process layer); ``local`` (one file per entry) and ``segments`` (packed
segments, for URLs); ``open`` (which store a ``memory`` value names); ``tools``
(the ``cache_*`` functions).
"""

from .format import parse_size
from .open import open_store
from .tools import cache_clear, cache_compact, cache_copy, cache_info, cache_verify

__all__ = [
    "open_store",
    "parse_size",
    "cache_info",
    "cache_verify",
    "cache_clear",
    "cache_copy",
    "cache_compact",
]
