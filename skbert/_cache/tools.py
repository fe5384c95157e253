"""The public maintenance tools of the feature store: info, verify, clear, copy, compact.

Each takes a ``memory`` value, a directory or a URL, and runs the matching
implementation of the local store (:mod:`skbert._cache.local`) or of the
segment store (:mod:`skbert._cache.segments`); :func:`cache_clear` also
empties this process's in-memory layer (:mod:`skbert._cache.memory`).
:mod:`skbert` re-exports them.
"""

import os

from .local import LocalSink
from .local import iter_store_entries as local_entries
from .local import store_clear as local_clear
from .local import store_compact as local_compact
from .local import store_info as local_info
from .local import store_verify as local_verify
from .memory import clear as clear_memory
from .open import check_memory, is_url, store_location
from .segments import SegmentSink
from .segments import iter_store_entries as segment_entries
from .segments import store_clear as segment_clear
from .segments import store_compact as segment_compact
from .segments import store_info as segment_info
from .segments import store_verify as segment_verify

__all__ = ["cache_info", "cache_verify", "cache_clear", "cache_copy", "cache_compact"]


def cache_info(path, *, storage_options=None):
    """Describe the feature cache in ``path``.

    Parameters
    ----------
    path : str or path-like
        The ``memory`` directory given to :class:`~skbert.BertVectorizer`,
        or its URL.
    storage_options : dict, default=None
        Options of a URL's fsspec file system (ignored for directories).

    Returns
    -------
    info : dict
        ``path``, ``format``, ``entries`` and ``bytes`` (all entry files),
        ``models`` (one dict per namespace: its key fields and description,
        ``entries`` and ``bytes`` per kind), ``quarantined`` (damaged files
        set aside), ``temporary`` (unpublished files) and ``last_call`` (hit
        and miss counts of the last call that used the cache, or None).
        A folder that holds no cache gives zero entries.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    NotADirectoryError
        When ``path`` is a file.
    OSError
        When the store folder inside it is a symlink.

    Examples
    --------
    >>> import tempfile
    >>> from skbert import BertVectorizer, cache_info
    >>> memory = tempfile.mkdtemp()
    >>> X = BertVectorizer(tiny_model, memory=memory).fit_transform(["a text", "another"])
    >>> info = cache_info(memory)
    >>> info["entries"], info["bytes"] // info["entries"], info["last_call"]["misses"]
    (2, 2000, 2)
    >>> X = BertVectorizer(tiny_model, memory=memory, layers=0, pooling="max").fit_transform(
    ...     ["a text", "another"])
    >>> cache_info(memory)["last_call"]["hits"]
    2
    """
    if is_url(path):
        return segment_info(*store_location(path, storage_options))
    check_memory(path)
    return local_info(path)


def cache_verify(path, *, storage_options=None):
    """Check every entry of the feature cache in ``path``; set damaged ones aside.

    Each entry's header, size, key (against its file name) and CRC-32 are
    checked; damaged entries and symlinks (where an entry or a folder should
    be; never followed) are moved to ``quarantine/`` (they are recomputed
    when next needed), and temporary files left by dead writers are removed.

    On a URL store, each segment is checked against its content hash too;
    a damaged segment's intact entries are published again and it is
    deleted.

    Parameters
    ----------
    path : str or path-like
        A directory or a URL.
    storage_options : dict, default=None
        Options of a URL's fsspec file system (ignored for directories).

    Returns
    -------
    report : dict
        ``path``, ``checked``, ``ok``, ``damaged`` (list of paths moved to
        quarantine) and ``temporary_removed``.

    Raises
    ------
    FileNotFoundError, NotADirectoryError, OSError
        As :func:`cache_info`.
    """
    if is_url(path):
        return segment_verify(*store_location(path, storage_options))
    check_memory(path)
    return local_verify(path)


def cache_clear(path, max_bytes=None, *, storage_options=None):
    """Empty the feature cache in ``path`` (or shrink it to ``max_bytes``).

    Only skbert's own sub-folder is touched; other files in ``path`` stay,
    and links inside it are removed, never followed.

    Parameters
    ----------
    path : str or path-like
        A directory or a URL.
    max_bytes : int, default=None
        None removes everything; otherwise least recently used entries are
        removed until the store holds at most ``max_bytes`` (on a URL store,
        the oldest segments).
    storage_options : dict, default=None
        Options of a URL's fsspec file system (ignored for directories).

    Returns
    -------
    report : dict
        ``path``, ``removed`` (files) and ``bytes_before`` / ``bytes_after``.

    Raises
    ------
    FileNotFoundError, NotADirectoryError, OSError
        As :func:`cache_info`.
    """
    clear_memory()  # this process's in-memory layer in front of the store

    if is_url(path):
        return segment_clear(*store_location(path, storage_options), max_bytes)
    check_memory(path)
    return local_clear(path, max_bytes)


def cache_compact(path, *, storage_options=None):
    """Merge the small segments of a feature store into full ones.

    Every call that writes to a URL store publishes at least one segment per
    entry kind, so many small calls leave many small segments, and each costs
    readers one request to load its index. Compaction packs each kind's small
    segments (under half of :data:`skbert._cache.segments.SEGMENT_ENTRIES`
    entries and of :data:`~skbert._cache.segments.SEGMENT_BYTES` bytes) into
    full ones, keeps each entry once (full segments that repeat entries of
    others, left by overlapping writers, are rewritten too), publishes them,
    and only then deletes the merged segments: readers meanwhile see every
    entry in one or the other. A local directory (one file per entry) has
    nothing to compact.

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
        return segment_compact(*store_location(path, storage_options))
    check_memory(path)
    return local_compact(path)


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
        fs, root, _ = store_location(src, storage_options)
        entries = segment_entries(fs, root)
    else:
        check_memory(src)
        entries = local_entries(src)
    if is_url(dst):
        fs, root, _ = store_location(dst, dst_storage_options)
        sink = SegmentSink(fs, root)
    else:
        check_memory(dst)
        sink = LocalSink(dst)
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
