"""After ``reuse_frame_buffers``, frame-sized buffers come from malloc's heap, where freed
memory is kept for the next frame, instead of being mmap'ed afresh and unmapped each time.
(How many page faults that saves is measured by benchmarks/allocator_bench.py.)"""

import subprocess
import sys
import textwrap

import pytest

# In a fresh process: how many bytes glibc holds in mmap'ed blocks (mallinfo2's hblkhd) while
# an 8 MiB frame buffer is alive, and whether the next buffer reuses the freed one's address.
PROBE = textwrap.dedent("""
    import ctypes, sys
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    if sys.argv[1] == "tuned":
        from photonflow.allocator import reuse_frame_buffers
        assert reuse_frame_buffers()
    size = 8 * 1024 * 1024
    mapped_before = libc.mallinfo2().hblkhd
    first = libc.malloc(size)
    mapped_during = libc.mallinfo2().hblkhd
    libc.free(first)
    second = libc.malloc(size)
    print(mapped_during - mapped_before, int(first == second))
""")


def frame_buffer_allocation(mode: str) -> tuple[int, bool]:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    mapped, reused = result.stdout.split()
    return int(mapped), reused == "1"


@pytest.mark.skipif(sys.platform != "linux", reason="the tuning is glibc's")
def test_frame_buffers_are_mmapped_with_glibc_defaults():
    mapped, _ = frame_buffer_allocation("plain")
    assert mapped >= 8 * 1024 * 1024


@pytest.mark.skipif(sys.platform != "linux", reason="the tuning is glibc's")
def test_tuned_frame_buffers_come_from_the_heap_and_are_reused():
    mapped, reused = frame_buffer_allocation("tuned")
    assert mapped == 0
    assert reused
