"""The feature store on object stores and shared folders: packed, immutable segments.

The local store (:mod:`skbert._cache.local`) keeps one file per entry and relies on
an atomic rename. Object stores (S3, GCS, Azure Blob) have no rename, charge
per request and are slow per request, so this store keeps the *same entries*
(the same keys, bytes, header and CRC-32, made by
:func:`skbert._cache.format.encode_entry`) packed into few large immutable objects,
*segments*, each published by a single PUT under a content-addressed name::

    <url>/skbert-features-v1/
        <namespace: 32 hex>/
            namespace.json                  what the namespace is (informational)
            <kind>/seg-<sha256>-<n>.skseg   n entries, sha256 of the whole object

A segment is raw little-endian bytes::

    header   20 bytes   magic b"SKSG", version (u16), reserved (u16),
                        n entries (u32), total size of the object (u64)
    index    n x 44     key (32 bytes), offset (u64), size (u32); sorted by key
    crc32    u32        over header and index
    entries  n entries, each exactly as in the local store (own header, key, CRC)

The number of entries is in the name, so a reader fetches a segment's header
and index with one ranged GET of known length. A process lists a kind's
segments once, loads their indexes once (kept for the life of the process),
and lists again only when a call misses keys (at most once per call). Entries
are then fetched with ranged reads merged per segment (or the whole segment
when most of it is wanted), issued concurrently.

Writers buffer new entries and publish a segment every :data:`SEGMENT_ENTRIES`
entries or :data:`SEGMENT_BYTES` bytes and when the call ends, so a writer
killed mid-fill loses only its unpublished buffer. Segments are never
modified: two writers of the same entries publish equal bytes under the same
name or two valid segments holding equal entries, so writers need no lock
(:meth:`SegmentNamespace.lock` does nothing) and readers never see a partial
object (a PUT is atomic; on a local or NFS folder, ``file://``, segments are
written to a temporary name and renamed).

Damage (a flipped bit, a truncated or replaced object) is caught by the index
CRC, the object size, and each entry's header, key and CRC; damaged segments
and entries are skipped for the rest of the process, reported by one
:class:`~skbert.FeatureCacheWarning` per call, and recomputed.
:func:`store_verify` checks every segment against its content hash, publishes
the intact entries of damaged segments again and deletes them. Nothing is
ever unpickled: the format is raw bytes, parsed with :mod:`struct`.

The segment store's side of the public tools is here too: :func:`store_info`,
:func:`store_verify`, :func:`store_clear`, :func:`store_compact`, and
:func:`iter_store_entries` and :class:`SegmentSink` for
:func:`skbert.cache_copy`.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import threading
import time
import warnings
import zlib

import numpy as np

from ..exceptions import FeatureCacheWarning
from .format import (
    DTYPE_CODES,
    DTYPES,
    FORMAT_VERSION,
    HEADER,
    NAMESPACE_HEX,
    STORE_DIR,
    check_entry,
    encode_entry,
    entry_size,
    eviction_due,
    namespace_digest,
    parse_header,
    read_outputs,
    text_keys,
    warn_once,
)
from .localfs import NoFollowFS
from .memory import clear as clear_memory
from .posix import STALE_TMP_SECONDS, TMP_PREFIX, refusal

logger = logging.getLogger(__name__)

__all__ = [
    "SEGMENT_ENTRIES",
    "SEGMENT_BYTES",
    "SegmentStore",
    "SegmentNamespace",
    "pack_segment",
    "read_segment",
    "store_info",
    "store_verify",
    "store_clear",
    "store_compact",
    "iter_store_entries",
    "SegmentSink",
]

#: A writer publishes a segment when its buffer holds this many entries ...
SEGMENT_ENTRIES = 4096
#: ... or this many bytes (and when the call ends).
SEGMENT_BYTES = 64 << 20
#: Ranges of one segment closer than this are fetched as one read.
MERGE_GAP = 1 << 20
#: When at least this fraction of a segment's entries is wanted, fetch it whole.
WHOLE_FRACTION = 0.5
#: Compaction merges segments smaller than half of a full one.
COMPACT_FRACTION = 0.5

_SEG_MAGIC = b"SKSG"
_SEG_VERSION = 1
_SEG_HEADER = struct.Struct("<4sHHIQ")
_SEG_CRC = struct.Struct("<I")
_INDEX = np.dtype([("key", "V32"), ("offset", "<u8"), ("size", "<u4")])
_NAME_RE = re.compile(r"^seg-([0-9a-f]{64})-([0-9]{1,9})\.skseg$")
_NAMESPACE_RE = re.compile(r"^[0-9a-f]{32}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

_STATE_LOCK = threading.Lock()
_STATES = {}  # (fs token, kind folder) -> _KindState
_META_DONE = set()  # (fs token, namespace folder): namespace.json known to be there
_SCAN = {}  # (fs token, root) -> (monotonic time of last size check, bytes since); see eviction_due


# --------------------------------------------------------------------- format
def prefix_size(n):
    """Bytes of a segment's header, index and index checksum for ``n`` entries."""
    return _SEG_HEADER.size + n * _INDEX.itemsize + _SEG_CRC.size


def pack_segment(entries):
    """Pack encoded entries into one segment.

    Parameters
    ----------
    entries : dict of bytes to bytes
        Entry bytes (from :func:`skbert._cache.format.encode_entry`) by 32-byte key.

    Returns
    -------
    name : str
        The segment's content-addressed object name.
    data : bytes
    """
    keys = sorted(entries)
    n = len(keys)
    index = np.zeros(n, dtype=_INDEX)
    sizes = np.fromiter((len(entries[k]) for k in keys), dtype=np.int64, count=n)
    start = prefix_size(n)
    offsets = start + np.concatenate([[0], np.cumsum(sizes)[:-1]]) if n else sizes
    index["key"] = np.frombuffer(b"".join(keys), dtype="V32") if n else index["key"]
    index["offset"] = offsets
    index["size"] = sizes
    total = start + int(sizes.sum())
    head = _SEG_HEADER.pack(_SEG_MAGIC, _SEG_VERSION, 0, n, total) + index.tobytes()
    data = b"".join([head, _SEG_CRC.pack(zlib.crc32(head))] + [entries[k] for k in keys])
    return f"seg-{hashlib.sha256(data).hexdigest()}-{n}.skseg", data


def parse_name(name):
    """``(sha256 hex, n entries)`` of a segment object name, or None."""
    match = _NAME_RE.match(name)
    return (match.group(1), int(match.group(2))) if match else None


def parse_prefix(prefix, n, size):
    """The index of a segment from its first :func:`prefix_size` bytes, or None if damaged.

    Parameters
    ----------
    prefix : bytes
    n : int
        Number of entries (from the object name).
    size : int
        Size of the object (from the listing).

    Returns
    -------
    index : structured ndarray or None
        Fields ``key`` (32 bytes), ``offset`` and ``size``, sorted by key.
    """
    want = prefix_size(n)
    if len(prefix) != want:
        return None
    magic, version, _, count, total = _SEG_HEADER.unpack_from(prefix)
    if magic != _SEG_MAGIC or version != _SEG_VERSION or count != n or total != size:
        return None
    crc_at = want - _SEG_CRC.size
    if zlib.crc32(memoryview(prefix)[:crc_at]) != _SEG_CRC.unpack_from(prefix, crc_at)[0]:
        return None
    index = np.frombuffer(prefix, dtype=_INDEX, count=n, offset=_SEG_HEADER.size).copy()
    if n:
        ends = index["offset"] + index["size"]
        if index["offset"][0] != want or ends[-1] != size or np.any(ends[:-1] != index["offset"][1:]):
            return None
        keys = index["key"].view("S32")
        if np.any(keys[1:] <= keys[:-1]):
            return None
    return index


def read_segment(data, name=None):
    """Check a whole segment; yield ``(key, entry bytes or None)`` for every entry.

    ``None`` marks a damaged entry. Raises ValueError when the header or index
    is damaged (nothing in it can be trusted).
    """
    if name is not None:
        parsed = parse_name(name)
        if parsed is None:
            raise ValueError(f"not a segment name: {name!r}")
        n = parsed[1]
    elif len(data) >= _SEG_HEADER.size:
        n = _SEG_HEADER.unpack_from(data)[3]
    else:
        raise ValueError("segment too short")
    index = parse_prefix(bytes(memoryview(data)[: prefix_size(n)]), n, len(data))
    if index is None:
        raise ValueError("damaged segment header or index")
    view = memoryview(data)
    for rec in index:
        key = rec["key"].tobytes()
        entry = bytes(view[int(rec["offset"]) : int(rec["offset"]) + int(rec["size"])])
        ok = check_entry(entry) and parse_header(entry)[3] == key
        yield key, entry if ok else None


# --------------------------------------------------------------- file systems
def _join(*parts):
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))


def _unstrip(fs, path):
    """``path`` as a URL (with its protocol), for messages."""
    try:
        return fs.unstrip_protocol(path)
    except Exception:
        return path


def _fs_token(fs):
    return getattr(fs, "_fs_token", None) or id(fs)


def _put(fs, path, data):
    """Publish ``data`` at ``path`` in one atomic step (a PUT; a rename on local disks).

    A ``file://`` store's file system is a :class:`~skbert._cache.localfs.NoFollowFS`:
    a temporary file renamed into place, never through a link.
    """
    fs.pipe_file(path, data)


def _fresh(list_objects, fs, path):
    """``list_objects(path, detail=True)`` past fsspec's listing cache; None when missing."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
    try:
        return list_objects(path, detail=True)
    except FileNotFoundError:
        return None


def _listing(fs, path):
    """``{name: info}`` of the objects directly in ``path`` (fresh, not cached)."""
    items = _fresh(fs.ls, fs, path) or []
    return {info["name"].rstrip("/").rsplit("/", 1)[-1]: info for info in items}


def _find(fs, root):
    """Every object under ``root`` as ``{relative path: info}`` (one recursive listing)."""
    found = _fresh(fs.find, fs, root)
    if found is None:
        return {}
    base = fs._strip_protocol(root).rstrip("/") + "/"
    out = {}
    for path, info in found.items():
        path = fs._strip_protocol(path)
        if path.startswith(base) and info.get("type", "file") != "directory":
            if info.get("islink"):
                continue  # never followed on local disks
            out[path[len(base) :]] = info
    return out


def _mtime(info):
    for field in ("LastModified", "last_modified", "mtime", "created", "updated", "timeCreated"):
        value = info.get(field)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return value.timestamp()
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
    return 0.0


def forget(fs, root):
    """Drop this process's knowledge of the store at ``root`` (after clear, compact)."""
    token = _fs_token(fs)
    prefix = root.rstrip("/") + "/"
    with _STATE_LOCK:
        for key in [k for k in _STATES if k[0] == token and k[1].startswith(prefix)]:
            del _STATES[key]
        for key in [k for k in _META_DONE if k[0] == token and k[1].startswith(prefix)]:
            _META_DONE.discard(key)
    clear_memory()


# ------------------------------------------------------------- process state
class _Segment:
    __slots__ = ("name", "path", "size", "n", "keys", "offsets", "sizes", "gone")

    def __init__(self, name, path, size, index):
        self.name = name
        self.path = path
        self.size = size
        self.n = len(index)
        self.keys = np.ascontiguousarray(index["key"]).view("S32")
        self.offsets = index["offset"].astype(np.int64)
        self.sizes = index["size"].astype(np.int64)
        self.gone = False


class _KindState:
    """What this process knows of one kind's segments: their indexes and a lookup.

    The lookup is one sorted array over all indexes (``merged``) plus the
    indexes of segments added since (``recent``, merged in when there are
    many), so adding a segment costs nothing and looking keys up is a few
    vectorised binary searches.
    """

    def __init__(self, path):
        self.path = path
        self.lock = threading.RLock()
        self.segments = []  # _Segment, position = segment id
        self.by_name = {}
        self.bad = set()  # names of segments whose index is damaged
        self.dead = set()  # (segment id, row) of damaged entries
        self.listed = False
        self.merged = None  # (keys S32, segment ids, rows)
        self.recent = []  # segment ids not in merged

    def add(self, name, path, size, index):
        if name in self.by_name:
            return
        seg = _Segment(name, path, size, index)
        self.by_name[name] = len(self.segments)
        self.segments.append(seg)
        self.recent.append(len(self.segments) - 1)
        if len(self.recent) > 32:
            self._merge()

    def drop(self, name):
        sid = self.by_name.get(name)
        if sid is not None:
            self.segments[sid].gone = True

    def _merge(self):
        ids = [i for i, s in enumerate(self.segments) if not s.gone and s.n]
        if not ids:
            self.merged, self.recent = None, []
            return
        keys = np.concatenate([self.segments[i].keys for i in ids])
        sids = np.concatenate([np.full(self.segments[i].n, i, dtype=np.int32) for i in ids])
        rows = np.concatenate([np.arange(self.segments[i].n, dtype=np.int32) for i in ids])
        order = np.argsort(keys, kind="stable")
        self.merged = (keys[order], sids[order], rows[order])
        self.recent = []

    def _search(self, q):
        """Empty results for ``q`` (ids -1), and the sorted key runs to look in.

        Each run is ``(keys, segment ids, rows)``: the merged index first, then
        each recent live segment as ``(keys, None, its id)``.
        """
        sid = np.full(len(q), -1, dtype=np.int64)
        row = np.zeros(len(q), dtype=np.int64)
        runs = [] if self.merged is None else [self.merged]
        for i in self.recent:
            seg = self.segments[i]
            if seg.n and not seg.gone:
                runs.append((seg.keys, None, i))
        return sid, row, runs

    def lookup(self, q):
        """Segment id and row of each key in ``q`` (S32 array); -1 where absent."""
        sid, row, runs = self._search(q)
        gone = np.array([s.gone for s in self.segments] + [True], dtype=bool)
        for keys, sids, rows in runs:
            todo = np.flatnonzero(sid < 0)
            if not len(todo):
                break
            qq = q[todo]
            pos = np.searchsorted(keys, qq)
            inside = pos < len(keys)
            hit = np.zeros(len(todo), dtype=bool)
            hit[inside] = keys[pos[inside]] == qq[inside]
            for j in np.flatnonzero(hit):
                p = pos[j]
                while p < len(keys) and keys[p] == qq[j]:
                    s, r = (sids[p], rows[p]) if sids is not None else (rows, p)
                    if not gone[s] and (s, r) not in self.dead:
                        sid[todo[j]], row[todo[j]] = s, r
                        break
                    p += 1
        return sid, row

    def lookup_fast(self, q):
        """As :meth:`lookup`, vectorised (used when nothing is dead or gone)."""
        if self.dead or any(s.gone for s in self.segments):
            return self.lookup(q)
        sid, row, runs = self._search(q)
        for keys, sids, rows in runs:
            todo = np.flatnonzero(sid < 0)
            if not len(todo):
                break
            qq = q[todo]
            pos = np.minimum(np.searchsorted(keys, qq), len(keys) - 1)
            hit = keys[pos] == qq
            t, p = todo[hit], pos[hit]
            if sids is None:
                sid[t], row[t] = rows, p
            else:
                sid[t], row[t] = sids[p], rows[p]
        return sid, row


def _state(fs, path):
    key = (_fs_token(fs), path)
    with _STATE_LOCK:
        state = _STATES.get(key)
        if state is None:
            state = _STATES[key] = _KindState(path)
        return state


# ---------------------------------------------------------------------- store
class SegmentStore:
    """A handle on a segment store (an fsspec URL), for one call.

    The same interface as :class:`skbert._cache.local.FeatureCache`.

    Parameters
    ----------
    url : str
        The ``memory`` URL; the store lives in its ``skbert-features-v1``
        sub-folder.
    fs : fsspec.AbstractFileSystem
        The file system of ``url``.
    path : str
        ``url`` without its protocol (as ``fs`` names it).
    dtype : {"float32", "float16"}, default="float32"
    max_bytes : int, default=None
        Size cap of the whole store: after writes, the oldest segments are
        deleted (object stores do not record reads, so this is
        first-in-first-out, not least-recently-used). None means no cap.
    """

    def __init__(self, url, fs, path, *, dtype="float32", max_bytes=None):
        self.url = url
        self.fs = fs
        self.path = path.rstrip("/")
        self.root = _join(self.path, STORE_DIR)
        self.location = url.rstrip("/") + "/" + STORE_DIR
        self.dtype = dtype
        self.dtype_code = DTYPE_CODES[dtype]
        self.max_bytes = max_bytes
        self.bytes_read = 0
        self.bytes_written = 0
        self.written = 0
        self.segments_written = 0
        self.damaged = []
        self.usable = True
        self.writable = True
        self.write_error = None
        self.unusable_reason = None
        self._namespaces = []
        if isinstance(fs, NoFollowFS) and fs.check_owner:
            problem = fs.unsafe()
            if problem is not None:
                self.usable = self.writable = False
                warn_once(
                    ("unusable", self.location),
                    f"skbert feature cache: {refusal(self.location, problem)}; features are "
                    "computed without caching.",
                    stacklevel=5,
                )

    # ---------------------------------------------------------- problems
    def _write_failed(self, exc):
        self.writable = False
        if self.write_error is None:
            self.write_error = exc

    def _read_failed(self, exc):
        """The store cannot be read (no such bucket, no credentials, network): go uncached."""
        self.usable = self.writable = False
        if self.unusable_reason is None:
            self.unusable_reason = f"cannot use {self.location} ({type(exc).__name__}: {exc})"
        warn_once(
            ("unusable", self.location),
            f"skbert feature cache: cannot use {self.location} ({type(exc).__name__}: {exc}); "
            "features are computed without caching.",
            stacklevel=5,
        )

    def _damaged(self, where, why):
        self.damaged.append((_unstrip(self.fs, str(where)), why))

    # -------------------------------------------------------------- use
    def namespace(self, key_fields, meta=None):
        """The namespace whose digest is the SHA-256 of ``key_fields`` (as the local store)."""
        fields, digest = namespace_digest(key_fields, self.dtype)
        ns = SegmentNamespace(self, digest, {"key": fields, **(meta or {})})
        self._namespaces.append(ns)
        return ns

    def close(self, summary=None):
        """Publish buffered entries, warn about problems and enforce the size cap.

        ``summary`` is accepted for the local store's interface; object stores
        keep no ``last_call.json`` (one more PUT per call, and racy when
        shared): see the vectorizer's ``last_cache_stats_``.
        """
        for ns in self._namespaces:
            ns.flush()
        if self.write_error is not None:
            warn_once(
                ("unwritable", self.location),
                f"skbert feature cache: cannot write to {self.location} "
                f"({type(self.write_error).__name__}: {self.write_error}); features are "
                "computed without caching them. Check the credentials and permissions, "
                "or set memory=None.",
            )
        if self.damaged:
            n = len(self.damaged)
            where, why = self.damaged[0]
            warnings.warn(
                f"skbert feature cache: {n} damaged cache entr{'y' if n == 1 else 'ies'} "
                f"or segment{'' if n == 1 else 's'} in {self.location} (e.g. {where}: {why}) "
                f"skipped; recomputing them. `skbert cache verify {self.url}` removes "
                "damaged segments.",
                FeatureCacheWarning,
                stacklevel=3,
            )
            self.damaged = []
        if self.max_bytes is not None and self.bytes_written and self.writable:
            self._maybe_evict()

    def _maybe_evict(self):
        key = (_fs_token(self.fs), self.root)
        if eviction_due(_SCAN, key, self.bytes_written, self.max_bytes):
            try:
                _evict(self.fs, self.root, self.max_bytes)
            except Exception as exc:  # the cap is best effort; results are unaffected
                logger.warning("Could not enforce cache_max_bytes on %s: %s", self.location, exc)


class SegmentNamespace:
    """The entries of one namespace in a segment store; made by :meth:`SegmentStore.namespace`."""

    def keys(self, kind, texts):
        """The 32-byte key of each text for entries of ``kind`` (as the local store)."""
        return text_keys(self.digest, kind, texts)

    def __init__(self, store, digest, meta):
        self.cache = store
        self.digest = digest
        self.name = digest.hex()[:NAMESPACE_HEX]
        self.path = _join(store.root, self.name)
        self.meta = meta
        self._buffers = {}  # kind -> {key: entry bytes}
        self._buffer_bytes = {}
        self._refreshed = set()  # kinds listed again by this handle
        self._lock = threading.Lock()

    # ------------------------------------------------------------ listing
    def _kind_path(self, kind):
        if not _KIND_RE.match(kind):
            raise ValueError(f"invalid entry kind {kind!r}")
        return _join(self.path, kind)

    def _state(self, kind):
        return _state(self.cache.fs, self._kind_path(kind))

    def _refresh(self, kind, state):
        """List the kind's segments again and load the indexes of new ones."""
        store = self.cache
        listing = _listing(store.fs, state.path)
        new = []
        with state.lock:
            for name in list(state.by_name):
                if name not in listing:
                    state.drop(name)
            for name, info in listing.items():
                parsed = parse_name(name)
                if parsed is None or name in state.by_name or name in state.bad:
                    continue
                if info.get("islink") or info.get("type") == "directory":
                    continue
                size = int(info.get("size") or 0)
                if size < prefix_size(parsed[1]):
                    # Empty or truncated: its index cannot be read (a ranged GET
                    # past its end fails), so it is skipped like any damaged one.
                    state.bad.add(name)
                    store._damaged(_join(state.path, name), f"truncated segment ({size} bytes)")
                    continue
                new.append((name, info.get("name", _join(state.path, name)), size, parsed[1]))
        if new:
            paths = [store.fs._strip_protocol(p) for _, p, _, _ in new]
            data = store.fs.cat_ranges(
                paths, [0] * len(new), [prefix_size(n) for *_, n in new], on_error="return"
            )
            with state.lock:
                for (name, _, size, n), path, prefix in zip(new, paths, data):
                    if isinstance(prefix, FileNotFoundError):
                        continue  # deleted meanwhile (compaction)
                    if isinstance(prefix, BaseException):
                        raise prefix
                    index = parse_prefix(bytes(prefix), n, size)
                    if index is None:
                        state.bad.add(name)
                        store._damaged(
                            _join(state.path, name), "damaged segment header or index"
                        )
                        continue
                    state.add(name, path, size, index)
        with state.lock:
            if any(s.gone for s in state.segments) or len(state.recent) > 8:
                state._merge()
            state.listed = True

    # -------------------------------------------------------------- read
    def read(self, kind, keys, shape, *, n_counts=2, select=None):
        """Read the entries of ``keys``; missing or damaged ones are reported as not found.

        The same contract as :meth:`skbert._cache.local.Namespace.read`.
        """
        store = self.cache
        code = store.dtype_code
        shape, select, found, values, counts = read_outputs(keys, shape, n_counts, select)
        n_values = int(np.prod(shape, dtype=np.int64))
        dt = DTYPES[code]
        size = entry_size(shape, code, n_counts)
        n = len(keys)
        if not store.usable or not n:
            return found, values, counts
        expect = (shape, code, n_counts)
        values_at = HEADER.size + 8 * n_counts
        q = np.array(keys, dtype="S32")
        try:
            state = self._state(kind)
            if not state.listed:
                self._refreshed.add(kind)
                self._refresh(kind, state)
            todo = np.arange(n)
            for _ in range(3):
                with state.lock:
                    sid, row = state.lookup_fast(q[todo])
                if (sid < 0).any() and kind not in self._refreshed:
                    # Keys another process may have published since we listed.
                    self._refreshed.add(kind)
                    self._refresh(kind, state)
                    with state.lock:
                        sid, row = state.lookup_fast(q[todo])
                hit = sid >= 0
                todo, sid, row = todo[hit], sid[hit], row[hit]
                if not len(todo):
                    break
                retry = []
                for i, s, r, entry in self._fetch(state, todo, sid, row):
                    if entry is None:  # its segment vanished (compacted or cleared)
                        self._refreshed.discard(kind)
                        retry.append(i)
                        continue
                    head = parse_header(entry) if len(entry) == size else None
                    if head is None or head[:3] != expect or head[3] != keys[i] or not check_entry(entry):
                        with state.lock:
                            state.dead.add((s, r))
                        store._damaged(
                            f"{state.segments[s].path}#{keys[i].hex()}",
                            "damaged entry (size, header, key or checksum mismatch)",
                        )
                        retry.append(i)  # another segment may hold it
                        continue
                    arr = np.frombuffer(entry, dtype=dt, count=n_values, offset=values_at)
                    arr = arr.reshape(shape)
                    values[i] = arr if select is None else arr[select]
                    counts[i] = np.frombuffer(
                        entry, dtype="<i8", count=n_counts, offset=HEADER.size
                    )
                    found[i] = True
                    store.bytes_read += size
                if not retry:
                    break
                todo = np.asarray(retry, dtype=np.int64)
        except Exception as exc:  # no such bucket, no credentials, no network ...
            logger.debug("Cannot read %s: %r", self.path, exc)
            store._read_failed(exc)
            found[:] = False
        return found, values, counts

    def _fetch(self, state, todo, sid, row):
        """Yield ``(position, segment id, row, entry bytes or None if its segment vanished)``."""
        store = self.cache
        paths, starts, ends, plans = [], [], [], []
        with state.lock:
            segments = list(state.segments)
        for s in np.unique(sid):
            seg = segments[s]
            sel = np.flatnonzero(sid == s)
            r = row[sel]
            offs, sizes = seg.offsets[r], seg.sizes[r]
            order = np.argsort(offs, kind="stable")
            sel, offs, sizes = sel[order], offs[order], sizes[order]
            ranges = []  # [start, end, [(position in sel, offset)...]]
            if len(sel) >= WHOLE_FRACTION * seg.n:
                ranges.append([int(seg.offsets[0]), int(seg.size), list(range(len(sel)))])
            else:
                for k in range(len(sel)):
                    o, e = int(offs[k]), int(offs[k] + sizes[k])
                    if ranges and o - ranges[-1][1] <= MERGE_GAP:
                        ranges[-1][1] = max(ranges[-1][1], e)
                        ranges[-1][2].append(k)
                    else:
                        ranges.append([o, e, [k]])
            for start, end, members in ranges:
                paths.append(seg.path)
                starts.append(start)
                ends.append(end)
                plans.append((s, start, [(sel[k], int(offs[k]), int(sizes[k])) for k in members]))
        blobs = store.fs.cat_ranges(paths, starts, ends, on_error="return")
        for (s, start, members), blob in zip(plans, blobs):
            if isinstance(blob, FileNotFoundError):
                with state.lock:
                    state.drop(segments[s].name)
                for j, _, _ in members:
                    yield todo[j], s, row[j], None
                continue
            if isinstance(blob, BaseException):
                raise blob
            view = memoryview(blob)
            for j, off, sz in members:
                yield todo[j], s, row[j], bytes(view[off - start : off - start + sz])

    # ------------------------------------------------------------- write
    def write(self, kind, keys, values, counts):
        """Buffer one entry per key; a full buffer is published as a segment.

        Returns the number of entries accepted (published now or when the
        call ends).
        """
        store = self.cache
        if not store.writable:
            return 0
        path = self._kind_path(kind)
        accepted = 0
        with self._lock:
            buf = self._buffers.setdefault(kind, {})
            for key, value, count in zip(keys, values, counts):
                if key in buf:
                    continue
                data = encode_entry(key, value, count, store.dtype)
                buf[key] = data
                self._buffer_bytes[kind] = self._buffer_bytes.get(kind, 0) + len(data)
                accepted += 1
                store.bytes_written += len(data)
                if len(buf) >= SEGMENT_ENTRIES or self._buffer_bytes[kind] >= SEGMENT_BYTES:
                    self._publish(kind, path)
                    buf = self._buffers.setdefault(kind, {})
                    if not store.writable:
                        break
        store.written += accepted
        return accepted

    def flush(self):
        """Publish every buffered entry (called by :meth:`SegmentStore.close`)."""
        with self._lock:
            for kind in list(self._buffers):
                if self._buffers[kind]:
                    self._publish(kind, self._kind_path(kind))

    def _publish(self, kind, path):
        store = self.cache
        entries = self._buffers.pop(kind, {})
        self._buffer_bytes.pop(kind, None)
        if not entries or not store.writable:
            return
        name, data = pack_segment(entries)
        try:
            self._write_meta()
            _put(store.fs, _join(path, name), data)
        except Exception as exc:
            store._write_failed(exc)
            return
        store.segments_written += 1
        n = len(entries)
        index = parse_prefix(data[: prefix_size(n)], n, len(data))
        state = _state(store.fs, path)
        with state.lock:
            state.add(name, _join(path, name), len(data), index)

    def _write_meta(self):
        key = (_fs_token(self.cache.fs), self.path)
        if key in _META_DONE:
            return
        fs = self.cache.fs
        path = _join(self.path, "namespace.json")
        blob = json.dumps(self.meta, sort_keys=True, indent=1).encode()
        try:
            current = fs.cat_file(path)
        except FileNotFoundError:
            current = None
        if current is None:
            _put(fs, path, blob)
        with _STATE_LOCK:
            _META_DONE.add(key)

    @contextlib.contextmanager
    def lock(self, timeout=None):
        """Does nothing: segments are content-addressed, so writers need no lock.

        Two processes that miss the same texts at the same moment may both
        compute them; both publish valid segments with equal entries.
        """
        yield


# ------------------------------------------------------------------ operations
def _segments(fs, root):
    """``{(namespace, kind): [(name, path, size, n, mtime)]}``, namespaces' meta paths, other."""
    objects = _find(fs, root)
    segs, metas, other = {}, {}, []
    for rel, info in objects.items():
        parts = rel.split("/")
        if len(parts) == 2 and _NAMESPACE_RE.match(parts[0]) and parts[1] == "namespace.json":
            metas[parts[0]] = _join(root, rel)
            continue
        if len(parts) == 3 and _NAMESPACE_RE.match(parts[0]) and _KIND_RE.match(parts[1]):
            parsed = parse_name(parts[2])
            if parsed is not None:
                segs.setdefault((parts[0], parts[1]), []).append(
                    (parts[2], _join(root, rel), int(info.get("size") or 0), parsed[1], _mtime(info))
                )
                continue
        other.append((_join(root, rel), info))
    return segs, metas, other


def _read_meta(fs, path):
    try:
        data = fs.cat_file(path)
        value = json.loads(data.decode("utf-8"))
    except Exception:
        return None
    return value if isinstance(value, dict) else None


def store_info(fs, root, location):
    """:func:`skbert.cache_info` of a segment store (listing only, no segment read)."""
    segs, metas, other = _segments(fs, root)
    models = {}
    total_entries = total_bytes = total_segments = 0
    for (ns, kind), items in segs.items():
        info = models.setdefault(ns, {"entries": 0, "bytes": 0, "segments": 0, "kinds": {}})
        k = info["kinds"].setdefault(kind, {"entries": 0, "bytes": 0, "segments": 0})
        entries = sum(n for _, _, _, n, _ in items)
        size = sum(s for _, _, s, _, _ in items)
        for d in (info, k):
            d["entries"] += entries
            d["bytes"] += size
            d["segments"] += len(items)
        total_entries += entries
        total_bytes += size
        total_segments += len(items)
    out = []
    for ns in sorted(set(models) | set(metas)):
        meta = _read_meta(fs, metas[ns]) if ns in metas else None
        info = models.get(ns, {"entries": 0, "bytes": 0, "segments": 0, "kinds": {}})
        out.append({"namespace": ns, **(meta or {}), **info})
    temporary = sum(1 for p, _ in other if p.rsplit("/", 1)[-1].startswith(TMP_PREFIX))
    return {
        "path": location,
        "format": FORMAT_VERSION,
        "store": "segments",
        "entries": total_entries,
        "bytes": total_bytes,
        "segments": total_segments,
        "models": out,
        "quarantined": 0,
        "temporary": temporary,
        "last_call": None,
    }


def _republish(fs, kind_path, entries):
    """Publish ``entries`` (key -> bytes) as segments of at most the configured size."""
    written = []
    buf, size = {}, 0
    for key, entry in entries:
        buf[key] = entry
        size += len(entry)
        if len(buf) >= SEGMENT_ENTRIES or size >= SEGMENT_BYTES:
            written.append(_publish_now(fs, kind_path, buf))
            buf, size = {}, 0
    if buf:
        written.append(_publish_now(fs, kind_path, buf))
    return written


def _publish_now(fs, kind_path, entries):
    name, data = pack_segment(entries)
    _put(fs, _join(kind_path, name), data)
    return name


def store_verify(fs, root, location):
    """:func:`skbert.cache_verify` of a segment store.

    Every segment is read whole and checked against its content hash, its
    index and each entry's header, key and CRC-32. A damaged segment's intact
    entries are published again in a new segment, then it is deleted.
    """
    segs, _, other = _segments(fs, root)
    checked = ok = removed = 0
    damaged = []
    now = time.time()
    for rel_path, info in other:
        name = rel_path.rsplit("/", 1)[-1]
        if name.startswith(TMP_PREFIX) and now - _mtime(info) > STALE_TMP_SECONDS:
            with contextlib.suppress(Exception):
                fs.rm_file(rel_path)
                removed += 1
    for (ns, kind), items in sorted(segs.items()):
        kind_path = _join(root, ns, kind)
        for name, path, size, n, _ in items:
            try:
                data = fs.cat_file(path)
            except FileNotFoundError:
                continue
            good = []
            try:
                whole = hashlib.sha256(data).hexdigest() == parse_name(name)[0]
                for key, entry in read_segment(data, name):
                    checked += 1
                    if entry is None:
                        damaged.append(f"{_unstrip(fs, path)}#{key.hex()}")
                    else:
                        good.append((key, entry))
                        ok += 1
                if not whole and len(good) == n:
                    damaged.append(f"{_unstrip(fs, path)} (content hash mismatch)")
            except ValueError as exc:
                checked += max(n, 1)
                damaged.append(f"{_unstrip(fs, path)} ({exc})")
                whole = False
            if whole and len(good) == n:
                continue
            if good:
                _republish(fs, kind_path, good)
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)
    forget(fs, root)
    return {
        "path": location,
        "store": "segments",
        "checked": checked,
        "ok": ok,
        "damaged": damaged,
        "temporary_removed": removed,
    }


def _evict(fs, root, max_bytes):
    segs, _, _ = _segments(fs, root)
    items = sorted(
        (mtime, size, path) for group in segs.values() for _, path, size, _, mtime in group
    )
    total = before = sum(size for _, size, _ in items)
    removed = 0
    if total > max_bytes:
        target = max_bytes * 0.9 if max_bytes else 0
        doomed = []
        for _, size, path in items:
            if total <= target:
                break
            doomed.append(path)
            total -= size
        if doomed:
            fs.rm(doomed)
            removed = len(doomed)
        forget(fs, root)
    return {"bytes_before": before, "bytes_after": total, "removed": removed}


def store_clear(fs, root, location, max_bytes=None):
    """:func:`skbert.cache_clear` of a segment store (oldest segments first with ``max_bytes``)."""
    if max_bytes is not None:
        return {"path": location, "store": "segments", **_evict(fs, root, int(max_bytes))}
    info = store_info(fs, root, location)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(root, recursive=True)
    forget(fs, root)
    after = store_info(fs, root, location)
    return {
        "path": location,
        "store": "segments",
        "removed": info["entries"] - after["entries"],
        "segments_removed": info["segments"] - after["segments"],
        "bytes_before": info["bytes"],
        "bytes_after": after["bytes"],
    }


def _index_of(fs, path, size, n):
    """The index of the segment at ``path`` (one ranged read), or None if damaged or gone."""
    if size < prefix_size(n):
        return None
    try:
        prefix = fs.cat_file(path, start=0, end=prefix_size(n))
    except FileNotFoundError:
        return None
    return parse_prefix(bytes(prefix), n, size)


def store_compact(fs, root, location):
    """Merge each kind's small segments into full ones, drop duplicates, then delete the old ones.

    Every segment's index is read (one ranged read each). Full segments are
    kept as they are, largest first, unless they hold an entry that a kept
    segment holds already (two writers of overlapping texts); those, and the
    small segments (under half of :data:`SEGMENT_ENTRIES` entries and of
    :data:`SEGMENT_BYTES` bytes), are read whole and their entries that no
    kept segment holds are packed into full segments. Each entry is thus kept
    once, and damaged ones are dropped (they are recomputed when needed).
    Merged segments are deleted only once the new ones are published, so a
    reader that listed a deleted segment lists again and finds its entries
    in the new one. Segments whose index is damaged are left for
    :func:`store_verify`.
    """
    segs, _, _ = _segments(fs, root)
    before = sum(len(v) for v in segs.values())
    bytes_before = sum(s for v in segs.values() for _, _, s, _, _ in v)
    merged = duplicates = dropped = 0
    for (ns, kind), items in sorted(segs.items()):
        small = {
            it[1]
            for it in items
            if it[3] < COMPACT_FRACTION * SEGMENT_ENTRIES and it[2] < COMPACT_FRACTION * SEGMENT_BYTES
        }
        seen = set()
        rewrite = []
        # Full segments first (largest, then oldest): kept unless they repeat a kept entry.
        repeats = False
        for item in sorted(items, key=lambda it: (it[1] in small, -it[3], it[4], it[0])):
            name, path, size, n, _ = item
            index = _index_of(fs, path, size, n)
            if index is None:
                continue  # damaged or gone: left for `cache verify`
            keys = {k.tobytes() for k in index["key"]}
            if path in small or keys & seen:
                rewrite.append(item)
                repeats = repeats or bool(keys & seen)
            else:
                seen |= keys
        if len(rewrite) < 2 and not repeats:
            continue  # at most one small segment and no duplicate: nothing to gain
        kind_path = _join(root, ns, kind)
        consumed, published = [], set()
        buf, size = {}, 0
        for name, path, _, _, _ in sorted(rewrite, key=lambda it: it[4]):
            try:
                data = fs.cat_file(path)
                entries = list(read_segment(data, name))
            except FileNotFoundError:
                continue
            except ValueError:
                continue  # a damaged index: left for `cache verify`
            consumed.append((name, path))
            for key, entry in entries:
                if entry is None:
                    dropped += 1
                elif key in seen:
                    duplicates += 1
                else:
                    seen.add(key)
                    buf[key] = entry
                    size += len(entry)
                    if len(buf) >= SEGMENT_ENTRIES or size >= SEGMENT_BYTES:
                        published.add(_publish_now(fs, kind_path, buf))
                        buf, size = {}, 0
        if buf:
            published.add(_publish_now(fs, kind_path, buf))
        # A segment republished unchanged has its old name: it must stay.
        doomed = [path for name, path in consumed if name not in published]
        if doomed:
            fs.rm(doomed)
            merged += len(doomed)
    forget(fs, root)
    segs_after, _, _ = _segments(fs, root)
    return {
        "path": location,
        "store": "segments",
        "segments_before": before,
        "segments_after": sum(len(v) for v in segs_after.values()),
        "segments_merged": merged,
        "duplicates_removed": duplicates,
        "damaged_dropped": dropped,
        "bytes_before": bytes_before,
        "bytes_after": sum(s for v in segs_after.values() for _, _, s, _, _ in v),
    }


def iter_store_entries(fs, root):
    """Yield ``(namespace, meta, kind, key, entry bytes)`` of every intact entry of a segment store."""
    segs, metas, _ = _segments(fs, root)
    for (ns, kind), items in sorted(segs.items()):
        meta = _read_meta(fs, metas[ns]) if ns in metas else None
        for name, path, _, _, _ in items:
            try:
                data = fs.cat_file(path)
                entries = list(read_segment(data, name))
            except (FileNotFoundError, ValueError):
                yield ns, meta, kind, None, None  # a damaged segment
                continue
            for key, entry in entries:
                yield ns, meta, kind, key, entry


def known_keys(fs, kind_path):
    """The keys of every segment of one kind (for copying without duplicates)."""
    keys = set()
    for name, info in _listing(fs, kind_path).items():
        parsed = parse_name(name)
        if parsed is None:
            continue
        n = parsed[1]
        if int(info.get("size") or 0) < prefix_size(n):
            continue  # empty or truncated: no entry can be read from it
        try:
            prefix = fs.cat_file(info["name"], start=0, end=prefix_size(n))
        except FileNotFoundError:
            continue
        index = parse_prefix(bytes(prefix), n, int(info["size"]))
        if index is not None:
            keys.update(k.tobytes() for k in index["key"])
    return keys


class SegmentSink:
    """Packs entries into segments of a segment store (skipping keys it holds already).

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        The store's file system.
    root : str
        The store folder (``<path>/skbert-features-v1``) as ``fs`` names it.
    """

    def __init__(self, fs, root):
        self.fs = fs
        self.root = root
        self.known = {}
        self.buffers = {}
        self.metas = set()
        self.segments = 0

    def add(self, ns, meta, kind, key, entry):
        """Buffer one checked entry; False when the store holds it already."""
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
        buf = self.buffers.pop(kind_path, None)
        if buf:
            _publish_now(self.fs, kind_path, buf)
            self.segments += 1

    def close(self):
        """Publish what is buffered; returns the number of segments written."""
        for kind_path in list(self.buffers):
            self._flush(kind_path)
        forget(self.fs, self.root)
        return self.segments
