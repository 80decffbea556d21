"""Let a process that receives frames reuse their buffers instead of faulting in fresh memory.

ZeroMQ receives every message into a buffer from malloc, and the Recorder frees it once the
frame is on disk. With glibc's defaults those buffers keep coming from fresh pages: large
ones are mmap'ed and unmapped one by one, and the per-thread arenas ZeroMQ's I/O thread
allocates from give freed memory back to the kernel. The kernel must then fault in and zero
every page of every frame before ZeroMQ can copy the frame into it: ~250 000 page faults
per 2.7 GB series were measured here, an extra pass over memory on top of the receive and
write copies (and, on a VM whose host reclaims free memory, runs several times slower).

``reuse_frame_buffers`` makes glibc serve buffers up to ``largest_frame`` from one arena
that keeps what is freed (up to ``retain``), so after the first frames the same warm pages
are reused; what the process holds stays bounded by the frames in flight, which the
Recorder's queue bounds. Call it at process start, before threads exist (device servers do
it in their entry point). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

LARGEST_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)
DEFAULT_RETAIN = 1024 * 1024 * 1024


def reuse_frame_buffers(largest_frame: int = LARGEST_MMAP_THRESHOLD, retain: int = DEFAULT_RETAIN) -> bool:
    """Tune glibc's malloc for large, short-lived, same-sized buffers; True if it took effect.

    Frames larger than 32 MiB are still mmap'ed each time: glibc allows no higher threshold.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        log.info("no glibc mallopt here: frame buffers use the allocator's defaults")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = (
        (M_ARENA_MAX, 1),  # one arena: a buffer freed by the writer is reused by ZeroMQ's thread
        (M_MMAP_THRESHOLD, min(largest_frame, LARGEST_MMAP_THRESHOLD)),
        (M_TRIM_THRESHOLD, retain),
    )
    applied = all(mallopt(parameter, value) == 1 for parameter, value in settings)
    if not applied:
        log.warning("glibc refused some malloc settings: frame buffers may be faulted in afresh")
    return applied
