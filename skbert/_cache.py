"""The on-disk per-text feature store: it knows bytes and keys, nothing of BERT.

A store lives in ``<memory>/skbert-features-v1/`` and holds *entries*: one
small float array (plus a few int64 counts) per key, where a key is the
SHA-256 of a *namespace* (a digest of everything that changes the stored
values, chosen by the caller), a *kind* (a short name for a family of arrays
of one shape) and the exact text. Texts themselves are never stored.

Layout::

    <memory>/skbert-features-v1/            0o700
        last_call.json                      hit/miss counts of the last call
        quarantine/                         damaged entries, moved aside
        <namespace: 32 hex>/                0o700
            namespace.json                  what the namespace is (informational)
            .lock                           serialises computing misses
            <kind>/<2 hex>/<62 hex>         one entry per text, 0o600

Each entry is one file, written to a temporary name in its final folder and
published by an atomic ``os.replace``, so readers see a complete entry or
none: there is no index to lock, several processes share a store freely and
a writer killed at any moment leaves at most a stray temporary file. An entry
file is raw little-endian bytes::

    header   60 bytes  magic b"SKBF", format version (u16), dtype code (u8),
                       ndim (u8), shape (4 x u32), n_counts (u32), key (32 bytes)
    counts   n_counts x int64
    values   prod(shape) x float32 (or float16)
    crc32    u32 over everything before it

A reader knows the exact header and size it expects, so a truncated,
extended, renamed or bit-flipped file is detected (header comparison, size,
CRC-32) and moved to ``quarantine/``; the caller then recomputes it. Nothing
is ever unpickled. Files are opened with ``O_NOFOLLOW``: a symlink where an
entry should be is refused. Folders are created 0o700 and files 0o600.

When the folder cannot be created or written (read-only, a path under a file,
a full disk) the store warns once per process and folder and the caller goes
on uncached; no partial entry is ever published.
"""

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import stat
import struct
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "STORE_DIR",
    "FeatureCache",
    "FeatureCacheWarning",
    "cache_info",
    "cache_verify",
    "cache_clear",
]

#: Version of the on-disk format; part of every key and of the folder name.
FORMAT_VERSION = 1
#: The folder skbert owns inside the ``memory`` directory.
STORE_DIR = f"skbert-features-v{FORMAT_VERSION}"

_MAGIC = b"SKBF"
_HEADER = struct.Struct("<4sHBB4II32s")
_CRC = struct.Struct("<I")
_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f2")}
_DTYPE_CODES = {"float32": 1, "float16": 2}
_MAX_NDIM = 4
_NAMESPACE_HEX = 32
_TMP_PREFIX = ".tmp."
#: A temporary file older than this is a leftover of a dead writer.
_STALE_TMP_SECONDS = 3600
#: How long to wait for another process computing the same namespace.
LOCK_TIMEOUT = 3600.0
#: Reads refresh an entry's modification time (its LRU age) at most this often.
_TOUCH_SECONDS = 600
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)

# Process-wide state: warnings already given, and the amortised size scan.
_STATE_LOCK = threading.Lock()
_WARNED = set()
_SCAN = {}  # store root -> (monotonic time of last scan, bytes written since)
_SCAN_INTERVAL = 60.0


class FeatureCacheWarning(UserWarning):
    """A problem with the on-disk feature cache that skbert worked around.

    Results stay correct: damaged entries are recomputed, and an unusable
    cache folder means the features are computed without caching.
    """


def _warn_once(token, message):
    with _STATE_LOCK:
        if token in _WARNED:
            return
        _WARNED.add(token)
    warnings.warn(message, FeatureCacheWarning, stacklevel=4)


def _quarantine(root, path):
    """Move a damaged file (or a symlink, never followed) into ``root/quarantine``."""
    path = Path(path)
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    name = ".".join(rel.parts) + f".{time.time_ns()}"
    try:
        _mkdir(root / "quarantine")
        os.replace(path, root / "quarantine" / name)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _is_real_dir(path):
    """True for a directory that is not a symlink."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _mkdir(path):
    """Create one folder owner-only; refuse a symlink in its place."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not _is_real_dir(path):
            raise OSError(errno.ENOTDIR, "not a real directory (symlink?)", str(path))


def _write_new(path, data):
    """Write ``data`` to a new owner-only file, never following a symlink."""
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY, 0o600
    )
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


def _tmp_name():
    return f"{_TMP_PREFIX}{_HOST}.{os.getpid()}.{os.urandom(4).hex()}"


def _publish(path, data):
    """Atomically publish ``data`` at ``path`` (temporary file + rename)."""
    tmp = os.path.join(os.path.dirname(path), _tmp_name())
    try:
        _write_new(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_small(path, limit=1 << 20):
    """Read a small file, never following a symlink; None when unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_json(path):
    data = _read_small(path)
    if data is None:
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _entry_size(shape, dtype_code, n_counts):
    return (
        _HEADER.size
        + 8 * n_counts
        + int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype_code].itemsize
        + _CRC.size
    )


def _header(key, shape, dtype_code, n_counts):
    dims = list(shape) + [0] * (_MAX_NDIM - len(shape))
    return _HEADER.pack(_MAGIC, FORMAT_VERSION, dtype_code, len(shape), *dims, n_counts, key)


def encode_entry(key, values, counts, dtype="float32"):
    """Serialise one entry (see the module docstring for the layout).

    Parameters
    ----------
    key : bytes of length 32
    values : ndarray of float, at most 4 dimensions
    counts : ndarray of int
    dtype : {"float32", "float16"}, default="float32"

    Returns
    -------
    data : bytes
    """
    code = _DTYPE_CODES[dtype]
    values = np.ascontiguousarray(values, dtype=_DTYPES[code])
    counts = np.ascontiguousarray(counts, dtype="<i8").ravel()
    body = b"".join(
        (_header(key, values.shape, code, counts.size), counts.tobytes(), values.tobytes())
    )
    return body + _CRC.pack(zlib.crc32(body))


def _parse_header(data):
    """Shape, dtype code, n_counts and key of an entry, or None if malformed."""
    if len(data) < _HEADER.size + _CRC.size:
        return None
    magic, version, code, ndim, *rest = _HEADER.unpack_from(data)
    dims, n_counts, key = rest[:_MAX_NDIM], rest[_MAX_NDIM], rest[_MAX_NDIM + 1]
    if magic != _MAGIC or version != FORMAT_VERSION or code not in _DTYPES:
        return None
    if not 0 <= ndim <= _MAX_NDIM or any(dims[ndim:]) or n_counts > 64:
        return None
    shape = tuple(dims[:ndim])
    if len(data) != _entry_size(shape, code, n_counts):
        return None
    return shape, code, n_counts, key


def check_entry(data):
    """True when ``data`` is a complete, self-consistent entry."""
    if _parse_header(data) is None:
        return False
    body = memoryview(data)[: -_CRC.size]
    return zlib.crc32(body) == _CRC.unpack_from(data, len(data) - _CRC.size)[0]


class Namespace:
    """The entries of one namespace in a store; made by :meth:`FeatureCache.namespace`."""

    def __init__(self, cache, digest):
        self.cache = cache
        self.digest = digest
        self.name = digest.hex()[:_NAMESPACE_HEX]
        self.path = os.path.join(cache.root, self.name)
        self._real_dirs = set()  # folders checked to be real directories

    # -------------------------------------------------------------- keys
    def keys(self, kind, texts):
        """The 32-byte key of each text for entries of ``kind``."""
        prefix = self.digest + kind.encode("ascii") + b"\0"
        sha = hashlib.sha256
        return [
            sha(prefix + text.encode("utf-8", "surrogatepass")).digest() for text in texts
        ]

    def _entry_path(self, kind, key):
        hexkey = key.hex()
        return os.path.join(self.path, kind, hexkey[:2], hexkey[2:])

    def _tree(self, folder):
        """The folders from the store root down to ``folder`` (a shard)."""
        kind_dir = os.path.dirname(folder)
        return (str(self.cache.root), self.path, kind_dir, folder)

    def _dir_ok(self, folder):
        """Whether ``folder`` and its parents up to the store are real directories.

        A symlink (or a file) in their place is quarantined and reported.
        """
        if folder in self._real_dirs:
            return True
        for part in self._tree(folder):
            if part in self._real_dirs:
                continue
            try:
                st = os.lstat(part)
            except OSError:
                return False
            if not stat.S_ISDIR(st.st_mode):
                self.cache._damaged(part, "not a real directory (refused)")
                return False
            self._real_dirs.add(part)
        return True

    # -------------------------------------------------------------- read
    def read(self, kind, keys, shape, *, n_counts=2, select=None):
        """Read the entries of ``keys``; missing or damaged ones are reported as not found.

        Parameters
        ----------
        kind : str
        keys : list of bytes
        shape : tuple of int
            The shape every entry must have.
        n_counts : int, default=2
        select : array-like of int, optional
            Rows (indices into the first axis) to return, in this order.

        Returns
        -------
        found : ndarray of bool, shape (n,)
        values : ndarray of float32, shape (n, *shape) (first axis ``select``ed)
        counts : ndarray of int64, shape (n, n_counts)
        """
        cache = self.cache
        code = cache.dtype_code
        shape = tuple(int(d) for d in shape)
        size = _entry_size(shape, code, n_counts)
        dt = _DTYPES[code]
        n_values = int(np.prod(shape, dtype=np.int64))
        out_shape = shape
        if select is not None:
            select = np.asarray(select, dtype=np.intp)
            out_shape = (len(select),) + shape[1:]
        n = len(keys)
        found = np.zeros(n, dtype=bool)
        values = np.zeros((n,) + out_shape, dtype=np.float32)
        counts = np.zeros((n, n_counts), dtype=np.int64)
        if not cache.usable or not n:
            return found, values, counts
        flags = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
        counts_at = _HEADER.size
        values_at = _HEADER.size + 8 * n_counts
        crc_at = size - _CRC.size
        head_tail = _header(b"\0" * 32, shape, code, n_counts)[:-32]
        kind_dir = os.path.join(self.path, kind)
        touch = cache.touch and os.utime in os.supports_fd
        now = time.time()
        crc32, unpack_crc = zlib.crc32, _CRC.unpack_from
        real_dirs = self._real_dirs
        for i, key in enumerate(keys):
            hexkey = key.hex()
            folder = f"{kind_dir}{os.sep}{hexkey[:2]}"
            if folder not in real_dirs and not self._dir_ok(folder):
                continue
            path = f"{folder}{os.sep}{hexkey[2:]}"
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    cache._damaged(path, "a symlink (refused)")
                else:
                    logger.debug("Cannot read cache entry %s: %s", path, exc)
                continue
            try:
                st = os.fstat(fd)
                data = os.read(fd, size + 1) if stat.S_ISREG(st.st_mode) else b""
                if touch and len(data) == size and now - st.st_mtime > _TOUCH_SECONDS:
                    with contextlib.suppress(OSError):
                        os.utime(fd)
            except OSError as exc:
                logger.debug("Cannot read cache entry %s: %s", path, exc)
                continue
            finally:
                os.close(fd)
            if (
                len(data) != size
                or data[: _HEADER.size - 32] != head_tail
                or data[_HEADER.size - 32 : _HEADER.size] != key
                or crc32(memoryview(data)[:crc_at]) != unpack_crc(data, crc_at)[0]
            ):
                cache._damaged(path, "damaged (size, header or checksum mismatch)")
                continue
            arr = np.frombuffer(data, dtype=dt, count=n_values, offset=values_at).reshape(shape)
            values[i] = arr if select is None else arr[select]
            counts[i] = np.frombuffer(data, dtype="<i8", count=n_counts, offset=counts_at)
            found[i] = True
            cache.bytes_read += size
        return found, values, counts

    # ------------------------------------------------------------- write
    def _ensure_dir(self, folder):
        if folder in self._real_dirs:
            return
        for part in self._tree(folder):
            if part not in self._real_dirs:
                _mkdir(part)
                self._real_dirs.add(part)

    def write(self, kind, keys, values, counts):
        """Publish one entry per key; returns the number written.

        On the first failure (read-only folder, full disk, ...) the store
        warns once and stops writing for the rest of its life.
        """
        cache = self.cache
        if not cache.writable:
            return 0
        written = 0
        for key, value, count in zip(keys, values, counts):
            data = encode_entry(key, value, count, cache.dtype)
            path = self._entry_path(kind, key)
            folder = os.path.dirname(path)
            try:
                try:
                    self._ensure_dir(folder)
                    _publish(path, data)
                except FileNotFoundError:
                    # A concurrent `clear` removed the folder: make it again, once.
                    self._real_dirs.clear()
                    self._ensure_dir(folder)
                    _publish(path, data)
            except OSError as exc:
                cache._write_failed(exc)
                break
            written += 1
            cache.bytes_written += len(data)
        cache.written += written
        return written

    # ----------------------------------------------------------- locking
    @contextlib.contextmanager
    def lock(self, timeout=None):
        """Hold this namespace's lock (across processes); yields nothing.

        Lets one process compute a namespace's misses while others wait and
        then read its entries instead of computing them again. Where locking
        is impossible (no ``fcntl``, unwritable folder) it does nothing.
        """
        timeout = LOCK_TIMEOUT if timeout is None else timeout
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        fd = None
        if self.cache.writable:
            try:
                for part in (str(self.cache.root), self.path):
                    _mkdir(part)
                fd = os.open(
                    os.path.join(self.path, ".lock"),
                    os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC,
                    0o600,
                )
            except OSError:
                fd = None
        if fd is None:
            yield
            return
        try:
            deadline = time.monotonic() + timeout
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        logger.warning(
                            "Waited %.0f s for another process computing %s; "
                            "computing without the lock.", timeout, self.path,
                        )
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 0.2)
                except OSError:
                    break
            yield
        finally:
            os.close(fd)  # also releases the lock

    # ------------------------------------------------------------ metadata
    def _write_meta(self, meta):
        path = os.path.join(self.path, "namespace.json")
        if _read_json(path) == meta:
            return
        try:
            for part in (str(self.cache.root), self.path):
                _mkdir(part)
            _publish(path, json.dumps(meta, sort_keys=True, indent=1).encode())
        except OSError as exc:
            self.cache._write_failed(exc)


class FeatureCache:
    """A handle on one feature-store folder, for one call.

    Parameters
    ----------
    path : str or path-like
        The ``memory`` directory; the store lives in its
        ``skbert-features-v1`` sub-folder.
    dtype : {"float32", "float16"}, default="float32"
        Storage dtype of the values (reads always return float32).
    max_bytes : int, default=None
        Size cap of the whole store; least recently used entries are evicted
        after writes (checked at most once a minute per process, or sooner
        after writing a tenth of the cap). None means no cap.
    touch : bool, default=True
        Refresh an entry's age when it is read (for least-recently-used
        eviction), at most once every 10 minutes per entry.
    """

    def __init__(self, path, *, dtype="float32", max_bytes=None, touch=True):
        self.path = Path(os.fspath(path)).expanduser()
        self.root = self.path / STORE_DIR
        self.dtype = dtype
        self.dtype_code = _DTYPE_CODES[dtype]
        self.max_bytes = max_bytes
        self.touch = touch
        self.bytes_read = 0
        self.bytes_written = 0
        self.written = 0
        self.damaged = []
        self.usable = True
        self.writable = True
        self.write_error = None
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            _mkdir(self.root)
        except OSError as exc:
            if _is_real_dir(self.root):
                # Exists but we cannot write to it: reading still works.
                self._write_failed(exc)
            else:
                self.usable = self.writable = False
                _warn_once(
                    ("unusable", str(self.root)),
                    f"skbert feature cache: cannot use {self.root} ({exc}); "
                    "features are computed without caching.",
                )

    # ---------------------------------------------------------- problems
    def _write_failed(self, exc):
        """Stop writing; the warning is given by :meth:`close` (in the caller's thread)."""
        self.writable = False
        if self.write_error is None:
            self.write_error = exc

    def _damaged(self, path, why):
        self.damaged.append((str(path), why))
        _quarantine(self.root, path)

    # -------------------------------------------------------------- use
    def namespace(self, key_fields, meta=None):
        """The namespace whose digest is the SHA-256 of ``key_fields``.

        Parameters
        ----------
        key_fields : dict
            JSON-serialisable; everything that changes the stored values.
        meta : dict, optional
            Extra JSON-serialisable description kept in ``namespace.json``
            (shown by :func:`cache_info`, never part of the key).

        Returns
        -------
        Namespace
        """
        fields = {"format": FORMAT_VERSION, "storage_dtype": self.dtype, **key_fields}
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        ns = Namespace(self, hashlib.sha256(blob).digest())
        if self.usable and not _is_real_dir(ns.path) and os.path.lexists(ns.path):
            # A symlink or a file where the namespace folder should be.
            self._damaged(ns.path, "not a real directory (refused)")
        if self.writable:
            ns._write_meta({"key": fields, **(meta or {})})
        return ns

    def close(self, summary=None):
        """Warn about problems, record ``summary`` and enforce the size cap.

        One :class:`FeatureCacheWarning` for damaged entries found by this
        handle, and one per process and folder when writing failed.
        """
        if self.write_error is not None:
            _warn_once(
                ("unwritable", str(self.root)),
                f"skbert feature cache: cannot write to {self.root} ({self.write_error}); "
                "features are computed without caching them. Free space or fix "
                "the folder's permissions, or set memory=None.",
            )
        if self.damaged:
            n = len(self.damaged)
            example = self.damaged[0]
            warnings.warn(
                f"skbert feature cache: {n} damaged cache entr{'y' if n == 1 else 'ies'} "
                f"in {self.root} (e.g. {example[0]}: {example[1]}) moved to "
                f"{self.root / 'quarantine'}; recomputing them.",
                FeatureCacheWarning,
                stacklevel=3,
            )
            self.damaged = []
        if not self.writable:
            return
        if summary is not None:
            record = {"time": time.time(), "pid": os.getpid(), **summary}
            path = self.root / "last_call.json"
            with contextlib.suppress(OSError):
                # Informational: unlink first, because replacing an existing
                # file makes ext4 flush it (milliseconds on every call).
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                _publish(path, json.dumps(record, sort_keys=True).encode())
        if self.max_bytes is not None and self.bytes_written:
            self._maybe_evict()

    def _maybe_evict(self):
        key = str(self.root)
        now = time.monotonic()
        with _STATE_LOCK:
            last, since = _SCAN.get(key, (None, 0))
            since += self.bytes_written
            due = last is None or now - last > _SCAN_INTERVAL or since >= self.max_bytes / 10
            _SCAN[key] = (now, 0) if due else (last, since)
        if due:
            try:
                evict(self.path, self.max_bytes)
            except OSError as exc:  # the cap is best effort; results are unaffected
                logger.warning("Could not enforce cache_max_bytes on %s: %s", self.root, exc)


# ------------------------------------------------------------------ walking
def _scan_entries(root):
    """Yield ``(path, kind_dir, lstat)`` of every file under the store's namespaces."""
    try:
        namespaces = list(os.scandir(root))
    except OSError:
        return
    for ns in namespaces:
        if not ns.is_dir(follow_symlinks=False) or len(ns.name) != _NAMESPACE_HEX:
            continue
        try:
            kinds = list(os.scandir(ns.path))
        except OSError:
            continue
        for kind in kinds:
            if not kind.is_dir(follow_symlinks=False):
                continue
            try:
                shards = list(os.scandir(kind.path))
            except OSError:
                continue
            for shard in shards:
                if not shard.is_dir(follow_symlinks=False):
                    continue
                try:
                    files = list(os.scandir(shard.path))
                except OSError:
                    continue
                for entry in files:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    yield entry, ns.name, kind.name, shard.name, st


def _stale_tmp(name, st, now):
    """Whether a temporary file was left behind by a dead or long-gone writer."""
    if now - st.st_mtime > _STALE_TMP_SECONDS:
        return True
    parts = name.split(".")
    # .tmp.<host>.<pid>.<random>
    if len(parts) == 5 and parts[2] == _HOST and parts[3].isdigit():
        pid = int(parts[3])
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
    return False


def _store_root(path):
    root = Path(os.fspath(path)).expanduser() / STORE_DIR
    if os.path.lexists(root) and not _is_real_dir(root):
        raise OSError(
            errno.ENOTDIR, "the feature store is not a real directory (symlink?)", str(root)
        )
    return root


def cache_info(path):
    """Describe the feature cache in ``path``.

    Parameters
    ----------
    path : str or path-like
        The ``memory`` directory given to :class:`~skbert.BertVectorizer`.

    Returns
    -------
    info : dict
        ``path``, ``format``, ``entries`` and ``bytes`` (all entry files),
        ``models`` (one dict per namespace: its key fields and description,
        ``entries`` and ``bytes`` per kind), ``quarantined`` (damaged files
        set aside), ``temporary`` (unpublished files) and ``last_call`` (hit
        and miss counts of the last call that used the cache, or None).

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
    root = _store_root(path)
    namespaces = {}
    total_entries = total_bytes = temporary = 0
    for entry, ns, kind, _, st in _scan_entries(root):
        if entry.name.startswith(_TMP_PREFIX):
            temporary += 1
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        info = namespaces.setdefault(ns, {"entries": 0, "bytes": 0, "kinds": {}})
        k = info["kinds"].setdefault(kind, {"entries": 0, "bytes": 0})
        for d in (info, k):
            d["entries"] += 1
            d["bytes"] += st.st_size
        total_entries += 1
        total_bytes += st.st_size
    models = []
    for ns, info in sorted(namespaces.items()):
        meta = _read_json(root / ns / "namespace.json") or {}
        models.append({"namespace": ns, **meta, **info})
    quarantined = 0
    with contextlib.suppress(OSError):
        quarantined = sum(1 for _ in os.scandir(root / "quarantine"))
    return {
        "path": str(root),
        "format": FORMAT_VERSION,
        "entries": total_entries,
        "bytes": total_bytes,
        "models": models,
        "quarantined": quarantined,
        "temporary": temporary,
        "last_call": _read_json(root / "last_call.json"),
    }


def cache_verify(path):
    """Check every entry of the feature cache in ``path``; set damaged ones aside.

    Each entry's header, size, key (against its file name) and CRC-32 are
    checked; damaged entries and symlinks are moved to ``quarantine/`` (they
    are recomputed when next needed), and temporary files left by dead
    writers are removed.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    report : dict
        ``path``, ``checked``, ``ok``, ``damaged`` (list of paths moved to
        quarantine) and ``temporary_removed``.
    """
    root = _store_root(path)
    checked = ok = removed = 0
    damaged = []
    now = time.time()
    for entry, _, _, shard, st in _scan_entries(root):
        if entry.name.startswith(_TMP_PREFIX):
            if _stale_tmp(entry.name, st, now):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
            continue
        checked += 1
        good = False
        if stat.S_ISREG(st.st_mode):
            data = _read_small(entry.path, limit=st.st_size + 1)
            if data is not None and check_entry(data):
                key = _parse_header(data)[3]
                good = key.hex() == shard + entry.name
        if good:
            ok += 1
            continue
        damaged.append(entry.path)
        _quarantine(root, entry.path)
    return {
        "path": str(root),
        "checked": checked,
        "ok": ok,
        "damaged": damaged,
        "temporary_removed": removed,
    }


def evict(path, max_bytes):
    """Delete least recently used entries until the store holds at most ``max_bytes``.

    Quarantined files go first, then entries by modification time (reads
    refresh it). When the store exceeds the cap it is brought down to 90% of
    it, so that the next few writes do not evict again.

    Returns
    -------
    report : dict
        ``bytes_before``, ``bytes_after``, ``removed`` (files).
    """
    root = _store_root(path)
    now = time.time()
    files = []
    with contextlib.suppress(OSError):
        for q in os.scandir(root / "quarantine"):
            with contextlib.suppress(OSError):
                st = q.stat(follow_symlinks=False)
                files.append((-1.0, st.st_size, q.path))
    for entry, _, _, _, st in _scan_entries(root):
        if entry.name.startswith(_TMP_PREFIX):
            if _stale_tmp(entry.name, st, now):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            continue
        files.append((st.st_mtime, st.st_size, entry.path))
    total = before = sum(size for _, size, _ in files)
    removed = 0
    if total > max_bytes:
        target = max_bytes * 0.9 if max_bytes else 0
        files.sort()
        for _, size, file in files:
            if total <= target:
                break
            try:
                os.unlink(file)
            except FileNotFoundError:
                pass
            except OSError:
                continue
            total -= size
            removed += 1
    return {"bytes_before": before, "bytes_after": total, "removed": removed}


def cache_clear(path, max_bytes=None):
    """Empty the feature cache in ``path`` (or shrink it to ``max_bytes``).

    Only skbert's own sub-folder is touched; other files in ``path`` stay.

    Parameters
    ----------
    path : str or path-like
    max_bytes : int, default=None
        None removes everything; otherwise least recently used entries are
        removed until the store holds at most ``max_bytes``.

    Returns
    -------
    report : dict
        ``path``, ``removed`` (files) and ``bytes_before`` / ``bytes_after``.
    """
    root = _store_root(path)
    if max_bytes is not None:
        return {"path": str(root), **evict(path, int(max_bytes))}
    info = cache_info(path)
    if os.path.lexists(root):
        import shutil

        # rmtree never follows symlinks inside the tree; the root itself
        # was checked to be a real directory.
        for child in list(os.scandir(root)):
            if child.is_dir(follow_symlinks=False):
                shutil.rmtree(child.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(child.path)
    after = cache_info(path)
    return {
        "path": str(root),
        "removed": info["entries"] - after["entries"],
        "bytes_before": info["bytes"],
        "bytes_after": after["bytes"],
    }
