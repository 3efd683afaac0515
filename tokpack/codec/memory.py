"""How tokpack uses the C heap (glibc only; no-ops elsewhere).

glibc keeps memory freed by ``free()`` in its heap for reuse, and torch frees tensors
with ``free()``: after a phase that allocated a lot and let go of it (building a model,
a burst of large pieces), that memory still counts in the process's resident size.
``malloc_trim(0)`` returns the free pages (``madvise``), so the next phase starts from
what is really in use. It costs a walk over the heap, so it is called between phases,
not in inner loops.

Within a phase the opposite is wanted: the models allocate and free activations of a few
MB per layer, and glibc's defaults hand such blocks back to the system as soon as they
are freed (served by ``mmap`` at first, then trimmed off the heap's top whenever 2x the
largest such block is free), so the next layer's output faults its pages in again, each
one zeroed by the kernel. ``keep_freed_memory`` raises both thresholds: freed blocks stay
in the heap for the next layer, and ``release_memory`` between phases bounds what is kept.
Measured (docs/PERFORMANCE.md): a 60 s 48 kHz encode took 620,000-710,000 page faults
and 2.7 s of system time with the defaults, 250,000 and 1.0 s with them raised.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import os
import sys

_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        _libc.malloc_trim.restype = ctypes.c_int
        _libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc.mallopt.restype = ctypes.c_int
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc.madvise.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        _libc = None

MADV_DONTNEED = 4  # Linux's madvise advice
# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: blocks up to this size come from the heap, not mmap: glibc's largest allowed value on
#: 64-bit (HEAP_MAX_SIZE / 2), above which its own dynamic threshold never goes either
MMAP_THRESHOLD = 32 << 20
#: free memory at the heap's top kept for reuse; release_memory gives it back between phases
TRIM_THRESHOLD = 1 << 30


def release_memory() -> bool:
    """Return free heap pages to the OS; True if anything was released."""
    if _libc is None:
        return False
    return bool(_libc.malloc_trim(0))


@functools.cache
def keep_freed_memory() -> bool:
    """Keep freed blocks of up to 32 MB in the heap for reuse instead of handing them back
    at once (module docstring); process-wide, once. True where glibc took both settings."""
    if _libc is None:
        return False
    return bool(_libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) \
        and bool(_libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def drop_file_pages(tensors, path) -> int:
    """Give back the resident pages of ``tensors`` that lie in this process's mapping of
    the file ``path`` (``torch.load(mmap=True)``); bytes given back. For tensors that are
    no longer used, such as the weight-norm pairs folded into plain weights: reading them
    made their pages resident, and they stay counted in the process's resident size as
    long as any other tensor of the file keeps the mapping. Pages of a file mapping come
    back from the file if read again, so nothing is lost; pages elsewhere (the heap) are
    never touched, nor pages a tensor shares with its neighbours (whole pages inside each
    tensor only). Linux only; 0 elsewhere."""
    if _libc is None:
        return 0
    real, spans = os.path.realpath(path), []
    try:
        with open("/proc/self/maps") as f:  # "lo-hi perms offset dev inode [path]"
            for line in f:
                fields = line.split(None, 5)
                if len(fields) == 6 and fields[5].rstrip("\n") == real:
                    lo, hi = fields[0].split("-")
                    spans.append((int(lo, 16), int(hi, 16)))
    except OSError:
        return 0
    page, dropped = mmap.PAGESIZE, 0
    for t in tensors:
        start = t.data_ptr()
        lo = -(-start // page) * page
        hi = (start + t.numel() * t.element_size()) // page * page
        if hi > lo and any(a <= lo and hi <= b for a, b in spans) \
                and _libc.madvise(lo, hi - lo, MADV_DONTNEED) == 0:
            dropped += hi - lo
    return dropped
