"""Safe file and folder operations on a local disk: no link is ever followed.

A folder "handle" is a file descriptor where the platform has the ``*at()``
system calls (``openat``, ``renameat``, ``unlinkat``: everywhere but
Windows), else a path checked with ``lstat``. Every folder is opened
relative to its parent's handle with ``O_NOFOLLOW | O_DIRECTORY``, and every
file is created, opened, renamed and removed relative to its folder's
handle, one path component at a time, so a link planted anywhere (or swapped
in during an operation) is refused or removed, never followed.

Folders are created 0o700 (missing parents included, whatever the umask) and
files 0o600. A file is published atomically: written to a temporary name
(``.tmp.<host>.<pid>.<random>``) in its final folder, then renamed into
place, so readers see a complete file or none, and a writer killed at any
moment leaves at most a stray temporary file (:func:`stale_tmp` tells when
one is a dead writer's leftover). The local store uses all of this; the
segment store shares the temporary-name prefix and the file flags, for
segments on a ``file://`` folder.

:func:`unsafe_store` and :func:`unsafe_memory` say why a folder must not be
trusted (owned by another user, writable by others), as ssh refuses keys in
such folders.
"""

import contextlib
import errno
import hashlib
import json
import os
import socket
import stat
from pathlib import Path

__all__ = [
    "O_NOFOLLOW",
    "O_CLOEXEC",
    "READ_FLAGS",
    "CREATE_FLAGS",
    "LINK_ERRNOS",
    "HOST",
    "TMP_PREFIX",
    "STALE_TMP_SECONDS",
    "open_dir",
    "close_dir",
    "stat_dir",
    "list_dir",
    "count_dir",
    "open_parent",
    "lstat_or_none",
    "unlink_at",
    "replace_at",
    "open_at",
    "fix_mode",
    "ensure_dir",
    "unlink_bad",
    "make_dirs",
    "write_all",
    "tmp_name",
    "stale_tmp",
    "publish_at",
    "read_small_at",
    "read_json_at",
    "rmtree_at",
    "unsafe_store",
    "unsafe_memory",
    "refusal",
]

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
#: Flags to read a file, never through a link.
READ_FLAGS = os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC | _O_BINARY
#: Flags to create a new file to write, never through a link.
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC | _O_BINARY
#: Whether folders can be used through descriptors (``openat`` and friends):
#: everywhere but Windows, where paths are used after an ``lstat`` check.
_AT = bool(
    O_NOFOLLOW
    and _O_DIRECTORY
    and {os.open, os.mkdir, os.unlink, os.rename, os.rmdir, os.stat} <= os.supports_dir_fd
    and os.scandir in os.supports_fd
)
#: Errors of opening a symlink (or a file) as a folder with O_NOFOLLOW.
LINK_ERRNOS = {errno.ELOOP, errno.ENOTDIR, errno.EMLINK}
_POSIX_CHECKS = os.name == "posix" and hasattr(os, "geteuid")

#: This machine, in temporary and claim file names (a digest of its host name).
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
#: Temporary files, not yet published, start with this.
TMP_PREFIX = ".tmp."
#: A temporary file older than this is a leftover of a dead writer.
STALE_TMP_SECONDS = 3600


# ------------------------------------------------------------ safe folders
def _loc(parent, name):
    """The ``(path, dir_fd)`` arguments naming ``name`` inside folder handle ``parent``."""
    if parent is None or not isinstance(parent, int):
        return (name if parent is None else os.path.join(parent, name)), None
    return name, parent


def open_dir(name, parent=None):
    """Open folder ``name`` (inside handle ``parent``) without following a link.

    Raises OSError (errno in :data:`LINK_ERRNOS` for a symlink or a file).
    """
    if _AT:
        path, dir_fd = _loc(parent, name)
        return os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    path, _ = _loc(parent, name)  # pragma: no cover - Windows
    if not stat.S_ISDIR(os.lstat(path).st_mode):  # pragma: no cover
        raise OSError(errno.ENOTDIR, "not a real directory (symlink?)", path)
    return path  # pragma: no cover


def close_dir(handle):
    """Close a folder handle from :func:`open_dir` (None and paths are ignored)."""
    if isinstance(handle, int):
        with contextlib.suppress(OSError):
            os.close(handle)


def stat_dir(handle):
    """The ``stat`` of the folder ``handle`` is open on."""
    return os.fstat(handle) if isinstance(handle, int) else os.lstat(handle)


def list_dir(handle):
    """The ``os.DirEntry`` items of folder ``handle`` (none when it cannot be read)."""
    try:
        with os.scandir(handle) as it:
            return list(it)
    except OSError:
        return []


def count_dir(root, name):
    """Number of items in folder ``name`` of ``root`` (0 if it is not a real folder)."""
    try:
        handle = open_dir(name, root)
    except OSError:
        return 0
    try:
        return len(list_dir(handle))
    finally:
        close_dir(handle)


def open_parent(root, rel):
    """A handle on the folder holding ``rel`` (path parts below ``root``), or None."""
    handles = []
    try:
        parent = root
        for part in rel[:-1]:
            parent = open_dir(part, parent)
            handles.append(parent)
    except OSError:
        for handle in handles:
            close_dir(handle)
        return None
    for handle in handles[:-1]:
        close_dir(handle)
    return handles[-1] if handles else None


def _lstat_at(parent, name):
    """The ``lstat`` of ``name`` in folder handle ``parent``."""
    path, dir_fd = _loc(parent, name)
    return os.stat(path, dir_fd=dir_fd, follow_symlinks=False)


def lstat_or_none(parent, name):
    """The ``lstat`` of ``name`` in folder handle ``parent``; None when it fails."""
    try:
        return _lstat_at(parent, name)
    except OSError:
        return None


def unlink_at(parent, name):
    """Remove file (or link) ``name`` of folder handle ``parent``."""
    path, dir_fd = _loc(parent, name)
    os.unlink(path, dir_fd=dir_fd)


def replace_at(src_parent, src, dst_parent, dst):
    """Rename ``src`` of folder handle ``src_parent`` to ``dst`` of ``dst_parent``."""
    src, src_fd = _loc(src_parent, src)
    dst, dst_fd = _loc(dst_parent, dst)
    os.replace(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def open_at(parent, name, flags, mode=0o600):
    """``os.open`` of ``name`` in folder handle ``parent``."""
    path, dir_fd = _loc(parent, name)
    return os.open(path, flags, mode, dir_fd=dir_fd)


def fix_mode(handle):
    """Make a folder this process just created owner-only, whatever the umask."""
    if _POSIX_CHECKS and isinstance(handle, int):
        with contextlib.suppress(OSError):
            if stat.S_IMODE(os.fstat(handle).st_mode) != 0o700:
                os.fchmod(handle, 0o700)


def ensure_dir(parent, name, on_bad=None):
    """Open folder ``name`` in ``parent``, creating it 0o700 when missing.

    A symlink or a file in its place is handed to ``on_bad(parent, name)``
    (which moves or removes it; never followed) and the folder is created.
    """
    for attempt in range(3):
        try:
            return open_dir(name, parent)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in LINK_ERRNOS or on_bad is None or attempt == 2:
                raise
            on_bad(parent, name)
        path, dir_fd = _loc(parent, name)
        try:
            os.mkdir(path, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            continue
        handle = open_dir(name, parent)
        fix_mode(handle)
        return handle
    raise OSError(errno.ENOTDIR, "cannot create a real directory", name)  # pragma: no cover


def unlink_bad(parent, name):
    """Remove a symlink or a file where a folder should be (the link itself only)."""
    with contextlib.suppress(OSError):
        if not stat.S_ISDIR(_lstat_at(parent, name).st_mode):
            unlink_at(parent, name)


def make_dirs(path):
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
            handle = open_dir(str(folder))
        except OSError:
            continue
        fix_mode(handle)
        close_dir(handle)


def write_all(fd, data):
    """Write all of ``data`` to file descriptor ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def tmp_name():
    """A new temporary file name: ``.tmp.<host>.<pid>.<random>``."""
    return f"{TMP_PREFIX}{HOST}.{os.getpid()}.{os.urandom(4).hex()}"


def stale_tmp(name, st, now):
    """Whether a temporary file was left behind by a dead or long-gone writer."""
    if now - st.st_mtime > STALE_TMP_SECONDS:
        return True
    parts = name.split(".")
    # .tmp.<host>.<pid>.<random>
    if len(parts) == 5 and parts[2] == HOST and parts[3].isdigit():
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


def publish_at(parent, name, data):
    """Atomically publish ``data`` as ``name`` in folder ``parent`` (temporary file + rename)."""
    tmp = tmp_name()
    fd = open_at(parent, tmp, CREATE_FLAGS)
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        replace_at(parent, tmp, parent, name)
    except BaseException:
        with contextlib.suppress(OSError):
            unlink_at(parent, tmp)
        raise


def read_small_at(parent, name, limit=1 << 20):
    """Read a small regular file, never following a link; None when unreadable."""
    try:
        fd = open_at(parent, name, READ_FLAGS)
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


def read_json_at(parent, name):
    """The JSON object in a small file (see :func:`read_small_at`); None when unreadable."""
    data = read_small_at(parent, name)
    if data is None:
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def rmtree_at(parent, name, depth=0):
    """Remove ``name`` in ``parent`` and, for a real folder, all it holds; links are removed, never followed."""
    try:
        st = _lstat_at(parent, name)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError):
            unlink_at(parent, name)
        return
    if depth > 16:
        return
    try:
        handle = open_dir(name, parent)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError), os.scandir(handle) as it:
            children = [e.name for e in it]
        for child in children:
            rmtree_at(handle, child, depth + 1)
    finally:
        close_dir(handle)
    path, dir_fd = _loc(parent, name)
    with contextlib.suppress(OSError):
        os.rmdir(path, dir_fd=dir_fd)


# --------------------------------------------------------- folder safety
def _describe_mode(mode):
    return f"mode {stat.S_IMODE(mode):#o}"


def unsafe_store(st):
    """Why a store folder with this ``lstat`` must not be used, or None."""
    if not _POSIX_CHECKS:
        return None  # pragma: no cover
    if st.st_uid != os.geteuid():
        return f"it is owned by another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by other users ({_describe_mode(st.st_mode)})"
    return None


def unsafe_memory(path):
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


def refusal(where, problem):
    """The message refusing the store at ``where`` because of ``problem`` (from the checks above)."""
    return (
        f"refusing to use {where}: {problem}. Anyone who can write there can change your "
        "features; use a folder only you can write to (chmod 700, owned by you)"
    )
