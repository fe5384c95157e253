"""Which feature store a ``memory`` value names: a local folder or a URL.

A plain path (a local disk, or a shared POSIX path such as NFS) is the local
file-per-entry store, :class:`skbert._cache.local.FeatureCache`. A URL
(``s3://bucket/prefix``, ``gs://``, ``abfs://``, ``file:///shared/dir``,
``memory://`` ...) is the segment store of :mod:`skbert._cache.segments`, on
the `fsspec <https://filesystem-spec.readthedocs.io>`_ file system its
protocol names. fsspec and the protocol's package (s3fs, gcsfs, adlfs) are
optional: a URL whose protocol is not installed raises an ImportError saying
what to install, and never becomes a local folder named ``s3:``.

Storage options (an endpoint, a region, credentials) come from fsspec's and
the cloud SDK's standard configuration (``FSSPEC_S3_ENDPOINT_URL``,
``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``~/.aws``, instance roles,
``GOOGLE_APPLICATION_CREDENTIALS`` ...), overridden by an explicit
``storage_options`` dict (``BertVectorizer(cache_storage_options=...)``).

The public maintenance tools (:mod:`skbert._cache.tools`) find a URL's store
with :func:`store_location`.
"""

import os
import re

from .format import STORE_DIR
from .local import FeatureCache
from .segments import SegmentStore

__all__ = ["is_url", "filesystem", "store_location", "open_store"]

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(://|::)")

#: What to install for a protocol whose fsspec implementation is missing.
_INSTALL = {
    "s3": "pip install 'skbert[s3]' (installs s3fs)",
    "s3a": "pip install 'skbert[s3]' (installs s3fs)",
    "gs": "pip install 'skbert[gcs]' (installs gcsfs)",
    "gcs": "pip install 'skbert[gcs]' (installs gcsfs)",
    "abfs": "pip install 'skbert[azure]' (installs adlfs)",
    "abfss": "pip install 'skbert[azure]' (installs adlfs)",
    "az": "pip install 'skbert[azure]' (installs adlfs)",
    "adl": "pip install 'skbert[azure]' (installs adlfs)",
}


def is_url(memory):
    """Whether ``memory`` is a URL (``scheme://...`` or an fsspec chain ``a::b://``)."""
    if memory is None or isinstance(memory, os.PathLike):
        return False
    if isinstance(memory, bytes):
        memory = os.fsdecode(memory)
    return isinstance(memory, str) and _URL_RE.match(memory) is not None


def filesystem(url, storage_options=None):
    """The fsspec file system of ``url`` and the path in it.

    Raises
    ------
    ImportError
        When fsspec or the protocol's implementation is not installed; the
        message says what to install.
    ValueError
        When fsspec knows no such protocol.
    """
    protocols = [part.split("://", 1)[0] for part in url.split("::") if part]
    hint = _INSTALL.get(protocols[-1] if protocols else "", "pip install fsspec")
    try:
        import fsspec
        import fsspec.core
    except ImportError as exc:
        raise ImportError(
            f"memory={url!r} is a URL: the feature store needs fsspec and the "
            f"package of its protocol; {hint}."
        ) from exc
    for protocol in protocols:
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError as exc:
            how = _INSTALL.get(protocol, f"install the fsspec implementation of {protocol!r}")
            raise ImportError(
                f"memory={url!r} needs the {protocol!r} file system, which is not "
                f"installed: {how}. ({exc})"
            ) from exc
        except ValueError as exc:
            raise ValueError(
                f"memory={url!r}: unknown storage protocol {protocol!r}. Use a local "
                "directory or an fsspec URL such as s3://bucket/prefix, gs://, "
                "abfs://, file:///shared/dir."
            ) from exc
    return fsspec.core.url_to_fs(url, **dict(storage_options or {}))


def store_location(url, storage_options=None):
    """Where the segment store of URL ``url`` lives.

    Parameters
    ----------
    url : str
        The ``memory`` URL.
    storage_options : dict, default=None
        Passed to the URL's fsspec file system.

    Returns
    -------
    fs : fsspec.AbstractFileSystem
        The file system of ``url``.
    root : str
        The store folder (``skbert-features-v1``) as ``fs`` names it.
    location : str
        The store folder as a URL, for messages and reports.

    Raises
    ------
    ImportError, ValueError
        As :func:`filesystem`.
    """
    fs, path = filesystem(url, storage_options)
    root = path.rstrip("/") + "/" + STORE_DIR
    location = url.rstrip("/") + "/" + STORE_DIR
    return fs, root, location


def open_store(memory, *, dtype="float32", max_bytes=None, storage_options=None):
    """A handle on the feature store ``memory`` names, for one call.

    Parameters
    ----------
    memory : str or path-like
        A directory (the local store) or a URL (the segment store).
    dtype : {"float32", "float16"}, default="float32"
    max_bytes : int, default=None
    storage_options : dict, default=None
        Passed to the URL's fsspec file system; ignored for directories.

    Returns
    -------
    store : skbert._cache.local.FeatureCache or skbert._cache.segments.SegmentStore
    """
    if is_url(memory):
        fs, path = filesystem(memory, storage_options)
        return SegmentStore(memory, fs, path, dtype=dtype, max_bytes=max_bytes)

    return FeatureCache(memory, dtype=dtype, max_bytes=max_bytes)
