"""The file system of a ``file://`` URL: fsspec's interface, never following a link.

A ``file://`` URL names the segment store (:mod:`skbert._cache.segments`) on a
local or shared folder. fsspec's own local file system follows symbolic
links, so a link planted in the store (``<kind>`` pointing elsewhere) would
make skbert read, write or delete segments outside it. :class:`NoFollowFS`
gives the segment store the few fsspec methods it uses (``ls``, ``find``,
``cat_file``, ``cat_ranges``, ``pipe_file``, ``rm_file``, ``rm``) on the
descriptor-relative, link-refusing operations of :mod:`skbert._cache.posix`,
the local store's: every folder below the store folder is opened relative to
its parent with ``O_NOFOLLOW``, so a link anywhere in the store is refused
(an :class:`OSError`) or, when listing, skipped; never followed. Folders are
created 0o700 and files 0o600, published by an atomic rename.

With ``check_owner=True`` (the stores :func:`skbert._cache.open.open_store`
opens for the estimators), the folders are checked as the local store checks
its own (:func:`~skbert._cache.posix.unsafe_memory`,
:func:`~skbert._cache.posix.unsafe_store`): :meth:`NoFollowFS.unsafe` says
why they must not be trusted, and every operation refuses a store folder
that turned unsafe since.
"""

import contextlib
import errno
import os
import stat

from .format import STORE_DIR
from .posix import (
    LINK_ERRNOS,
    O_CLOEXEC,
    READ_FLAGS,
    close_dir,
    ensure_dir,
    fix_mode,
    list_dir,
    lstat_or_none,
    make_dirs,
    open_at,
    open_dir,
    publish_at,
    rmtree_at,
    stat_dir,
    unlink_at,
    unsafe_memory,
    unsafe_store,
)

__all__ = ["NoFollowFS"]

_PROTOCOLS = ("file://", "local://")
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class NoFollowFS:
    """The segment store's file system on a local folder; no link is ever followed.

    Parameters
    ----------
    memory : str
        The ``memory`` folder (the URL's path); the store is its
        ``skbert-features-v1`` sub-folder, and only paths inside the store
        are served.
    check_owner : bool, default=False
        Refuse a store folder owned by another user or writable by others
        on every operation (see :meth:`unsafe` for the first check).
    """

    protocol = ("file", "local")

    def __init__(self, memory, *, check_owner=False):
        self.memory = os.path.abspath(os.path.expanduser(memory))
        self.root = self.memory.rstrip("/") + "/" + STORE_DIR
        self.check_owner = check_owner
        self._fs_token = f"skbert-nofollow:{self.root}"

    # ------------------------------------------------------------- names
    def _strip_protocol(self, path):
        path = str(path)
        for prefix in _PROTOCOLS:
            if path.startswith(prefix):
                path = path[len(prefix) :]
                break
        return path.rstrip("/") or "/"

    def unstrip_protocol(self, path):
        return "file://" + self._strip_protocol(path)

    def invalidate_cache(self, path=None):
        """Nothing is cached."""

    def _parts(self, path):
        """The parts of ``path`` below the store folder (``()`` for the folder itself)."""
        path = self._strip_protocol(path)
        if path == self.root:
            return ()
        if not path.startswith(self.root + "/"):
            raise PermissionError(errno.EACCES, "outside the feature store", path)
        parts = tuple(path[len(self.root) + 1 :].split("/"))
        if any(p in ("", ".", "..") for p in parts):
            raise PermissionError(errno.EACCES, "not a plain path in the feature store", path)
        return parts

    # ----------------------------------------------------------- folders
    def unsafe(self):
        """Why the ``memory`` folder or the store folder must not be used, or None."""
        problem = unsafe_memory(self.memory)
        if problem is not None:
            return problem
        st = None
        with contextlib.suppress(OSError):
            st = os.lstat(self.root)
        if st is not None and stat.S_ISLNK(st.st_mode):
            return f"{self.root} is a symlink"
        problem = unsafe_store(st) if st is not None else None
        return None if problem is None else f"{self.root}: {problem}"

    def _open_root(self, create=False):
        """A handle on the store folder (refused when it is a link, or unsafe)."""
        if create:
            make_dirs(self.memory)
            try:
                os.mkdir(self.root, 0o700)
            except FileExistsError:
                pass
            else:
                handle = open_dir(self.root)
                fix_mode(handle)
                close_dir(handle)
        try:
            handle = open_dir(self.root)
        except OSError as exc:
            if exc.errno in LINK_ERRNOS:
                raise OSError(exc.errno, "not a real directory (symlink?)", self.root) from None
            raise
        if self.check_owner:
            problem = unsafe_store(stat_dir(handle))
            if problem is not None:
                close_dir(handle)
                raise PermissionError(errno.EACCES, f"refusing the feature store: {problem}", self.root)
        return handle

    def _open(self, parts, create=False):
        """A handle on the folder ``parts`` below the store (links refused)."""
        handle = self._open_root(create=create)
        for i, part in enumerate(parts):
            try:
                child = ensure_dir(handle, part) if create else open_dir(part, handle)
            except OSError as exc:
                if exc.errno in LINK_ERRNOS:
                    where = "/".join((self.root,) + parts[: i + 1])
                    exc = OSError(exc.errno, "not a real directory (symlink?), refused", where)
                raise exc from None
            finally:
                close_dir(handle)
            handle = child
        return handle

    @contextlib.contextmanager
    def _parent(self, path, create=False):
        """Yield ``(folder handle, name)`` of the file at ``path``."""
        parts = self._parts(path)
        if not parts:
            raise IsADirectoryError(errno.EISDIR, "the feature store folder", self.root)
        handle = self._open(parts[:-1], create=create)
        try:
            yield handle, parts[-1]
        finally:
            close_dir(handle)

    def _info(self, path, st):
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
        return {
            "name": path,
            "size": st.st_size,
            "type": kind,
            "mtime": st.st_mtime,
            "islink": stat.S_ISLNK(st.st_mode),
        }

    # -------------------------------------------------------------- read
    def ls(self, path, detail=True):
        """The items of folder ``path`` (links listed as links, never followed)."""
        path = self._strip_protocol(path)
        handle = self._open(self._parts(path))
        try:
            out = []
            for entry in list_dir(handle):
                with contextlib.suppress(OSError):
                    out.append(self._info(f"{path}/{entry.name}", entry.stat(follow_symlinks=False)))
        finally:
            close_dir(handle)
        return out if detail else [info["name"] for info in out]

    def find(self, path, detail=True):
        """Every file below ``path``; links are reported (``islink``), never entered."""
        path = self._strip_protocol(path)
        found = {}

        def walk(handle, prefix, depth):
            for entry in list_dir(handle):
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                name = f"{prefix}/{entry.name}"
                if not stat.S_ISDIR(st.st_mode):
                    found[name] = self._info(name, st)
                    continue
                if depth >= 8:
                    continue
                try:
                    child = open_dir(entry.name, handle)
                except OSError:
                    continue
                try:
                    walk(child, name, depth + 1)
                finally:
                    close_dir(child)

        handle = self._open(self._parts(path))
        try:
            walk(handle, path, 0)
        finally:
            close_dir(handle)
        return found if detail else sorted(found)

    def cat_file(self, path, start=None, end=None):
        """The bytes ``[start, end)`` of file ``path`` (a link is refused)."""
        with self._parent(path) as (folder, name):
            try:
                fd = open_at(folder, name, READ_FLAGS)
            except OSError as exc:
                if exc.errno in LINK_ERRNOS:
                    raise OSError(exc.errno, "a symlink (refused)", self._strip_protocol(path)) from None
                raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", self._strip_protocol(path))
            size = st.st_size
            start = 0 if start is None else (start if start >= 0 else max(size + start, 0))
            end = size if end is None else (end if end >= 0 else max(size + end, 0))
            chunks, at = [], start
            while at < end:
                chunk = os.pread(fd, end - at, at)
                if not chunk:
                    break
                chunks.append(chunk)
                at += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def cat_ranges(self, paths, starts, ends, on_error="return"):
        """:meth:`cat_file` of each range; errors are returned in place with ``on_error="return"``."""
        out = []
        for path, start, end in zip(paths, starts, ends):
            try:
                out.append(self.cat_file(path, start, end))
            except Exception as exc:
                if on_error != "return":
                    raise
                out.append(exc)
        return out

    # ------------------------------------------------------------- write
    def pipe_file(self, path, data):
        """Publish ``data`` at ``path`` atomically (temporary file + rename), 0o600."""
        with self._parent(path, create=True) as (folder, name):
            publish_at(folder, name, data)

    def rm_file(self, path):
        """Remove file ``path`` (a link is removed itself, never followed)."""
        with self._parent(path) as (folder, name):
            st = lstat_or_none(folder, name)
            if st is None:
                raise FileNotFoundError(errno.ENOENT, "no such file", self._strip_protocol(path))
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "a folder", self._strip_protocol(path))
            unlink_at(folder, name)

    def rm(self, path, recursive=False):
        """Remove files (a list of paths), or a folder and its content with ``recursive``."""
        if isinstance(path, (list, tuple)):
            for one in path:
                with contextlib.suppress(FileNotFoundError):
                    self.rm_file(one)
            return
        parts = self._parts(path)
        if not recursive:
            self.rm_file(path)
            return
        if not parts:
            try:  # the memory folder itself may be reached through a link, as a plain path
                parent = os.open(self.memory, os.O_RDONLY | _O_DIRECTORY | O_CLOEXEC)
            except FileNotFoundError:
                raise FileNotFoundError(errno.ENOENT, "no such folder", self.memory) from None
            try:
                if lstat_or_none(parent, STORE_DIR) is None:
                    raise FileNotFoundError(errno.ENOENT, "no such folder", self.root)
                rmtree_at(parent, STORE_DIR)
            finally:
                os.close(parent)
            return
        with self._parent(path) as (folder, name):
            if lstat_or_none(folder, name) is None:
                raise FileNotFoundError(errno.ENOENT, "no such folder", self._strip_protocol(path))
            rmtree_at(folder, name)
