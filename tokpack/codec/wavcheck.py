"""Catch WAV headers that lie about their data size (libsndfile quietly reads what exists).

Only the RIFF/RIFX/RF64 chunk headers are read (standard library, bounded work), so this is
cheap enough to run on every input before decoding it.
"""

from __future__ import annotations

import os
import struct

_MAX_CHUNKS = 4096  # a WAV with more chunks than this before 'data' is not worth walking
_UNKNOWN32 = 0xFFFF_FFFF


def data_size_warning(path: str | os.PathLike) -> str | None:
    """A one-line description of a WAV whose data chunk size disagrees with the file, or None.

    Covers a data size larger than the bytes that follow it (a truncated file) and the
    0xFFFFFFFF "unknown" size that streaming writers leave behind. Not a WAV → None.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX", b"RF64"):
                return None
            endian = ">" if head[:4] == b"RIFX" else "<"
            ds64_data = None
            offset = 12
            for _ in range(_MAX_CHUNKS):
                f.seek(offset)
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, csize = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
                if cid == b"ds64":
                    body = f.read(min(csize, 28))
                    if len(body) >= 16:
                        ds64_data = struct.unpack("<Q", body[8:16])[0]
                elif cid == b"data":
                    return _describe(csize, ds64_data, size - offset - 8, head[:4] == b"RF64")
                offset += 8 + csize + (csize & 1)
                if offset >= size:
                    return None
    except OSError:
        return None
    return None


def _describe(declared: int, ds64_data: int | None, available: int, rf64: bool) -> str | None:
    if rf64 and declared == _UNKNOWN32 and ds64_data is not None:
        declared = ds64_data
    elif declared == _UNKNOWN32:
        return (f"WAV data chunk size is 0xFFFFFFFF (unknown length); "
                f"read the {available} bytes present up to the end of the file")
    if declared > available:
        return (f"WAV data chunk declares {declared} bytes but the file holds only {available}; "
                f"the file is truncated, read the {available} bytes present")
    return None
