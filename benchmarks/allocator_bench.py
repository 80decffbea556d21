"""Page faults of a frame-buffer churn with glibc's defaults and with ``reuse_frame_buffers``.

One thread allocates and fills 8 MiB buffers (as ZeroMQ's I/O thread receives frames),
another frees them (as the Recorder's writer does once a frame is written). Prints the page
faults of the second round, after a warm-up round, for both, and their ratio. Counts depend
on the kernel (transparent huge pages fault 2 MiB at once) and on the machine's load, so
this is a figure to read, not a test.

Usage: .venv/bin/python benchmarks/allocator_bench.py
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHURN = textwrap.dedent("""
    import resource, sys, threading, queue
    if sys.argv[1] == "tuned":
        from photonflow.allocator import reuse_frame_buffers
        assert reuse_frame_buffers()
    handoff = queue.Queue(4)
    def receive(count):
        for _ in range(count):
            handoff.put(bytearray(8 * 1024 * 1024))
        handoff.put(None)
    def churn(count):
        thread = threading.Thread(target=receive, args=(count,))
        thread.start()
        while handoff.get() is not None:
            pass
        thread.join()
    churn(16)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn(32)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def page_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, timeout=60, check=True)
    return int(result.stdout)


def main() -> None:
    untuned, tuned = page_faults("plain"), page_faults("tuned")
    print(f"page faults per 32 x 8 MiB buffers: glibc defaults {untuned}, reuse_frame_buffers {tuned}")
    print(f"ratio defaults/tuned: {untuned / max(tuned, 1):.1f}")


if __name__ == "__main__":
    main()
