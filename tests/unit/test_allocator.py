"""Frame buffers freed by one thread are reused by another instead of being faulted in afresh."""

import subprocess
import sys
import textwrap

import pytest

# In a fresh process: one thread allocates and fills 8 MiB buffers (as ZeroMQ's I/O thread
# receives frames), another frees them (as the Recorder's writer does once a frame is
# written). Prints the page faults of the second round, after a warm-up round.
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
    result = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_tuned_buffers_are_reused_without_page_faults():
    if sys.platform != "linux":
        pytest.skip("the tuning is glibc's")
    untuned, tuned = page_faults("plain"), page_faults("tuned")
    # Counts depend on the kernel (transparent huge pages fault 2 MiB at once): compare the two.
    assert tuned * 10 < untuned, f"{tuned} page faults tuned, {untuned} with glibc's defaults"
