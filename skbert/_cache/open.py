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
from .localfs import NoFollowFS
from .segments import SegmentStore

__all__ = ["is_url", "check_memory", "filesystem", "store_location", "open_store"]

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(://|::)")
#: A scheme (two characters or more: ``C:/`` is a Windows drive) and a colon
#: without the two slashes of a URL: ``s3:/bucket`` (or ``s3:bucket``, see _KNOWN).
_BROKEN_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):(?!//)([/\\]*)(.*)$", re.DOTALL)

#: Schemes that name storage even without slashes (``s3:bucket/x`` is no folder name).
_KNOWN = {
    "s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "file", "local", "memory",
    "http", "https", "hdfs", "webhdfs", "ftp", "sftp", "ssh", "hf", "oci", "oss",
}

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


def check_memory(memory):
    """Refuse a ``memory`` path that looks like a URL but is not one (``s3:/bucket/x``).

    Such a string would otherwise become a local folder named ``s3:``.

    Raises
    ------
    ValueError
        Naming the URL meant, and how to name a local folder of that name.
    """
    if memory is None or isinstance(memory, os.PathLike) or is_url(memory):
        return
    if isinstance(memory, bytes):
        memory = os.fsdecode(memory)
    if not isinstance(memory, str):
        return
    match = _BROKEN_URL_RE.match(memory)
    if match is None or not (match.group(2) or match.group(1).lower() in _KNOWN):
        return
    scheme, rest = match.group(1), match.group(3).replace("\\", "/")
    meant = f"{scheme}:///{rest}" if scheme.lower() in ("file", "local") else f"{scheme}://{rest}"
    raise ValueError(
        f"memory={memory!r} is neither a URL nor a folder: a URL needs two slashes after "
        f"its scheme, as in {meant!r}. For a local folder named {scheme + ':'!r}, write "
        f"{'./' + memory!r} or pass a pathlib.Path."
    )


def filesystem(url, storage_options=None, *, check_owner=False):
    """The fsspec file system of ``url`` and the path in it.

    A URL of the local file system (``file://``) gets a
    :class:`~skbert._cache.localfs.NoFollowFS`, which never follows a link
    (and, with ``check_owner``, refuses folders others can write to).

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
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        # Never follow a link planted in the store, as the local store.
        fs = NoFollowFS(path, check_owner=check_owner)
    return fs, path


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
        fs, path = filesystem(memory, storage_options, check_owner=True)
        return SegmentStore(memory, fs, path, dtype=dtype, max_bytes=max_bytes)
    check_memory(memory)
    return FeatureCache(memory, dtype=dtype, max_bytes=max_bytes)
