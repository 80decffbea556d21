"""Background writeback: the disk writes a series' files while it runs; nothing is left open."""

import os
import threading
import time
from pathlib import Path

import pytest

from photonflow import states
from photonflow.recording.writeback import BackgroundWriteback
from tests.helpers.recording import record_split
from tests.helpers.waiting import wait_until

MB = 1_000_000


def bytes_written_to_disk(path: Path) -> int:
    """Bytes the block device holding ``path`` has written so far (from /sys)."""
    device = os.stat(path).st_dev
    stat = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/stat")
    if not stat.exists():
        pytest.skip(f"{path} is not on a block device whose writes the kernel counts")
    return int(stat.read_text().split()[6]) * 512  # sectors written


def test_watched_files_reach_the_disk_without_waiting_for_a_sync(tmp_path):
    path = tmp_path / "series.h5"
    path.write_bytes(os.urandom(64 * MB))  # dirty in the page cache; the kernel alone waits ~30 s
    before = bytes_written_to_disk(tmp_path)
    writeback = BackgroundWriteback(interval=0.05)
    try:
        writeback.watch(path)
        wait_until(lambda: bytes_written_to_disk(tmp_path) - before >= 60 * MB, 20,
                   what="the file's 64 MB on the disk, well before the kernel's own 30 s")
    finally:
        writeback.close()


def test_forget_and_close_release_every_descriptor_and_the_thread(tmp_path):
    paths = [tmp_path / f"f{n}" for n in range(3)]
    for path in paths:
        path.write_bytes(b"x" * 4096)
    writeback = BackgroundWriteback(interval=0.01)
    for path in paths:
        writeback.watch(path)
    assert sorted(descriptors_on(tmp_path)) == [str(p) for p in paths]
    writeback.forget(paths[0])
    assert writeback.watched() == paths[1:]
    assert sorted(descriptors_on(tmp_path)) == [str(p) for p in paths[1:]]
    time.sleep(0.05)  # a few rounds of writeback over the remaining two
    writeback.close()
    assert descriptors_on(tmp_path) == []
    assert not any(t.name == "recorder-writeback" for t in threading.enumerate())


def descriptors_on(directory: Path) -> list[str]:
    """This process's open files under ``directory``."""
    targets = []
    for descriptor in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        except OSError:  # closed meanwhile
            pass
    return [t for t in targets if t.startswith(str(directory))]


def test_a_durable_split_series_leaves_no_descriptor_or_writeback_thread_behind(tmp_path):
    recorder, path = record_split(tmp_path, 10, range(10), frames_per_file=3)
    assert recorder.durable and recorder.state == states.ON
    assert len(list(tmp_path.glob("split_data_*.h5"))) == 4
    assert descriptors_on(tmp_path) == [str(tmp_path)]  # only the data root, held for the Recorder's life
    assert not any(t.name == "recorder-writeback" for t in threading.enumerate())
