"""The entries every feature store holds: their bytes, keys and sizes.

A store holds *entries*: one small float array (plus a few int64 counts) per
key, where a key is the SHA-256 of a *namespace* (a digest of everything that
changes the stored values, chosen by the caller), a *kind* (a short name for
a family of arrays of one shape) and the exact text (:func:`text_keys`).
Texts themselves are never stored. Every store keeps its entries in the
:data:`STORE_DIR` folder of its ``memory`` folder or URL: one file per entry
in the local store (:mod:`skbert._cache.local`), packed into segments in the
segment store (:mod:`skbert._cache.segments`), the same bytes in both.

An entry is raw little-endian bytes::

    header   60 bytes  magic b"SKBF", format version (u16), dtype code (u8),
                       ndim (u8), shape (4 x u32), n_counts (u32), key (32 bytes)
    counts   n_counts x int64
    values   prod(shape) x float32 (or float16)
    crc32    u32 over everything before it

A reader knows the exact header and size it expects, so a truncated,
extended, renamed or bit-flipped entry is detected (header comparison, size,
CRC-32) and the caller recomputes it. Nothing is ever unpickled.

Besides, what every store shares: the arrays a ``read`` fills
(:func:`read_outputs`), sizes (:func:`parse_size`, and :func:`eviction_due`,
when a size cap is next checked) and warnings given once per process
(:func:`warn_once`).
"""

import hashlib
import json
import re
import struct
import threading
import time
import warnings
import zlib

import numpy as np

from ..exceptions import FeatureCacheWarning

__all__ = [
    "FORMAT_VERSION",
    "STORE_DIR",
    "NAMESPACE_HEX",
    "HEADER",
    "CRC",
    "DTYPES",
    "DTYPE_CODES",
    "entry_size",
    "pack_header",
    "encode_entry",
    "parse_header",
    "check_entry",
    "decode_entry",
    "namespace_digest",
    "text_keys",
    "read_outputs",
    "parse_size",
    "eviction_due",
    "warn_once",
]

#: Version of the on-disk format; part of every key and of the folder name.
FORMAT_VERSION = 1
#: The folder skbert owns inside the ``memory`` directory (or URL).
STORE_DIR = f"skbert-features-v{FORMAT_VERSION}"
#: A namespace's folder is named by this many hex digits of its digest.
NAMESPACE_HEX = 32

_MAGIC = b"SKBF"
#: An entry's header: magic, version, dtype code, ndim, shape, n_counts, key.
HEADER = struct.Struct("<4sHBB4II32s")
#: An entry's trailing CRC-32.
CRC = struct.Struct("<I")
#: Storage dtype of the values, by dtype code.
DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f2")}
#: Dtype code of each storage dtype name.
DTYPE_CODES = {"float32": 1, "float16": 2}
_DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
_MAX_NDIM = 4

# Process-wide state: warnings already given, and the eviction schedule.
_STATE_LOCK = threading.Lock()
_WARNED = set()
_SCAN_INTERVAL = 60.0


# ---------------------------------------------------------------- entries
def entry_size(shape, dtype_code, n_counts):
    """Bytes of an entry of this shape, dtype code and number of counts."""
    return (
        HEADER.size
        + 8 * n_counts
        + int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype_code].itemsize
        + CRC.size
    )


def pack_header(key, shape, dtype_code, n_counts):
    """The header bytes of an entry."""
    dims = list(shape) + [0] * (_MAX_NDIM - len(shape))
    return HEADER.pack(_MAGIC, FORMAT_VERSION, dtype_code, len(shape), *dims, n_counts, key)


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
    code = DTYPE_CODES[dtype]
    values = np.ascontiguousarray(values, dtype=DTYPES[code])
    counts = np.ascontiguousarray(counts, dtype="<i8").ravel()
    body = b"".join(
        (pack_header(key, values.shape, code, counts.size), counts.tobytes(), values.tobytes())
    )
    return body + CRC.pack(zlib.crc32(body))


def parse_header(data):
    """Shape, dtype code, n_counts and key of an entry, or None if malformed."""
    if len(data) < HEADER.size + CRC.size:
        return None
    magic, version, code, ndim, *rest = HEADER.unpack_from(data)
    dims, n_counts, key = rest[:_MAX_NDIM], rest[_MAX_NDIM], rest[_MAX_NDIM + 1]
    if magic != _MAGIC or version != FORMAT_VERSION or code not in DTYPES:
        return None
    if not 0 <= ndim <= _MAX_NDIM or any(dims[ndim:]) or n_counts > 64:
        return None
    shape = tuple(dims[:ndim])
    if len(data) != entry_size(shape, code, n_counts):
        return None
    return shape, code, n_counts, key


def check_entry(data):
    """True when ``data`` is a complete, self-consistent entry."""
    if parse_header(data) is None:
        return False
    body = memoryview(data)[: -CRC.size]
    return zlib.crc32(body) == CRC.unpack_from(data, len(data) - CRC.size)[0]


def decode_entry(entry):
    """``(values, counts, dtype name)`` of an entry already checked."""
    shape, code, n_counts, _ = parse_header(entry)
    counts = np.frombuffer(entry, dtype="<i8", count=n_counts, offset=HEADER.size)
    values = np.frombuffer(
        entry,
        dtype=DTYPES[code],
        count=int(np.prod(shape, dtype=np.int64)),
        offset=HEADER.size + 8 * n_counts,
    ).reshape(shape)
    return values, counts, _DTYPE_NAMES[code]


# ------------------------------------------------------------------- keys
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


def text_keys(digest, kind, texts):
    """The 32-byte key of each text for entries of ``kind`` in namespace ``digest``."""
    prefix = digest + kind.encode("ascii") + b"\0"
    sha = hashlib.sha256
    return [sha(prefix + text.encode("utf-8", "surrogatepass")).digest() for text in texts]


# ------------------------------------------------------------------ reads
def read_outputs(keys, shape, n_counts, select):
    """The arrays a store's ``read`` fills, with nothing found yet.

    Every store (the local store's namespaces, the segment store, the memory
    layer) answers ``read(kind, keys, shape, n_counts=, select=)`` with these.

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


# ------------------------------------------------------------------ sizes
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text):
    """A size in bytes from ``"123"``, ``"500M"``, ``"1G"`` or ``"1.5GiB"``.

    Units are binary (K = 1024); ``B``, ``iB`` and lower case are accepted.

    Raises
    ------
    ValueError
        When ``text`` is not a size.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?\s*", str(text), re.I)
    if match is None or (match.group(3) and match.group(3).lower() == "ib" and not match.group(2)):
        raise ValueError(
            f"{text!r} is not a size: give bytes, or a number with a unit K, M, G or T "
            "(binary: 1K = 1024), e.g. 500M, 1G or 1.5GiB."
        )
    number, unit = match.group(1), match.group(2).lower()
    return int(float(number) * _UNITS[unit]) if "." in number else int(number) * _UNITS[unit]


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


# --------------------------------------------------------------- warnings
def warn_once(token, message, stacklevel=4):
    """Give a :class:`~skbert.FeatureCacheWarning` once per process and ``token``."""
    with _STATE_LOCK:
        if token in _WARNED:
            return
        _WARNED.add(token)
    warnings.warn(message, FeatureCacheWarning, stacklevel=stacklevel)
