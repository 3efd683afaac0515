"""Give freed heap memory back to the operating system (glibc only; a no-op elsewhere).

glibc keeps memory freed by ``free()`` in its heap for reuse, and torch frees tensors
with ``free()``: after a phase that allocated a lot and let go of it (building a model,
a burst of large pieces), that memory still counts in the process's resident size.
``malloc_trim(0)`` returns the free pages (``madvise``), so the next phase starts from
what is really in use. It costs a walk over the heap, so it is called between phases,
not in inner loops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_trim = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _trim = _libc.malloc_trim
        _trim.argtypes = [ctypes.c_size_t]
        _trim.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        _trim = None


def release_memory() -> bool:
    """Return free heap pages to the OS; True if anything was released."""
    if _trim is None:
        return False
    return bool(_trim(0))
