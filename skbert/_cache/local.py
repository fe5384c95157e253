"""The local feature store: one file per entry in a folder, shared by processes.

The store lives in ``<memory>/skbert-features-v1/`` and holds the entries of
:mod:`skbert._cache.format`, one file per entry::

    <memory>/skbert-features-v1/            0o700, owned by the user
        last_call.json                      hit/miss counts of the last call
        quarantine/                         damaged entries, moved aside
        <namespace: 32 hex>/                0o700
            namespace.json                  what the namespace is (informational)
            .lock                           held for milliseconds, to take claims
            .claims/<host>.<pid>.<random>   keys a live process is computing
            <kind>/<2 hex>/<62 hex>         one entry per text, 0o600

Each entry file is written to a temporary name in its final folder and
published by an atomic ``os.replace``, so readers see a complete entry or
none: there is no index to lock, several processes share a store freely and
a writer killed at any moment leaves at most a stray temporary file. A
damaged entry (truncated, extended, renamed or bit-flipped: see
:mod:`~skbert._cache.format`) is moved to ``quarantine/`` and the caller
recomputes it.

No operation follows a symbolic link: every folder and file is used relative
to its parent folder's descriptor (:mod:`skbert._cache.posix`), so a link
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

The local store's side of the public tools is here too: :func:`store_info`,
:func:`store_verify`, :func:`store_clear` (and :func:`evict`),
:func:`store_compact`, and :func:`iter_store_entries` and :class:`LocalSink`
for :func:`skbert.cache_copy`.
"""

import contextlib
import errno
import json
import logging
import os
import stat
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..exceptions import FeatureCacheWarning
from .format import (
    CRC,
    DTYPE_CODES,
    DTYPES,
    FORMAT_VERSION,
    HEADER,
    NAMESPACE_HEX,
    STORE_DIR,
    check_entry,
    decode_entry,
    encode_entry,
    entry_size,
    eviction_due,
    namespace_digest,
    pack_header,
    parse_header,
    read_outputs,
    text_keys,
    warn_once,
)
from .posix import (
    HOST,
    LINK_ERRNOS,
    O_CLOEXEC,
    O_NOFOLLOW,
    READ_FLAGS,
    TMP_PREFIX,
    close_dir,
    count_dir,
    ensure_dir,
    fix_mode,
    list_dir,
    lstat_or_none,
    make_dirs,
    open_at,
    open_dir,
    open_parent,
    publish_at,
    read_json_at,
    read_small_at,
    refusal,
    replace_at,
    rmtree_at,
    stale_tmp,
    stat_dir,
    tmp_name,
    unlink_at,
    unlink_bad,
    unsafe_memory,
    unsafe_store,
    write_all,
)

logger = logging.getLogger(__name__)

__all__ = [
    "WAIT_ENV",
    "DEFAULT_WAIT",
    "wait_seconds",
    "FeatureCache",
    "Namespace",
    "Claims",
    "store_info",
    "store_verify",
    "store_clear",
    "store_compact",
    "evict",
    "iter_store_entries",
    "LocalSink",
]

#: Environment variable: how long (seconds) to wait for another process.
WAIT_ENV = "SKBERT_CACHE_WAIT"
#: The wait when :data:`WAIT_ENV` is unset.
DEFAULT_WAIT = 30.0

_CLAIMS_DIR = ".claims"
_LOCK_FILE = ".lock"
_QUARANTINE = "quarantine"
#: Reads refresh an entry's modification time (its LRU age) at most this often.
_TOUCH_SECONDS = 600
#: A write starts again this many times when a concurrent clear keeps removing its folders.
_CLEAR_RETRIES = 5

try:  # pragma: no cover - Windows has no flock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

# Process-wide state: the amortised size scan, and locks and claims this
# process stopped waiting for.
_STATE_LOCK = threading.Lock()
_SCAN = {}  # store root -> (monotonic time of last scan, bytes written since)
_STUCK_LOCKS = set()  # lock paths a wait timed out on (waits on them are short)
_STUCK_CLAIMS = {}  # claim path -> its modification time when given up on


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


class Namespace:
    """The entries of one namespace in a store; made by :meth:`FeatureCache.namespace`."""

    def __init__(self, cache, digest):
        self.cache = cache
        self.digest = digest
        self.name = digest.hex()[:NAMESPACE_HEX]
        self.path = os.path.join(cache.root, self.name)

    # -------------------------------------------------------------- keys
    def keys(self, kind, texts):
        """The 32-byte key of each text for entries of ``kind``."""
        return text_keys(self.digest, kind, texts)

    # ----------------------------------------------------------- folders
    def _sub(self, parent, name, rel):
        """Open an existing folder of the namespace; None when missing or refused.

        A symlink or a file in its place is set aside (quarantined) and reported.
        """
        try:
            return open_dir(name, parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in LINK_ERRNOS:
                self.cache._damaged_at(parent, name, rel, "not a real directory (refused)")
            else:
                logger.debug("Cannot open cache folder %s: %s", rel, exc)
            return None

    def _ensure(self, parent, name, rel):
        """Open a folder of the namespace, creating it; a link in its place is set aside."""
        return ensure_dir(
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
        size = entry_size(shape, code, n_counts)
        dt = DTYPES[code]
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
                close_dir(handle)
        return found, values, counts

    def _read_into(
        self, kind, kind_dir, shards, handles, keys, shape, size, dt, n_values, n_counts,
        select, found, values, counts,
    ):
        cache = self.cache
        code = cache.dtype_code
        counts_at = HEADER.size
        values_at = HEADER.size + 8 * n_counts
        crc_at = size - CRC.size
        head_tail = pack_header(b"\0" * 32, shape, code, n_counts)[:-32]
        touch = cache.touch and os.utime in os.supports_fd
        now = time.time()
        crc32, unpack_crc = zlib.crc32, CRC.unpack_from
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
                fd = open_at(shard, name, READ_FLAGS)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno in LINK_ERRNOS:
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
                or data[: HEADER.size - 32] != head_tail
                or data[HEADER.size - 32 : HEADER.size] != key
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
        failures = progress = 0
        while True:
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
                    publish_at(shard, hexkey[2:], data)
                    written += 1
                    cache.bytes_written += len(data)
                break
            except FileNotFoundError:
                # A concurrent `clear` removed a folder we hold: not a storage
                # fault. Start again where we were; give up only when clears
                # keep winning (no entry written between them).
                failures = failures + 1 if written == progress else 1
                progress = written
                if failures >= _CLEAR_RETRIES:
                    cache._cleared_meanwhile()
                    break
            except OSError as exc:
                cache._write_failed(exc)
                break
            finally:
                for handle in reversed(handles):
                    close_dir(handle)
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
                    fd = open_at(ns_dir, _LOCK_FILE, os.O_RDWR | os.O_CREAT | O_NOFOLLOW | O_CLOEXEC)
            except OSError as exc:
                logger.debug("Cannot open the lock of %s: %s", self.path, exc)
                fd = None
            finally:
                for handle in reversed(handles):
                    close_dir(handle)
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
            if read_json_at(ns_dir, "namespace.json") == meta:
                return
            if lstat_or_none(ns_dir, "namespace.json") is not None:
                unlink_at(ns_dir, "namespace.json")  # a link is removed, never followed
            publish_at(ns_dir, "namespace.json", json.dumps(meta, sort_keys=True, indent=1).encode())
        except FileNotFoundError:
            pass  # a concurrent clear: informational only, written by the next call
        except OSError as exc:
            cache._write_failed(exc)
        finally:
            for handle in reversed(handles):
                close_dir(handle)


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
    warn_once(
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
                    self._dir = ensure_dir(ns_dir, _CLAIMS_DIR, on_bad=unlink_bad)
                finally:
                    close_dir(ns_dir)
            finally:
                close_dir(root)
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
                unlink_bad(folder, name)
                continue
            if name.startswith(TMP_PREFIX):
                if stale_tmp(name, st, now):
                    with contextlib.suppress(OSError):
                        unlink_at(folder, name)
                continue
            try:
                fd = open_at(folder, name, READ_FLAGS)
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
                        unlink_at(folder, name)
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
        tmp = tmp_name()
        fd = open_at(folder, tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            write_all(fd, data)
            name = f"{HOST}.{os.getpid()}.{os.urandom(6).hex()}"
            replace_at(folder, tmp, folder, name)
        except BaseException:
            with contextlib.suppress(OSError):
                unlink_at(folder, tmp)
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
            unlink_at(self._dir, name)
        os.close(fd)

    def _probe(self, name):
        """The claim's modification time while alive, None once released or dead."""
        try:
            fd = open_at(self._dir, name, READ_FLAGS)
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
            close_dir(self._dir)
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
        self.dtype_code = DTYPE_CODES[dtype]
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
        self.cleared = False
        self.unusable_reason = None
        create_error = None
        created = False
        try:
            make_dirs(self.path)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.root, 0o700)
                created = True
        except OSError as exc:
            create_error = exc
        try:
            handle = open_dir(str(self.root))
        except OSError as exc:
            if exc.errno in LINK_ERRNOS:
                exc = OSError(exc.errno, "not a real directory (symlink?)", str(self.root))
            self._unusable(f"cannot use {self.root} ({create_error or exc})")
            return
        try:
            if created:
                fix_mode(handle)
            problem = unsafe_memory(self.path)
            if problem is None:
                problem = unsafe_store(stat_dir(handle))
                if problem is not None:
                    problem = f"{self.root}: {problem}"
        finally:
            close_dir(handle)
        if problem is not None:
            self._unusable(refusal(self.root, problem))
            return
        if create_error is not None:
            # The store exists but we cannot write to it: reading still works.
            self._write_failed(create_error)

    def _unusable(self, why):
        self.usable = self.writable = False
        self.unusable_reason = why
        warn_once(
            ("unusable", str(self.root)),
            f"skbert feature cache: {why}; features are computed without caching.",
            stacklevel=5,
        )

    def _open_root(self):
        """A handle on the store folder, checked again to be safe; None if not usable."""
        if not self.usable:
            return None
        try:
            handle = open_dir(str(self.root))
        except FileNotFoundError:
            # Removed under us (`rm -r`; a full `cache_clear` keeps the folder).
            if not self.writable:
                return None
            with contextlib.suppress(OSError):
                os.mkdir(self.root, 0o700)
            try:
                handle = open_dir(str(self.root))
            except OSError:
                return None
            fix_mode(handle)
        except OSError as exc:
            logger.debug("Cannot open the feature store %s: %s", self.root, exc)
            return None
        try:
            unsafe = unsafe_store(stat_dir(handle))
        except OSError:
            unsafe = "cannot be checked"
        if unsafe is not None:
            close_dir(handle)
            logger.debug("Refusing the feature store %s: %s", self.root, unsafe)
            return None
        return handle

    # ---------------------------------------------------------- problems
    def _write_failed(self, exc):
        """Stop writing; the warning is given by :meth:`close` (in the caller's thread)."""
        self.writable = False
        if self.write_error is None:
            self.write_error = exc

    def _cleared_meanwhile(self):
        """Another process keeps clearing the store while we write: stop writing, say so once."""
        self.writable = False
        self.cleared = True

    def _damaged_at(self, parent, name, rel, why):
        """Set aside ``name`` in folder handle ``parent`` (``rel``: its path in the store)."""
        self.damaged.append((str(self.root / rel), why))
        root = self._open_root()
        try:
            _quarantine_at(root, parent, name, rel)
        finally:
            close_dir(root)

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
                close_dir(ns._sub(root, ns.name, ns.name))  # a link in its place is set aside
                close_dir(root)
        return ns

    def close(self, summary=None):
        """Warn about problems, record ``summary`` and enforce the size cap.

        One :class:`FeatureCacheWarning` for damaged entries found by this
        handle, and one per process and folder when writing failed.
        """
        if self.write_error is not None:
            warn_once(
                ("unwritable", str(self.root)),
                f"skbert feature cache: cannot write to {self.root} ({self.write_error}); "
                "features are computed without caching them. Free space or fix "
                "the folder's permissions, or set memory=None.",
            )
        if self.cleared:
            warn_once(
                ("cleared", str(self.root)),
                f"skbert feature cache: {self.root} was emptied by another process "
                "(cache_clear) while this one wrote to it; the entries not stored are "
                "computed again when next needed. Nothing is wrong with the storage.",
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
                        unlink_at(root, "last_call.json")
                    with contextlib.suppress(OSError):
                        publish_at(root, "last_call.json", json.dumps(record, sort_keys=True).encode())
                finally:
                    close_dir(root)
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
            folder = ensure_dir(root, _QUARANTINE, on_bad=unlink_bad)
        except OSError:
            folder = None
        if folder is not None:
            try:
                replace_at(parent, name, folder, qname)
                return
            except OSError:
                pass
            finally:
                close_dir(folder)
    with contextlib.suppress(OSError):
        unlink_at(parent, name)



# ------------------------------------------------------------------ walking
def _is_namespace(name):
    return len(name) == NAMESPACE_HEX and all(c in "0123456789abcdef" for c in name)


def _walk(root):
    """Yield ``(folder, name, rel, lstat)`` for everything in the namespaces' entry folders.

    ``folder`` is an open handle on the item's folder, valid until the next
    item; ``rel`` the item's path parts below the store. Items are entry
    files (4 parts: namespace, kind, shard, name), and anything that is not a
    real folder where a kind (2 parts) or shard (3 parts) folder should be.
    Nothing is followed: each folder is opened relative to its parent with
    ``O_NOFOLLOW``.
    """
    for ns in list_dir(root):
        if not _is_namespace(ns.name) or not ns.is_dir(follow_symlinks=False):
            continue
        try:
            ns_dir = open_dir(ns.name, root)
        except OSError:
            continue
        try:
            yield from _walk_namespace(ns_dir, ns.name)
        finally:
            close_dir(ns_dir)


def _walk_namespace(ns_dir, ns_name):
    for kind in list_dir(ns_dir):
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
            kind_dir = open_dir(kind.name, ns_dir)
        except OSError:
            continue
        try:
            for shard in list_dir(kind_dir):
                try:
                    st = shard.stat(follow_symlinks=False)
                except OSError:
                    continue
                rel = (ns_name, kind.name, shard.name)
                if not stat.S_ISDIR(st.st_mode):
                    yield kind_dir, shard.name, rel, st
                    continue
                try:
                    shard_dir = open_dir(shard.name, kind_dir)
                except OSError:
                    continue
                try:
                    for entry in list_dir(shard_dir):
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        yield shard_dir, entry.name, rel + (entry.name,), st
                finally:
                    close_dir(shard_dir)
        finally:
            close_dir(kind_dir)


@contextlib.contextmanager
def _store(path):
    """Open the store of ``path`` for :func:`store_info` and friends; yields ``(root path, handle)``.

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
        handle = open_dir(str(root))
    except FileNotFoundError:
        handle = None
    except OSError as exc:
        if exc.errno in LINK_ERRNOS:
            raise OSError(
                errno.ENOTDIR, "the feature store is not a real directory (symlink?)", str(root)
            ) from None
        raise
    try:
        yield root, handle
    finally:
        close_dir(handle)


# ------------------------------------------------------------- the tools
def store_info(path):
    """:func:`skbert.cache_info` of a local store.

    Parameters
    ----------
    path : str or path-like
        The ``memory`` directory.

    Returns
    -------
    info : dict
        As :func:`skbert.cache_info`.

    Raises
    ------
    FileNotFoundError, NotADirectoryError, OSError
        As :func:`skbert.cache_info`.
    """
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
            if name.startswith(TMP_PREFIX):
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
        quarantined = count_dir(handle, _QUARANTINE)
        last_call = read_json_at(handle, "last_call.json")
    models = []
    for ns, info in sorted(namespaces.items()):
        meta = {}
        try:
            ns_dir = open_dir(ns, handle)
        except OSError:
            pass
        else:
            meta = read_json_at(ns_dir, "namespace.json") or {}
            close_dir(ns_dir)
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


def store_verify(path):
    """:func:`skbert.cache_verify` of a local store.

    Each entry's header, size, key (against its file name) and CRC-32 are
    checked; damaged entries and symlinks (where an entry or a folder should
    be; never followed) are moved to ``quarantine/``, and temporary files
    left by dead writers are removed.

    Parameters
    ----------
    path : str or path-like
        The ``memory`` directory.

    Returns
    -------
    report : dict
        As :func:`skbert.cache_verify`.

    Raises
    ------
    FileNotFoundError, NotADirectoryError, OSError
        As :func:`skbert.cache_info`.
    """
    checked = ok = removed = 0
    damaged = []
    now = time.time()
    with _store(path) as (root, handle):
        if handle is None:
            return {"path": str(root), "checked": 0, "ok": 0, "damaged": [], "temporary_removed": 0}
        bad = []
        for folder, name, rel, st in _walk(handle):
            if len(rel) == 4 and name.startswith(TMP_PREFIX):
                if stat.S_ISREG(st.st_mode) and stale_tmp(name, st, now):
                    with contextlib.suppress(OSError):
                        unlink_at(folder, name)
                        removed += 1
                continue
            checked += len(rel) == 4
            good = False
            if len(rel) == 4 and stat.S_ISREG(st.st_mode):
                data = read_small_at(folder, name, limit=st.st_size + 1)
                if data is not None and check_entry(data):
                    key = parse_header(data)[3]
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
            parent = open_parent(handle, rel)
            if parent is not None:
                try:
                    _quarantine_at(handle, parent, rel[-1], "/".join(rel))
                finally:
                    close_dir(parent)
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
        quarantine = open_dir(_QUARANTINE, root)
    except OSError:
        quarantine = None
    if quarantine is not None:
        try:
            for q in list_dir(quarantine):
                with contextlib.suppress(OSError):
                    st = q.stat(follow_symlinks=False)
                    files.append((-1.0, st.st_size, (_QUARANTINE, q.name)))
        finally:
            close_dir(quarantine)
    for folder, name, rel, st in _walk(root):
        if len(rel) != 4:
            continue
        if name.startswith(TMP_PREFIX):
            if stale_tmp(name, st, now):
                with contextlib.suppress(OSError):
                    unlink_at(folder, name)
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
            parent = open_parent(root, parent_rel + ("x",))
            if parent is None:
                total += sum(size for _, size in names)
                continue
            try:
                for name, size in names:
                    try:
                        unlink_at(parent, name)
                    except FileNotFoundError:
                        pass
                    except OSError:
                        total += size
                        continue
                    removed += 1
            finally:
                close_dir(parent)
    return {"bytes_before": before, "bytes_after": total, "removed": removed}


def store_clear(path, max_bytes=None):
    """:func:`skbert.cache_clear` of a local store (least recently used first with ``max_bytes``).

    Only the store folder's content is removed; links inside it are removed,
    never followed.

    Parameters
    ----------
    path : str or path-like
        The ``memory`` directory.
    max_bytes : int, default=None
        None removes everything; otherwise see :func:`evict`.

    Returns
    -------
    report : dict
        As :func:`skbert.cache_clear`.

    Raises
    ------
    FileNotFoundError, NotADirectoryError, OSError
        As :func:`skbert.cache_info`.
    """
    with _store(path) as (root, handle):
        if handle is None:
            return {"path": str(root), "removed": 0, "bytes_before": 0, "bytes_after": 0}
        if max_bytes is not None:
            return {"path": str(root), **_evict(handle, int(max_bytes))}
        info = _info(root, handle)
        for child in list_dir(handle):
            rmtree_at(handle, child.name)
        after = _info(root, handle)
    return {
        "path": str(root),
        "removed": info["entries"] - after["entries"],
        "bytes_before": info["bytes"],
        "bytes_after": after["bytes"],
    }


def store_compact(path):
    """:func:`skbert.cache_compact` of a local store: nothing to compact (one file per entry).

    Parameters
    ----------
    path : str or path-like
        The ``memory`` directory.

    Returns
    -------
    report : dict
        As :func:`skbert.cache_compact`, with no segment and the store's size.

    Raises
    ------
    FileNotFoundError, NotADirectoryError, OSError
        As :func:`skbert.cache_info`.
    """
    info = store_info(path)
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
def iter_store_entries(path):
    """Yield ``(namespace, meta, kind, key, entry bytes or None)`` of a local store.

    Walks the store with the link-refusing walker; ``None`` marks a damaged
    entry (or a link where an entry should be; its key is None when its
    name is not one).
    """
    metas = {}
    with _store(path) as (root, handle):
        if handle is None:
            return
        for folder, name, rel, st in _walk(handle):
            if len(rel) != 4 or name.startswith(TMP_PREFIX):
                continue
            ns, kind, shard, _ = rel
            if not stat.S_ISREG(st.st_mode):
                yield ns, metas.get(ns), kind, None, None
                continue
            if ns not in metas:
                ns_dir = open_dir(ns, handle)
                try:
                    metas[ns] = read_json_at(ns_dir, "namespace.json")
                finally:
                    close_dir(ns_dir)
            data = read_small_at(folder, name, limit=st.st_size + 1)
            hexkey = shard + name
            try:
                key = bytes.fromhex(hexkey) if len(hexkey) == 64 else None
            except ValueError:
                key = None
            if (
                data is None
                or key is None
                or not check_entry(data)
                or parse_header(data)[3] != key
            ):
                yield ns, metas[ns], kind, key, None
                continue
            yield ns, metas[ns], kind, key, data


class LocalSink:
    """Writes entries into a local store through its own (hardened) writer.

    Parameters
    ----------
    path : str or path-like
        The ``memory`` directory.
    """

    def __init__(self, path):
        self.path = path
        self.caches = {}
        self.namespaces = {}

    def add(self, ns, meta, kind, key, entry):
        """Write one checked entry; False when the store holds it already."""
        values, counts, dtype = decode_entry(entry)
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
        """Close the stores written to; returns the number of segments written (0)."""
        for cache in self.caches.values():
            cache.close()
        return 0
