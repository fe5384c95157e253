"""Which feature store a ``memory`` value names: a local folder or a URL.

A plain path (a local disk, or a shared POSIX path such as NFS) is the local
file-per-entry store, :class:`skbert._cache.FeatureCache`. A URL
(``s3://bucket/prefix``, ``gs://``, ``abfs://``, ``file:///shared/dir``,
``memory://`` ...) is the segment store of :mod:`skbert._segment_store`, on
the `fsspec <https://filesystem-spec.readthedocs.io>`_ file system its
protocol names. fsspec and the protocol's package (s3fs, gcsfs, adlfs) are
optional: a URL whose protocol is not installed raises an ImportError saying
what to install, and never becomes a local folder named ``s3:``.

Storage options (an endpoint, a region, credentials) come from fsspec's and
the cloud SDK's standard configuration (``FSSPEC_S3_ENDPOINT_URL``,
``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``~/.aws``, instance roles,
``GOOGLE_APPLICATION_CREDENTIALS`` ...), overridden by an explicit
``storage_options`` dict (``BertVectorizer(cache_storage_options=...)``).

This module also holds the operations that work on every store:
:func:`cache_copy` (export or merge one store into another) and
:func:`cache_compact`.
"""

import os
import re

__all__ = ["is_url", "open_store", "filesystem", "cache_copy", "cache_compact"]

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


def _segment_store(url, storage_options=None, **kwargs):
    from ._segment_store import SegmentStore

    fs, path = filesystem(url, storage_options)
    return SegmentStore(url, fs, path, **kwargs)


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
    store : skbert._cache.FeatureCache or skbert._segment_store.SegmentStore
    """
    if is_url(memory):
        return _segment_store(memory, storage_options, dtype=dtype, max_bytes=max_bytes)
    from ._cache import FeatureCache

    return FeatureCache(memory, dtype=dtype, max_bytes=max_bytes)


def _segment_call(function, url, storage_options, *args):
    from . import _segment_store
    from ._cache import STORE_DIR

    fs, path = filesystem(url, storage_options)
    root = path.rstrip("/") + "/" + STORE_DIR
    location = url.rstrip("/") + "/" + STORE_DIR
    return getattr(_segment_store, function)(fs, root, location, *args)


def segment_info(url, storage_options=None):
    """:func:`skbert.cache_info` of a URL."""
    return _segment_call("store_info", url, storage_options)


def segment_verify(url, storage_options=None):
    """:func:`skbert.cache_verify` of a URL."""
    return _segment_call("store_verify", url, storage_options)


def segment_clear(url, max_bytes=None, storage_options=None):
    """:func:`skbert.cache_clear` of a URL."""
    return _segment_call("store_clear", url, storage_options, max_bytes)


def cache_compact(path, *, storage_options=None):
    """Merge the small segments of a feature store into full ones.

    Every call that writes to a URL store publishes at least one segment per
    entry kind, so many small calls leave many small segments, and each costs
    readers one request to load its index. Compaction packs each kind's small
    segments (under half of :data:`skbert._segment_store.SEGMENT_ENTRIES`
    entries and of :data:`~skbert._segment_store.SEGMENT_BYTES` bytes) into
    full ones, keeps each entry once, publishes them, and only then deletes
    the merged segments: readers meanwhile see every entry in one or the
    other. A local directory (one file per entry) has nothing to compact.

    Parameters
    ----------
    path : str or path-like
        The ``memory`` URL (or directory).
    storage_options : dict, default=None
        Options of the URL's fsspec file system.

    Returns
    -------
    report : dict
        ``path``, ``segments_before``, ``segments_after``,
        ``segments_merged``, ``duplicates_removed``, ``damaged_dropped``,
        ``bytes_before``, ``bytes_after``.
    """
    if is_url(path):
        return _segment_call("store_compact", path, storage_options)
    from ._cache import cache_info

    info = cache_info(path)
    return {
        "path": info["path"],
        "store": "files",
        "segments_before": 0,
        "segments_after": 0,
        "segments_merged": 0,
        "duplicates_removed": 0,
        "damaged_dropped": 0,
        "bytes_before": info["bytes"],
        "bytes_after": info["bytes"],
    }


# ------------------------------------------------------------------- copying
def _iter_local(path):
    """Yield ``(namespace, meta, kind, key, entry bytes or None)`` of a local store.

    Walks the store with :mod:`skbert._cache`'s own link-refusing walker.
    """
    import stat

    from . import _cache

    metas = {}
    with _cache._store(path) as (root, handle):
        if handle is None:
            return
        for folder, name, rel, st in _cache._walk(handle):
            if len(rel) != 4 or name.startswith(_cache._TMP_PREFIX):
                continue
            ns, kind, shard, _ = rel
            if not stat.S_ISREG(st.st_mode):
                yield ns, metas.get(ns), kind, None, None
                continue
            if ns not in metas:
                ns_dir = _cache._open_dir(ns, handle)
                try:
                    metas[ns] = _cache._read_json_at(ns_dir, "namespace.json")
                finally:
                    _cache._close(ns_dir)
            data = _cache._read_small_at(folder, name, limit=st.st_size + 1)
            hexkey = shard + name
            try:
                key = bytes.fromhex(hexkey) if len(hexkey) == 64 else None
            except ValueError:
                key = None
            if (
                data is None
                or key is None
                or not _cache.check_entry(data)
                or _cache._parse_header(data)[3] != key
            ):
                yield ns, metas[ns], kind, key, None
                continue
            yield ns, metas[ns], kind, key, data


class _LocalSink:
    """Writes entries into a local store through its own (hardened) writer."""

    def __init__(self, path):
        self.path = path
        self.caches = {}
        self.namespaces = {}

    def add(self, ns, meta, kind, key, entry):
        from ._cache import FeatureCache, Namespace
        from ._segment_store import _entry_values

        values, counts, dtype = _entry_values(entry)
        cache = self.caches.get(dtype)
        if cache is None:
            cache = self.caches[dtype] = FeatureCache(self.path, dtype=dtype)
            if not cache.writable:
                raise OSError(f"cannot write to {cache.root}: {cache.write_error}")
        handle = self.namespaces.get((dtype, ns))
        if handle is None:
            # The namespace folder is named by the first 32 hex digits of its
            # digest; writing entries needs nothing else.
            handle = self.namespaces[(dtype, ns)] = Namespace(cache, bytes.fromhex(ns))
            if meta:
                handle._write_meta(meta)
        hexkey = key.hex()
        target = os.path.join(cache.root, ns, kind, hexkey[:2], hexkey[2:])
        if os.path.exists(target):
            return False
        if handle.write(kind, [key], values[None], counts[None]) != 1:
            raise OSError(f"cannot write to {cache.root}: {cache.write_error}")
        return True

    def close(self):
        for cache in self.caches.values():
            cache.close()
        return 0


class _SegmentSink:
    """Packs entries into segments of a URL store (skipping keys it holds already)."""

    def __init__(self, url, storage_options):
        from ._cache import STORE_DIR

        self.fs, path = filesystem(url, storage_options)
        self.root = path.rstrip("/") + "/" + STORE_DIR
        self.known = {}
        self.buffers = {}
        self.metas = set()
        self.segments = 0

    def add(self, ns, meta, kind, key, entry):
        from ._segment_store import SEGMENT_BYTES, SEGMENT_ENTRIES, _join, _put, known_keys
        import json

        kind_path = _join(self.root, ns, kind)
        if kind_path not in self.known:
            self.known[kind_path] = known_keys(self.fs, kind_path)
        if key in self.known[kind_path]:
            return False
        if ns not in self.metas and meta:
            _put(
                self.fs,
                _join(self.root, ns, "namespace.json"),
                json.dumps(meta, sort_keys=True, indent=1).encode(),
            )
            self.metas.add(ns)
        self.known[kind_path].add(key)
        buf = self.buffers.setdefault(kind_path, {})
        buf[key] = entry
        if len(buf) >= SEGMENT_ENTRIES or sum(map(len, buf.values())) >= SEGMENT_BYTES:
            self._flush(kind_path)
        return True

    def _flush(self, kind_path):
        from ._segment_store import _publish_now

        buf = self.buffers.pop(kind_path, None)
        if buf:
            _publish_now(self.fs, kind_path, buf)
            self.segments += 1

    def close(self):
        from ._segment_store import forget

        for kind_path in list(self.buffers):
            self._flush(kind_path)
        forget(self.fs, self.root)
        return self.segments


def cache_copy(src, dst, *, storage_options=None, dst_storage_options=None):
    """Copy every entry of one feature store into another (export, import or merge).

    Either side may be a local directory or a URL: copy one machine's cache
    into a bucket (its entries packed into segments), a bucket onto a local
    disk, or merge two stores. Entries are copied byte for byte after their
    checksums are verified (damaged ones are skipped and counted); entries
    the destination holds already are skipped, so copying twice, or
    concurrently with writers, is harmless.

    Parameters
    ----------
    src, dst : str or path-like
        ``memory`` directories or URLs.
    storage_options : dict, default=None
        Options of ``src``'s fsspec file system (and of ``dst``'s unless
        ``dst_storage_options`` is given).
    dst_storage_options : dict, default=None

    Returns
    -------
    report : dict
        ``src``, ``dst``, ``copied``, ``skipped`` (already there), ``damaged``
        (not copied), ``bytes`` copied and ``segments`` written.
    """
    if dst_storage_options is None:
        dst_storage_options = storage_options
    if is_url(src):
        from ._segment_store import iter_store_entries
        from ._cache import STORE_DIR

        fs, path = filesystem(src, storage_options)
        entries = iter_store_entries(fs, path.rstrip("/") + "/" + STORE_DIR)
    else:
        entries = _iter_local(src)
    sink = _SegmentSink(dst, dst_storage_options) if is_url(dst) else _LocalSink(dst)
    copied = skipped = damaged = nbytes = 0
    for ns, meta, kind, key, entry in entries:
        if entry is None:
            damaged += 1
            continue
        if sink.add(ns, meta, kind, key, entry):
            copied += 1
            nbytes += len(entry)
        else:
            skipped += 1
    segments = sink.close()
    return {
        "src": os.fspath(src) if not is_url(src) else src,
        "dst": os.fspath(dst) if not is_url(dst) else dst,
        "copied": copied,
        "skipped": skipped,
        "damaged": damaged,
        "bytes": nbytes,
        "segments": segments,
    }
