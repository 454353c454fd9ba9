"""Reader for the IDX files of MNIST and Fashion-MNIST (LeCun's format), gzip or raw, with strict checks."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import ImagegenError

_UBYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """Return the array stored in an IDX file; a wrong magic number or a truncated file is a clear error."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ImagegenError(f"{path}: cannot read IDX data ({e}); the file is damaged, delete it and fetch it "
                            "again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or not 1 <= raw[3] <= 4:
        raise ImagegenError(f"{path}: not an unsigned-byte IDX file (header {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ImagegenError(f"{path}: truncated IDX file (header cut short)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "oversized"
        raise ImagegenError(
            f"{path}: {what} IDX file: header says {dims} = {expected} bytes, file has {len(raw)}; "
            "delete it and fetch it again"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


def write_idx(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 array as gzipped IDX (used for tests and for exporting data)."""
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, _UBYTE, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    Path(path).write_bytes(gzip.compress(header + array.tobytes(), mtime=0))
    return Path(path)
