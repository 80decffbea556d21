"""Start the disk writing a series' files while the series is still coming in.

The Recorder fsyncs every file it closes, so a series it reports written is on disk. Left
to itself the kernel keeps gigabytes of a fast series dirty in the page cache and writes
them only at that fsync: the disk idles while frames stream in, then the Recorder waits
for all of it at the end (~0.6 s per 2.7 GB here). Asking for writeback every
``interval`` overlaps the disk with the stream, so the closing fsync finds little left and
less data sits in memory only. Nothing here waits for the disk: ``sync_file_range`` with
``SYNC_FILE_RANGE_WRITE`` only starts the writing; durability still comes from the fsync.

It runs on its own thread, on its own read-only descriptors (the kernel writes back per
file, whichever descriptor asks), so the writer never blocks on it and HDF5's descriptors
are never touched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.025  # seconds; ~50 MB at 2 GB/s
SYNC_FILE_RANGE_WRITE = 2  # from <fcntl.h>


def _sync_file_range() -> Callable[[int], None] | None:
    """libc's sync_file_range (Linux), or None where there is none."""
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name, use_errno=True).sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int

    def start_writeback(descriptor: int) -> None:
        if function(descriptor, 0, 0, SYNC_FILE_RANGE_WRITE) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))

    return start_writeback


def _fdatasync(descriptor: int) -> None:
    """Elsewhere: write and wait (on this thread, so the writer still does not wait)."""
    os.fdatasync(descriptor)


start_writeback: Callable[[int], None] = _sync_file_range() or _fdatasync


class BackgroundWriteback:
    """A thread that, every ``interval``, starts writing the dirty pages of the files it watches."""

    def __init__(self, interval: float = DEFAULT_INTERVAL):
        self.interval = interval
        self._descriptors: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recorder-writeback", daemon=True)
        self._thread.start()

    def watch(self, path: Path) -> None:
        descriptor = os.open(path, os.O_RDONLY)
        with self._lock:
            self._descriptors[path] = descriptor

    def forget(self, path: Path) -> None:
        with self._lock:
            descriptor = self._descriptors.pop(path, None)
        if descriptor is not None:
            os.close(descriptor)

    def watched(self) -> list[Path]:
        with self._lock:
            return list(self._descriptors)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            descriptors, self._descriptors = list(self._descriptors.values()), {}
        for descriptor in descriptors:
            os.close(descriptor)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:  # duplicates: forget() may close the originals meanwhile
                pending = [(path, os.dup(descriptor)) for path, descriptor in self._descriptors.items()]
            for path, descriptor in pending:
                try:
                    start_writeback(descriptor)
                except OSError as error:  # the final fsync reports a real disk error
                    log.debug("writeback of %s: %s", path, error)
                finally:
                    os.close(descriptor)
