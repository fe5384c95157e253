"""The on-disk per-text feature store: it knows bytes and keys, nothing of BERT.

A store lives in ``<memory>/skbert-features-v1/`` and holds *entries*: one
small float array (plus a few int64 counts) per key, where a key is the
SHA-256 of a *namespace* (a digest of everything that changes the stored
values, chosen by the caller), a *kind* (a short name for a family of arrays
of one shape) and the exact text. Texts themselves are never stored.

Layout::

    <memory>/skbert-features-v1/            0o700, owned by the user
        last_call.json                      hit/miss counts of the last call
        quarantine/                         damaged entries, moved aside
        <namespace: 32 hex>/                0o700
            namespace.json                  what the namespace is (informational)
            .lock                           held for milliseconds, to take claims
            .claims/<host>.<pid>.<random>   keys a live process is computing
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
is ever unpickled.

No operation follows a symbolic link. Every folder below the store is opened
relative to its parent's file descriptor with ``O_NOFOLLOW | O_DIRECTORY``,
and every file is created, opened, renamed and removed relative to its
folder's descriptor (``openat``, ``renameat``, ``unlinkat``), so a link
planted anywhere in the store (or swapped in during an operation) is refused
or set aside, never followed: reading, writing, quarantining, eviction,
``cache_clear`` and ``cache_verify`` stay inside the store. The store folder
must be owned by the user and writable by nobody else, and the ``memory``
folder must not be writable by others (unless sticky, like ``/tmp``) nor
owned by another user (root excepted): otherwise the store is refused, as
ssh refuses keys in such folders. Folders are created 0o700 (missing parents
of ``memory`` included, whatever the umask) and files 0o600.

Several processes computing at once coordinate by *claims* (see
:class:`Claims`): a process computing some texts holds a claim file listing
their keys, locked with ``flock`` for as long as it lives; the namespace's
``.lock`` is held only while claims are read and made. Others compute the
texts nobody claimed and wait, at most ``SKBERT_CACHE_WAIT`` seconds without
progress, for the claimed ones.

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
    "WAIT_ENV",
    "FeatureCache",
    "FeatureCacheWarning",
    "cache_info",
    "cache_verify",
    "cache_clear",
    "parse_size",
]

#: Version of the on-disk format; part of every key and of the folder name.
FORMAT_VERSION = 1
#: The folder skbert owns inside the ``memory`` directory.
STORE_DIR = f"skbert-features-v{FORMAT_VERSION}"
#: Environment variable: how long (seconds) to wait for another process.
WAIT_ENV = "SKBERT_CACHE_WAIT"
#: The wait when :data:`WAIT_ENV` is unset.
DEFAULT_WAIT = 30.0

_MAGIC = b"SKBF"
_HEADER = struct.Struct("<4sHBB4II32s")
_CRC = struct.Struct("<I")
_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f2")}
_DTYPE_CODES = {"float32": 1, "float16": 2}
_MAX_NDIM = 4
_NAMESPACE_HEX = 32
_TMP_PREFIX = ".tmp."
_CLAIMS_DIR = ".claims"
_LOCK_FILE = ".lock"
_QUARANTINE = "quarantine"
#: A temporary file older than this is a leftover of a dead writer.
_STALE_TMP_SECONDS = 3600
#: Reads refresh an entry's modification time (its LRU age) at most this often.
_TOUCH_SECONDS = 600
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
#: Whether folders can be used through descriptors (``openat`` and friends):
#: everywhere but Windows, where paths are used after an ``lstat`` check.
_AT = bool(
    _O_NOFOLLOW
    and _O_DIRECTORY
    and {os.open, os.mkdir, os.unlink, os.rename, os.rmdir, os.stat} <= os.supports_dir_fd
    and os.scandir in os.supports_fd
)
#: Errors of opening a symlink (or a file) as a folder with O_NOFOLLOW.
_LINK_ERRNOS = {errno.ELOOP, errno.ENOTDIR, errno.EMLINK}
#: Entry kinds are short names; anything else in a namespace is not an entry folder.
_POSIX_CHECKS = os.name == "posix" and hasattr(os, "geteuid")

try:  # pragma: no cover - Windows has no flock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

# Process-wide state: warnings already given, the amortised size scan, and
# locks and claims this process stopped waiting for.
_STATE_LOCK = threading.Lock()
_WARNED = set()
_SCAN = {}  # store root -> (monotonic time of last scan, bytes written since)
_SCAN_INTERVAL = 60.0
_STUCK_LOCKS = set()  # lock paths a wait timed out on (waits on them are short)
_STUCK_CLAIMS = {}  # claim path -> its modification time when given up on


def eviction_due(scans, key, bytes_written, max_bytes):
    """Whether a store of size cap ``max_bytes`` is due for an eviction scan.

    A scan lists the whole store, so a process runs one at its first write,
    then once a minute or after writing a tenth of the cap. ``scans`` maps a
    store's ``key`` to ``(time of its last scan, bytes written since)``.
    """
    now = time.monotonic()
    with _STATE_LOCK:
        last, since = scans.get(key, (None, 0))
        since += bytes_written
        due = last is None or now - last > _SCAN_INTERVAL or since >= max_bytes / 10
        scans[key] = (now, 0) if due else (last, since)
    return due


class FeatureCacheWarning(UserWarning):
    """A problem with the on-disk feature cache that skbert worked around.

    Results stay correct: damaged entries are recomputed, an unusable or
    unsafe cache folder means the features are computed without caching, and
    a process that stopped making progress on texts it claimed is not waited
    for any longer.
    """


def _warn_once(token, message, stacklevel=4):
    with _STATE_LOCK:
        if token in _WARNED:
            return
        _WARNED.add(token)
    warnings.warn(message, FeatureCacheWarning, stacklevel=stacklevel)


def wait_seconds():
    """How long to wait for another process, from :data:`WAIT_ENV` (default 30).

    Raises
    ------
    ValueError
        When the variable is set to something else than a number >= 0.
    """
    raw = os.environ.get(WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(
            f"{WAIT_ENV} must be a number of seconds >= 0 (how long to wait for another "
            f"process computing the same texts); got {raw!r}."
        )
    return value


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text):
    """A size in bytes from ``"123"``, ``"500M"``, ``"1G"`` or ``"1.5GiB"``.

    Units are binary (K = 1024); ``B``, ``iB`` and lower case are accepted.

    Raises
    ------
    ValueError
        When ``text`` is not a size.
    """
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?\s*", str(text), re.I)
    if match is None or (match.group(3) and match.group(3).lower() == "ib" and not match.group(2)):
        raise ValueError(
            f"{text!r} is not a size: give bytes, or a number with a unit K, M, G or T "
            "(binary: 1K = 1024), e.g. 500M, 1G or 1.5GiB."
        )
    number, unit = match.group(1), match.group(2).lower()
    return int(float(number) * _UNITS[unit]) if "." in number else int(number) * _UNITS[unit]


# ------------------------------------------------------------ safe folders
# A folder "handle" is a file descriptor where the platform has *at() system
# calls, else a path checked with lstat. Every name below is resolved
# relative to a handle, one component at a time, never following a link.
def _loc(parent, name):
    """The ``(path, dir_fd)`` arguments naming ``name`` inside folder handle ``parent``."""
    if parent is None or not isinstance(parent, int):
        return (name if parent is None else os.path.join(parent, name)), None
    return name, parent


def _open_dir(name, parent=None):
    """Open folder ``name`` (inside handle ``parent``) without following a link.

    Raises OSError (errno in ``_LINK_ERRNOS`` for a symlink or a file).
    """
    if _AT:
        path, dir_fd = _loc(parent, name)
        return os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    path, _ = _loc(parent, name)  # pragma: no cover - Windows
    if not stat.S_ISDIR(os.lstat(path).st_mode):  # pragma: no cover
        raise OSError(errno.ENOTDIR, "not a real directory (symlink?)", path)
    return path  # pragma: no cover


def _close(handle):
    if isinstance(handle, int):
        with contextlib.suppress(OSError):
            os.close(handle)


def _fstat(handle):
    return os.fstat(handle) if isinstance(handle, int) else os.lstat(handle)


def _lstat_at(parent, name):
    path, dir_fd = _loc(parent, name)
    return os.stat(path, dir_fd=dir_fd, follow_symlinks=False)


def _unlink_at(parent, name):
    path, dir_fd = _loc(parent, name)
    os.unlink(path, dir_fd=dir_fd)


def _replace_at(src_parent, src, dst_parent, dst):
    src, src_fd = _loc(src_parent, src)
    dst, dst_fd = _loc(dst_parent, dst)
    os.replace(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def _open_at(parent, name, flags, mode=0o600):
    path, dir_fd = _loc(parent, name)
    return os.open(path, flags, mode, dir_fd=dir_fd)


def _fix_mode(handle):
    """Make a folder this process just created owner-only, whatever the umask."""
    if _POSIX_CHECKS and isinstance(handle, int):
        with contextlib.suppress(OSError):
            if stat.S_IMODE(os.fstat(handle).st_mode) != 0o700:
                os.fchmod(handle, 0o700)


def _ensure_dir(parent, name, on_bad=None):
    """Open folder ``name`` in ``parent``, creating it 0o700 when missing.

    A symlink or a file in its place is handed to ``on_bad(parent, name)``
    (which moves or removes it; never followed) and the folder is created.
    """
    for attempt in range(3):
        try:
            return _open_dir(name, parent)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in _LINK_ERRNOS or on_bad is None or attempt == 2:
                raise
            on_bad(parent, name)
        path, dir_fd = _loc(parent, name)
        try:
            os.mkdir(path, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            continue
        handle = _open_dir(name, parent)
        _fix_mode(handle)
        return handle
    raise OSError(errno.ENOTDIR, "cannot create a real directory", name)  # pragma: no cover


def _unlink_bad(parent, name):
    """Remove a symlink or a file where a folder should be (the link itself only)."""
    with contextlib.suppress(OSError):
        if not stat.S_ISDIR(_lstat_at(parent, name).st_mode):
            _unlink_at(parent, name)


def _makedirs(path):
    """Create ``path`` and its missing parents 0o700, whatever the umask."""
    path = Path(path)
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        try:
            handle = _open_dir(str(folder))
        except OSError:
            continue
        _fix_mode(handle)
        _close(handle)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _tmp_name():
    return f"{_TMP_PREFIX}{_HOST}.{os.getpid()}.{os.urandom(4).hex()}"


def _publish_at(parent, name, data):
    """Atomically publish ``data`` as ``name`` in folder ``parent`` (temporary file + rename)."""
    tmp = _tmp_name()
    fd = _open_at(
        parent, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
    )
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        _replace_at(parent, tmp, parent, name)
    except BaseException:
        with contextlib.suppress(OSError):
            _unlink_at(parent, tmp)
        raise


def _read_small_at(parent, name, limit=1 << 20):
    """Read a small regular file, never following a link; None when unreadable."""
    try:
        fd = _open_at(parent, name, _READ_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_json_at(parent, name):
    data = _read_small_at(parent, name)
    if data is None:
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _rmtree_at(parent, name, depth=0):
    """Remove ``name`` in ``parent`` and, for a real folder, all it holds; links are removed, never followed."""
    try:
        st = _lstat_at(parent, name)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError):
            _unlink_at(parent, name)
        return
    if depth > 16:
        return
    try:
        handle = _open_dir(name, parent)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError), os.scandir(handle) as it:
            children = [e.name for e in it]
        for child in children:
            _rmtree_at(handle, child, depth + 1)
    finally:
        _close(handle)
    path, dir_fd = _loc(parent, name)
    with contextlib.suppress(OSError):
        os.rmdir(path, dir_fd=dir_fd)


# --------------------------------------------------------- folder safety
def _describe_mode(mode):
    return f"mode {stat.S_IMODE(mode):#o}"


def _unsafe_store(st):
    """Why a store folder with this ``lstat`` must not be used, or None."""
    if not _POSIX_CHECKS:
        return None  # pragma: no cover
    if st.st_uid != os.geteuid():
        return f"it is owned by another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by other users ({_describe_mode(st.st_mode)})"
    return None


def _unsafe_memory(path):
    """Why the ``memory`` folder at ``path`` must not hold a store, or None."""
    if not _POSIX_CHECKS:
        return None  # pragma: no cover
    try:
        st = os.stat(path)
    except OSError:
        return None  # reported when the store cannot be opened
    if st.st_uid not in (os.geteuid(), 0):
        return f"{path} is owned by another user (uid {st.st_uid})"
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        return f"{path} is writable by everyone ({_describe_mode(st.st_mode)}, no sticky bit)"
    return None


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


def namespace_digest(key_fields, dtype):
    """The full key fields and the 32-byte digest of a namespace (shared by every store).

    Parameters
    ----------
    key_fields : dict
        JSON-serialisable; everything that changes the stored values.
    dtype : {"float32", "float16"}
        The storage dtype.

    Returns
    -------
    fields : dict
    digest : bytes
    """
    fields = {"format": FORMAT_VERSION, "storage_dtype": dtype, **key_fields}
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return fields, hashlib.sha256(blob).digest()


def read_outputs(keys, shape, n_counts, select):
    """The arrays a store's ``read`` fills, with nothing found yet.

    Every store (:class:`Namespace`, the segment store, the memory layer)
    answers ``read(kind, keys, shape, n_counts=, select=)`` with these.

    Returns
    -------
    shape : tuple of int
    select : ndarray of intp or None
    found : ndarray of bool, shape (n,)
    values : ndarray of float32, shape (n, *shape) (first axis ``select``ed)
    counts : ndarray of int64, shape (n, n_counts)
    """
    shape = tuple(int(d) for d in shape)
    out_shape = shape
    if select is not None:
        select = np.asarray(select, dtype=np.intp)
        out_shape = (len(select),) + shape[1:]
    n = len(keys)
    return (
        shape,
        select,
        np.zeros(n, dtype=bool),
        np.zeros((n,) + out_shape, dtype=np.float32),
        np.zeros((n, n_counts), dtype=np.int64),
    )


class Namespace:
    """The entries of one namespace in a store; made by :meth:`FeatureCache.namespace`."""

    def __init__(self, cache, digest):
        self.cache = cache
        self.digest = digest
        self.name = digest.hex()[:_NAMESPACE_HEX]
        self.path = os.path.join(cache.root, self.name)

    # -------------------------------------------------------------- keys
    def keys(self, kind, texts):
        """The 32-byte key of each text for entries of ``kind``."""
        prefix = self.digest + kind.encode("ascii") + b"\0"
        sha = hashlib.sha256
        return [
            sha(prefix + text.encode("utf-8", "surrogatepass")).digest() for text in texts
        ]

    # ----------------------------------------------------------- folders
    def _sub(self, parent, name, rel):
        """Open an existing folder of the namespace; None when missing or refused.

        A symlink or a file in its place is set aside (quarantined) and reported.
        """
        try:
            return _open_dir(name, parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:
                self.cache._damaged_at(parent, name, rel, "not a real directory (refused)")
            else:
                logger.debug("Cannot open cache folder %s: %s", rel, exc)
            return None

    def _ensure(self, parent, name, rel):
        """Open a folder of the namespace, creating it; a link in its place is set aside."""
        return _ensure_dir(
            parent,
            name,
            on_bad=lambda p, n: self.cache._damaged_at(p, n, rel, "not a real directory (refused)"),
        )

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
        shape, select, found, values, counts = read_outputs(keys, shape, n_counts, select)
        size = _entry_size(shape, code, n_counts)
        dt = _DTYPES[code]
        n_values = int(np.prod(shape, dtype=np.int64))
        n = len(keys)
        if not cache.usable or not n:
            return found, values, counts
        handles = []
        try:
            root = cache._open_root()
            if root is None:
                return found, values, counts
            handles.append(root)
            ns_dir = self._sub(root, self.name, self.name)
            if ns_dir is None:
                return found, values, counts
            handles.append(ns_dir)
            kind_dir = self._sub(ns_dir, kind, f"{self.name}/{kind}")
            if kind_dir is None:
                return found, values, counts
            handles.append(kind_dir)
            shards = {}
            self._read_into(
                kind, kind_dir, shards, handles, keys, shape, size, dt, n_values, n_counts,
                select, found, values, counts,
            )
        finally:
            for handle in reversed(handles):
                _close(handle)
        return found, values, counts

    def _read_into(
        self, kind, kind_dir, shards, handles, keys, shape, size, dt, n_values, n_counts,
        select, found, values, counts,
    ):
        cache = self.cache
        code = cache.dtype_code
        counts_at = _HEADER.size
        values_at = _HEADER.size + 8 * n_counts
        crc_at = size - _CRC.size
        head_tail = _header(b"\0" * 32, shape, code, n_counts)[:-32]
        touch = cache.touch and os.utime in os.supports_fd
        now = time.time()
        crc32, unpack_crc = zlib.crc32, _CRC.unpack_from
        missing_shard = object()
        for i, key in enumerate(keys):
            hexkey = key.hex()
            shard = shards.get(hexkey[:2], missing_shard)
            if shard is missing_shard:
                shard = shards[hexkey[:2]] = self._sub(
                    kind_dir, hexkey[:2], f"{self.name}/{kind}/{hexkey[:2]}"
                )
                if shard is not None:
                    handles.append(shard)
            if shard is None:
                continue
            name = hexkey[2:]
            try:
                fd = _open_at(shard, name, _READ_FLAGS)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno in _LINK_ERRNOS:
                    cache._damaged_at(
                        shard, name, f"{self.name}/{kind}/{hexkey[:2]}/{name}", "a symlink (refused)"
                    )
                else:
                    logger.debug("Cannot read cache entry %s: %s", hexkey, exc)
                continue
            try:
                st = os.fstat(fd)
                data = os.read(fd, size + 1) if stat.S_ISREG(st.st_mode) else b""
                if touch and len(data) == size and now - st.st_mtime > _TOUCH_SECONDS:
                    with contextlib.suppress(OSError):
                        os.utime(fd)
            except OSError as exc:
                logger.debug("Cannot read cache entry %s: %s", hexkey, exc)
                continue
            finally:
                os.close(fd)
            if (
                len(data) != size
                or data[: _HEADER.size - 32] != head_tail
                or data[_HEADER.size - 32 : _HEADER.size] != key
                or crc32(memoryview(data)[:crc_at]) != unpack_crc(data, crc_at)[0]
            ):
                cache._damaged_at(
                    shard,
                    name,
                    f"{self.name}/{kind}/{hexkey[:2]}/{name}",
                    "damaged (size, header or checksum mismatch)",
                )
                continue
            arr = np.frombuffer(data, dtype=dt, count=n_values, offset=values_at).reshape(shape)
            values[i] = arr if select is None else arr[select]
            counts[i] = np.frombuffer(data, dtype="<i8", count=n_counts, offset=counts_at)
            found[i] = True
            cache.bytes_read += size

    # ------------------------------------------------------------- write
    def write(self, kind, keys, values, counts):
        """Publish one entry per key; returns the number written.

        On the first failure (read-only folder, full disk, ...) the store
        warns once and stops writing for the rest of its life.
        """
        cache = self.cache
        if not cache.writable:
            return 0
        keys = list(keys)
        written = 0
        for attempt in range(2):
            handles = []
            try:
                root = cache._open_root()
                if root is None:
                    cache._write_failed(OSError(errno.EACCES, "cannot open safely", str(cache.root)))
                    break
                handles.append(root)
                ns_dir = self._ensure(root, self.name, self.name)
                handles.append(ns_dir)
                kind_dir = self._ensure(ns_dir, kind, f"{self.name}/{kind}")
                handles.append(kind_dir)
                shards = {}
                for i in range(written, len(keys)):
                    key = keys[i]
                    hexkey = key.hex()
                    shard = shards.get(hexkey[:2])
                    if shard is None:
                        shard = shards[hexkey[:2]] = self._ensure(
                            kind_dir, hexkey[:2], f"{self.name}/{kind}/{hexkey[:2]}"
                        )
                        handles.append(shard)
                    data = encode_entry(key, values[i], counts[i], cache.dtype)
                    _publish_at(shard, hexkey[2:], data)
                    written += 1
                    cache.bytes_written += len(data)
                break
            except FileNotFoundError as exc:
                # A concurrent `clear` removed a folder we hold: start again, once.
                if attempt:
                    cache._write_failed(exc)
            except OSError as exc:
                cache._write_failed(exc)
                break
            finally:
                for handle in reversed(handles):
                    _close(handle)
        cache.written += written
        return written

    # ----------------------------------------------------------- locking
    @contextlib.contextmanager
    def lock(self, timeout=None):
        """Hold this namespace's lock (across processes) for a short critical section.

        The lock is taken with ``flock`` on ``.lock``; the wait is bounded by
        ``timeout`` seconds (default: ``SKBERT_CACHE_WAIT``, 30), after which
        a :class:`FeatureCacheWarning` is given and the block runs without
        the lock. Where locking is impossible (no ``fcntl``, an unwritable
        folder) it does nothing. Yields whether the lock is held.

        skbert holds it only while reading and making claims (milliseconds);
        computing happens outside it, under claims (:meth:`claims`).
        """
        timeout = self.cache.wait if timeout is None else timeout
        fd = None
        if fcntl is not None and self.cache.writable:
            handles = []
            try:
                root = self.cache._open_root()
                if root is not None:
                    handles.append(root)
                    ns_dir = self._ensure(root, self.name, self.name)
                    handles.append(ns_dir)
                    fd = _open_at(ns_dir, _LOCK_FILE, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC)
            except OSError as exc:
                logger.debug("Cannot open the lock of %s: %s", self.path, exc)
                fd = None
            finally:
                for handle in reversed(handles):
                    _close(handle)
        if fd is None:
            yield False
            return
        try:
            yield _flock_wait(fd, timeout, os.path.join(self.path, _LOCK_FILE))
        finally:
            os.close(fd)  # also releases the lock

    def claims(self):
        """A :class:`Claims` handle: which process computes which keys of this namespace."""
        return Claims(self)

    # ------------------------------------------------------------ metadata
    def _write_meta(self, meta):
        cache = self.cache
        handles = []
        try:
            root = cache._open_root()
            if root is None:
                return
            handles.append(root)
            ns_dir = self._ensure(root, self.name, self.name)
            handles.append(ns_dir)
            if _read_json_at(ns_dir, "namespace.json") == meta:
                return
            if _lstat_or_none(ns_dir, "namespace.json") is not None:
                _unlink_at(ns_dir, "namespace.json")  # a link is removed, never followed
            _publish_at(ns_dir, "namespace.json", json.dumps(meta, sort_keys=True, indent=1).encode())
        except OSError as exc:
            cache._write_failed(exc)
        finally:
            for handle in reversed(handles):
                _close(handle)


def _lstat_or_none(parent, name):
    try:
        return _lstat_at(parent, name)
    except OSError:
        return None


def _flock_wait(fd, timeout, label):
    """Take an exclusive ``flock`` on ``fd``, waiting at most ``timeout`` seconds.

    Returns whether the lock is held. Giving up warns (once per process and
    lock); later waits on a lock given up on are short until it is taken again.
    """
    with _STATE_LOCK:
        if label in _STUCK_LOCKS:
            timeout = min(timeout, 1.0)
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
            continue
        except OSError:
            return False
        with _STATE_LOCK:
            _STUCK_LOCKS.discard(label)
        return True
    with _STATE_LOCK:
        _STUCK_LOCKS.add(label)
    _warn_once(
        ("lock", label),
        f"skbert feature cache: waited {timeout:.0f} s for the lock {label}, held by another "
        "process that seems stuck; going on without it (some texts may be computed twice). "
        f"Set {WAIT_ENV} to wait longer.",
        stacklevel=6,
    )
    return False


class Claims:
    """Claims on keys of one namespace: who computes what, across processes.

    A process about to compute some keys calls :meth:`take`: under the
    namespace's lock (held for milliseconds) it reads the live claims of
    other processes and writes a claim file with the keys nobody else
    claimed, locked with ``flock`` (the kernel drops the lock of a process
    that dies, so a dead claimer's claim is ignored at once). It computes
    those, publishes their entries, touches its claim file after each batch
    (progress) and :meth:`release`\\ s it. For the keys others claimed, it
    :meth:`wait`\\ s until their claims are released, or until a claim shows
    no progress for ``SKBERT_CACHE_WAIT`` seconds.

    Without ``fcntl`` or a writable store every key is "mine": no
    coordination, only duplicated work.
    """

    def __init__(self, ns):
        self.ns = ns
        self.wait_seconds = ns.cache.wait
        self._dir = None  # handle of .claims/
        self._mine = None  # (name, fd) of this process's current claim
        self._touched = 0.0

    # ------------------------------------------------------------ folder
    def _claims_dir(self):
        if self._dir is None:
            cache = self.ns.cache
            root = cache._open_root()
            if root is None:
                raise OSError(errno.ENOENT, "the store cannot be used", str(cache.root))
            try:
                ns_dir = self.ns._ensure(root, self.ns.name, self.ns.name)
                try:
                    self._dir = _ensure_dir(ns_dir, _CLAIMS_DIR, on_bad=_unlink_bad)
                finally:
                    _close(ns_dir)
            finally:
                _close(root)
        return self._dir

    def _live(self, folder):
        """``{claim name: set of keys}`` of other live claims; removes dead ones."""
        live = {}
        now = time.time()
        with os.scandir(folder) as it:
            names = [(e.name, e) for e in it]
        for name, entry in names:
            if self._mine is not None and name == self._mine[0]:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                _unlink_bad(folder, name)
                continue
            if name.startswith(_TMP_PREFIX):
                if _stale_tmp(name, st, now):
                    with contextlib.suppress(OSError):
                        _unlink_at(folder, name)
                continue
            try:
                fd = _open_at(folder, name, _READ_FLAGS)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass  # alive
                else:
                    # Nobody holds it: its process died (or is releasing it).
                    with contextlib.suppress(OSError):
                        _unlink_at(folder, name)
                    continue
                st = os.fstat(fd)
                with _STATE_LOCK:
                    stuck = _STUCK_CLAIMS.get(self._label(name)) == st.st_mtime_ns
                if stuck:
                    continue
                data = os.read(fd, min(st.st_size, 64 << 20))
            except OSError:
                continue
            finally:
                os.close(fd)
            live[name] = {data[i : i + 32] for i in range(0, len(data) - len(data) % 32, 32)}
        return live

    def _label(self, name):
        return os.path.join(self.ns.path, _CLAIMS_DIR, name)

    # ------------------------------------------------------------- claims
    def take(self, keys):
        """Claim the ``keys`` that no other live process claimed.

        Releases this handle's previous claim first.

        Returns
        -------
        mine : ndarray of bool
            The keys now claimed by this process (to compute).
        others : dict
            ``{claim name: ndarray of int}``: indices into ``keys`` that
            another process claimed (to wait for, see :meth:`wait`).
        """
        self.release()
        keys = list(keys)
        mine = np.ones(len(keys), dtype=bool)
        others = {}
        if fcntl is None or not self.ns.cache.writable or not keys:
            return mine, others
        try:
            folder = self._claims_dir()
            with self.ns.lock(timeout=self.wait_seconds):
                owner = {}
                for name, claimed in self._live(folder).items():
                    for key in claimed:
                        owner.setdefault(key, name)
                for i, key in enumerate(keys):
                    name = owner.get(key)
                    if name is not None:
                        mine[i] = False
                        others.setdefault(name, []).append(i)
                if mine.any():
                    self._publish(folder, b"".join(k for k, m in zip(keys, mine) if m))
        except OSError as exc:
            logger.debug("Cannot claim keys in %s: %s", self.ns.path, exc)
            self.release()
            return np.ones(len(keys), dtype=bool), {}
        return mine, {name: np.asarray(idx, dtype=np.intp) for name, idx in others.items()}

    def _publish(self, folder, data):
        tmp = _tmp_name()
        fd = _open_at(folder, tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_all(fd, data)
            name = f"{_HOST}.{os.getpid()}.{os.urandom(6).hex()}"
            _replace_at(folder, tmp, folder, name)
        except BaseException:
            with contextlib.suppress(OSError):
                _unlink_at(folder, tmp)
            os.close(fd)
            raise
        self._mine = (name, fd)
        self._touched = time.monotonic()

    def touch(self):
        """Record progress on this process's claim (others wait while it progresses)."""
        if self._mine is None:
            return
        now = time.monotonic()
        if now - self._touched < min(1.0, self.wait_seconds / 8):
            return
        self._touched = now
        with contextlib.suppress(OSError):
            os.utime(self._mine[1])

    def release(self):
        """Remove this process's claim (its entries are published)."""
        if self._mine is None:
            return
        name, fd = self._mine
        self._mine = None
        with contextlib.suppress(OSError):
            _unlink_at(self._dir, name)
        os.close(fd)

    def _probe(self, name):
        """The claim's modification time while alive, None once released or dead."""
        try:
            fd = _open_at(self._dir, name, _READ_FLAGS)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return os.fstat(fd).st_mtime_ns
            except OSError:
                return None
        except OSError:
            return None
        finally:
            os.close(fd)
        return None

    def wait(self, names):
        """Wait until one of the claims ``names`` is released or makes no progress.

        A claim makes progress when its holder touches it (after each batch
        it computes); one that shows none for ``SKBERT_CACHE_WAIT`` seconds
        is given up on: this process will not wait for it again.

        Returns
        -------
        released, stuck : set of str
        """
        names = list(names)
        seen = {}  # name -> (modification time, monotonic time it was first seen)
        delay = 0.005
        while True:
            released, stuck = set(), set()
            now = time.monotonic()
            for name in names:
                mtime = self._probe(name)
                if mtime is None:
                    released.add(name)
                    continue
                if name not in seen or seen[name][0] != mtime:
                    seen[name] = (mtime, now)
                elif now - seen[name][1] >= self.wait_seconds:
                    stuck.add(name)
                    with _STATE_LOCK:
                        _STUCK_CLAIMS[self._label(name)] = mtime
            if released or stuck:
                return released, stuck
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def close(self):
        """Release the claim and close the folder."""
        self.release()
        if self._dir is not None:
            _close(self._dir)
            self._dir = None


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

    Notes
    -----
    A store folder that is a symlink, is owned by another user or is
    writable by other users, or a ``memory`` folder writable by everyone
    (without the sticky bit) or owned by another user (other than root), is
    refused: one :class:`FeatureCacheWarning` per process and folder, and
    the caller computes without caching.
    """

    def __init__(self, path, *, dtype="float32", max_bytes=None, touch=True):
        self.path = Path(os.fspath(path)).expanduser()
        self.root = self.path / STORE_DIR
        self.dtype = dtype
        self.dtype_code = _DTYPE_CODES[dtype]
        self.max_bytes = max_bytes
        self.touch = touch
        self.wait = wait_seconds()
        self.bytes_read = 0
        self.bytes_written = 0
        self.written = 0
        self.damaged = []
        self.usable = True
        self.writable = True
        self.write_error = None
        create_error = None
        created = False
        try:
            _makedirs(self.path)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.root, 0o700)
                created = True
        except OSError as exc:
            create_error = exc
        try:
            handle = _open_dir(str(self.root))
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:
                exc = OSError(exc.errno, "not a real directory (symlink?)", str(self.root))
            self._unusable(f"cannot use {self.root} ({create_error or exc})")
            return
        try:
            if created:
                _fix_mode(handle)
            problem = _unsafe_memory(self.path)
            if problem is None:
                problem = _unsafe_store(_fstat(handle))
                if problem is not None:
                    problem = f"{self.root}: {problem}"
        finally:
            _close(handle)
        if problem is not None:
            self._unusable(
                f"refusing to use {self.root}: {problem}. Anyone who can write there can "
                "change your features; use a folder only you can write to (chmod 700, "
                "owned by you)"
            )
            return
        if create_error is not None:
            # The store exists but we cannot write to it: reading still works.
            self._write_failed(create_error)

    def _unusable(self, why):
        self.usable = self.writable = False
        _warn_once(
            ("unusable", str(self.root)),
            f"skbert feature cache: {why}; features are computed without caching.",
            stacklevel=5,
        )

    def _open_root(self):
        """A handle on the store folder, checked again to be safe; None if not usable."""
        if not self.usable:
            return None
        try:
            handle = _open_dir(str(self.root))
        except FileNotFoundError:
            # Removed under us (`rm -r`; a full `cache_clear` keeps the folder).
            if not self.writable:
                return None
            with contextlib.suppress(OSError):
                os.mkdir(self.root, 0o700)
            try:
                handle = _open_dir(str(self.root))
            except OSError:
                return None
            _fix_mode(handle)
        except OSError as exc:
            logger.debug("Cannot open the feature store %s: %s", self.root, exc)
            return None
        try:
            unsafe = _unsafe_store(_fstat(handle))
        except OSError:
            unsafe = "cannot be checked"
        if unsafe is not None:
            _close(handle)
            logger.debug("Refusing the feature store %s: %s", self.root, unsafe)
            return None
        return handle

    # ---------------------------------------------------------- problems
    def _write_failed(self, exc):
        """Stop writing; the warning is given by :meth:`close` (in the caller's thread)."""
        self.writable = False
        if self.write_error is None:
            self.write_error = exc

    def _damaged_at(self, parent, name, rel, why):
        """Set aside ``name`` in folder handle ``parent`` (``rel``: its path in the store)."""
        self.damaged.append((str(self.root / rel), why))
        root = self._open_root()
        try:
            _quarantine_at(root, parent, name, rel)
        finally:
            _close(root)

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
        fields, digest = namespace_digest(key_fields, self.dtype)
        ns = Namespace(self, digest)
        if self.writable:
            ns._write_meta({"key": fields, **(meta or {})})
        elif self.usable:
            root = self._open_root()
            if root is not None:
                _close(ns._sub(root, ns.name, ns.name))  # a link in its place is set aside
                _close(root)
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
                f"{self.root / _QUARANTINE}; recomputing them.",
                FeatureCacheWarning,
                stacklevel=3,
            )
            self.damaged = []
        if not self.writable:
            return
        if summary is not None:
            record = {"time": time.time(), "pid": os.getpid(), **summary}
            root = self._open_root()
            if root is not None:
                try:
                    # Informational: unlink first (a link is removed, never
                    # followed), because replacing an existing file makes ext4
                    # flush it (milliseconds on every call).
                    with contextlib.suppress(OSError):
                        _unlink_at(root, "last_call.json")
                    with contextlib.suppress(OSError):
                        _publish_at(root, "last_call.json", json.dumps(record, sort_keys=True).encode())
                finally:
                    _close(root)
        if self.max_bytes is not None and self.bytes_written:
            self._maybe_evict()

    def _maybe_evict(self):
        if eviction_due(_SCAN, str(self.root), self.bytes_written, self.max_bytes):
            try:
                evict(self.path, self.max_bytes)
            except OSError as exc:  # the cap is best effort; results are unaffected
                logger.warning("Could not enforce cache_max_bytes on %s: %s", self.root, exc)


def _quarantine_at(root, parent, name, rel):
    """Move ``name`` (a damaged file, or a link: never followed) into ``quarantine/``."""
    qname = rel.replace("/", ".").replace(os.sep, ".") + f".{time.time_ns()}"
    if root is not None:
        try:
            folder = _ensure_dir(root, _QUARANTINE, on_bad=_unlink_bad)
        except OSError:
            folder = None
        if folder is not None:
            try:
                _replace_at(parent, name, folder, qname)
                return
            except OSError:
                pass
            finally:
                _close(folder)
    with contextlib.suppress(OSError):
        _unlink_at(parent, name)


# ------------------------------------------------------------------ walking
def _is_namespace(name):
    return len(name) == _NAMESPACE_HEX and all(c in "0123456789abcdef" for c in name)


def _scandir(handle):
    try:
        with os.scandir(handle) as it:
            return list(it)
    except OSError:
        return []


def _walk(root):
    """Yield ``(folder, name, rel, lstat)`` for everything in the namespaces' entry folders.

    ``folder`` is an open handle on the item's folder, valid until the next
    item; ``rel`` the item's path parts below the store. Items are entry
    files (4 parts: namespace, kind, shard, name), and anything that is not a
    real folder where a kind (2 parts) or shard (3 parts) folder should be.
    Nothing is followed: each folder is opened relative to its parent with
    ``O_NOFOLLOW``.
    """
    for ns in _scandir(root):
        if not _is_namespace(ns.name) or not ns.is_dir(follow_symlinks=False):
            continue
        try:
            ns_dir = _open_dir(ns.name, root)
        except OSError:
            continue
        try:
            yield from _walk_namespace(ns_dir, ns.name)
        finally:
            _close(ns_dir)


def _walk_namespace(ns_dir, ns_name):
    for kind in _scandir(ns_dir):
        if kind.name.startswith(".") or kind.name == "namespace.json":
            continue
        try:
            st = kind.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            yield ns_dir, kind.name, (ns_name, kind.name), st
            continue
        try:
            kind_dir = _open_dir(kind.name, ns_dir)
        except OSError:
            continue
        try:
            for shard in _scandir(kind_dir):
                try:
                    st = shard.stat(follow_symlinks=False)
                except OSError:
                    continue
                rel = (ns_name, kind.name, shard.name)
                if not stat.S_ISDIR(st.st_mode):
                    yield kind_dir, shard.name, rel, st
                    continue
                try:
                    shard_dir = _open_dir(shard.name, kind_dir)
                except OSError:
                    continue
                try:
                    for entry in _scandir(shard_dir):
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        yield shard_dir, entry.name, rel + (entry.name,), st
                finally:
                    _close(shard_dir)
        finally:
            _close(kind_dir)


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


@contextlib.contextmanager
def _store(path):
    """Open the store of ``path`` for :func:`cache_info` and friends; yields ``(root path, handle)``.

    The handle is None when ``path`` holds no store yet.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    NotADirectoryError
        When ``path`` is not a folder.
    OSError
        When the store is not a real folder (a symlink).
    """
    memory = Path(os.fspath(path)).expanduser()
    try:
        st = os.stat(memory)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, "no such folder (give the folder used as memory=DIR)", str(memory)
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(
            errno.ENOTDIR, "not a folder (give the folder used as memory=DIR)", str(memory)
        )
    root = memory / STORE_DIR
    try:
        handle = _open_dir(str(root))
    except FileNotFoundError:
        handle = None
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS:
            raise OSError(
                errno.ENOTDIR, "the feature store is not a real directory (symlink?)", str(root)
            ) from None
        raise
    try:
        yield root, handle
    finally:
        _close(handle)


def _count_dir(root, name):
    """Number of items in folder ``name`` of ``root`` (0 if it is not a real folder)."""
    try:
        handle = _open_dir(name, root)
    except OSError:
        return 0
    try:
        return len(_scandir(handle))
    finally:
        _close(handle)


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
    from . import _store as stores

    if stores.is_url(path):
        return stores.segment_info(path, storage_options)
    with _store(path) as (root, handle):
        return _info(root, handle)


def _info(root, handle):
    namespaces = {}
    total_entries = total_bytes = temporary = quarantined = 0
    last_call = None
    if handle is not None:
        for _, name, rel, st in _walk(handle):
            if len(rel) != 4:
                continue
            if name.startswith(_TMP_PREFIX):
                temporary += 1
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            ns, kind = rel[0], rel[1]
            info = namespaces.setdefault(ns, {"entries": 0, "bytes": 0, "kinds": {}})
            k = info["kinds"].setdefault(kind, {"entries": 0, "bytes": 0})
            for d in (info, k):
                d["entries"] += 1
                d["bytes"] += st.st_size
            total_entries += 1
            total_bytes += st.st_size
        quarantined = _count_dir(handle, _QUARANTINE)
        last_call = _read_json_at(handle, "last_call.json")
    models = []
    for ns, info in sorted(namespaces.items()):
        meta = {}
        try:
            ns_dir = _open_dir(ns, handle)
        except OSError:
            pass
        else:
            meta = _read_json_at(ns_dir, "namespace.json") or {}
            _close(ns_dir)
        models.append({"namespace": ns, **meta, **info})
    return {
        "path": str(root),
        "format": FORMAT_VERSION,
        "entries": total_entries,
        "bytes": total_bytes,
        "models": models,
        "quarantined": quarantined,
        "temporary": temporary,
        "last_call": last_call,
    }


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
    from . import _store as stores

    if stores.is_url(path):
        return stores.segment_verify(path, storage_options)
    checked = ok = removed = 0
    damaged = []
    now = time.time()
    with _store(path) as (root, handle):
        if handle is None:
            return {"path": str(root), "checked": 0, "ok": 0, "damaged": [], "temporary_removed": 0}
        bad = []
        for folder, name, rel, st in _walk(handle):
            if len(rel) == 4 and name.startswith(_TMP_PREFIX):
                if stat.S_ISREG(st.st_mode) and _stale_tmp(name, st, now):
                    with contextlib.suppress(OSError):
                        _unlink_at(folder, name)
                        removed += 1
                continue
            checked += len(rel) == 4
            good = False
            if len(rel) == 4 and stat.S_ISREG(st.st_mode):
                data = _read_small_at(folder, name, limit=st.st_size + 1)
                if data is not None and check_entry(data):
                    key = _parse_header(data)[3]
                    good = key.hex() == rel[2] + name
            if good:
                ok += 1
                continue
            if len(rel) == 4:
                damaged.append(str(root.joinpath(*rel)))
                _quarantine_at(handle, folder, name, "/".join(rel))
            else:
                bad.append(rel)  # a link where a folder should be: after the walk
        for rel in bad:
            damaged.append(str(root.joinpath(*rel)))
            parent = _open_parent(handle, rel)
            if parent is not None:
                try:
                    _quarantine_at(handle, parent, rel[-1], "/".join(rel))
                finally:
                    _close(parent)
    return {
        "path": str(root),
        "checked": checked,
        "ok": ok,
        "damaged": damaged,
        "temporary_removed": removed,
    }


def _open_parent(root, rel):
    """A handle on the folder holding ``rel`` (path parts below the store), or None."""
    handles = []
    try:
        parent = root
        for part in rel[:-1]:
            parent = _open_dir(part, parent)
            handles.append(parent)
    except OSError:
        for handle in handles:
            _close(handle)
        return None
    for handle in handles[:-1]:
        _close(handle)
    return handles[-1] if handles else None


def evict(path, max_bytes):
    """Delete least recently used entries until the store holds at most ``max_bytes``.

    Quarantined files go first, then entries by modification time (reads
    refresh it). When the store exceeds the cap it is brought down to 90% of
    it, so that the next few writes do not evict again. Only files inside
    the store are removed: links are removed themselves, never followed.

    Returns
    -------
    report : dict
        ``bytes_before``, ``bytes_after``, ``removed`` (files).
    """
    with _store(path) as (_, root):
        if root is None:
            return {"bytes_before": 0, "bytes_after": 0, "removed": 0}
        return _evict(root, max_bytes)


def _evict(root, max_bytes):
    now = time.time()
    files = []  # (age key, size, rel)
    try:
        quarantine = _open_dir(_QUARANTINE, root)
    except OSError:
        quarantine = None
    if quarantine is not None:
        try:
            for q in _scandir(quarantine):
                with contextlib.suppress(OSError):
                    st = q.stat(follow_symlinks=False)
                    files.append((-1.0, st.st_size, (_QUARANTINE, q.name)))
        finally:
            _close(quarantine)
    for folder, name, rel, st in _walk(root):
        if len(rel) != 4:
            continue
        if name.startswith(_TMP_PREFIX):
            if _stale_tmp(name, st, now):
                with contextlib.suppress(OSError):
                    _unlink_at(folder, name)
            continue
        files.append((st.st_mtime, st.st_size, rel))
    total = before = sum(size for _, size, _ in files)
    removed = 0
    if total > max_bytes:
        target = max_bytes * 0.9 if max_bytes else 0
        files.sort()
        doomed = []
        for _, size, rel in files:
            if total <= target:
                break
            doomed.append((rel, size))
            total -= size
        # Remove folder by folder, each opened once (relative, never followed).
        by_folder = {}
        for rel, size in doomed:
            by_folder.setdefault(rel[:-1], []).append((rel[-1], size))
        for parent_rel, names in by_folder.items():
            parent = _open_parent(root, parent_rel + ("x",))
            if parent is None:
                total += sum(size for _, size in names)
                continue
            try:
                for name, size in names:
                    try:
                        _unlink_at(parent, name)
                    except FileNotFoundError:
                        pass
                    except OSError:
                        total += size
                        continue
                    removed += 1
            finally:
                _close(parent)
    return {"bytes_before": before, "bytes_after": total, "removed": removed}


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
    from ._memory_layer import clear as clear_memory

    clear_memory()  # this process's in-memory layer in front of the store
    from . import _store as stores

    if stores.is_url(path):
        return stores.segment_clear(path, max_bytes, storage_options)
    with _store(path) as (root, handle):
        if handle is None:
            return {"path": str(root), "removed": 0, "bytes_before": 0, "bytes_after": 0}
        if max_bytes is not None:
            return {"path": str(root), **_evict(handle, int(max_bytes))}
        info = _info(root, handle)
        for child in _scandir(handle):
            _rmtree_at(handle, child.name)
        after = _info(root, handle)
    return {
        "path": str(root),
        "removed": info["entries"] - after["entries"],
        "bytes_before": info["bytes"],
        "bytes_after": after["bytes"],
    }
