"""Series split over data files under a master whose virtual dataset spans them."""

import h5py
import numpy as np

from photonflow import states
from photonflow.recording.config import RecorderConfig
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import StreamSender
from tests.helpers.recording import DETECTOR, SHAPE, frame, record_split


def test_the_virtual_dataset_spans_the_data_files_and_reads_back_every_frame(tmp_path):
    recorder, path = record_split(tmp_path, 10, range(10))
    assert recorder.state == states.ON
    names = sorted(p.name for p in tmp_path.glob("split_data_*.h5"))
    assert names == ["split_data_000001.h5", "split_data_000002.h5", "split_data_000003.h5"]
    with h5py.File(path, "r") as f:
        data = f["entry/data/data"]
        assert data.is_virtual and data.shape == (10, *SHAPE)
        for n in range(10):
            np.testing.assert_array_equal(data[n], frame(n))
    with h5py.File(tmp_path / "split_data_000003.h5", "r") as f:
        assert f["entry/data/data"].shape == (2, *SHAPE)
        np.testing.assert_array_equal(f["entry/data/data"][1], frame(9))


def test_the_master_is_readable_while_the_series_runs(tmp_path):
    sender = StreamSender("tcp://127.0.0.1:*")
    recorder = Recorder(RecorderConfig(tmp_path, frames_per_file=4))
    path = recorder.arm(RecordingRequest(12, 1, sender.endpoint, "live.h5"))
    encoder = StinsEncoder()
    sender.send(encoder.series_start(1, 12, SHAPE, "uint16", DETECTOR))
    for n in range(6):
        sender.send(encoder.data(1, n, frame(n), 0.0))
    while recorder.counters.frames_written < 6:
        recorder.wait(0.01)
    recorder.wait(0.5)  # a flush
    with h5py.File(path, "r", swmr=True) as f:
        data = f["entry/data/data"]
        assert data.shape == (12, *SHAPE)  # the whole series, frames to come read as zeros
        np.testing.assert_array_equal(data[5], frame(5))
        assert not data[11].any()
    for n in range(6, 12):
        sender.send(encoder.data(1, n, frame(n), 0.0))
    sender.send(encoder.series_end(1, 12, 12))
    assert recorder.wait(10)
    sender.close()


def test_a_stopped_series_keeps_a_virtual_dataset_over_the_frames_that_exist(tmp_path):
    recorder, path = record_split(tmp_path, 100, range(6), end=False, stop=True)
    with h5py.File(path, "r") as f:
        data = f["entry/data/data"]
        assert data.shape == (6, *SHAPE)
        np.testing.assert_array_equal(data[5], frame(5))
        assert f["entry/accounting/end_reason"][()] == b"stopped"
    assert sorted(p.name for p in tmp_path.glob("split_data_*.h5")) == ["split_data_000001.h5", "split_data_000002.h5"]


def test_out_of_order_frames_across_files_land_in_place(tmp_path):
    order = [1, 0, 5, 2, 3, 4, 9, 6, 7, 8, 11, 10]
    recorder, path = record_split(tmp_path, 12, order)
    with h5py.File(path, "r") as f:
        for n in range(12):
            np.testing.assert_array_equal(f["entry/data/data"][n], frame(n))


def image_numbers(tmp_path):
    """(image_nr_low, image_nr_high) of each data file, in order."""
    numbers = []
    for path in sorted(tmp_path.glob("split_data_*.h5")):
        with h5py.File(path, "r") as f:
            attrs = f["entry/data/data"].attrs
            numbers.append((int(attrs["image_nr_low"]), int(attrs["image_nr_high"])))
    return numbers


def test_each_data_file_says_which_frames_it_holds_low_and_high(tmp_path):
    record_split(tmp_path, 10, range(10))
    assert image_numbers(tmp_path) == [(1, 4), (5, 8), (9, 10)]


def test_a_series_stopped_early_corrects_the_last_files_high_image_number(tmp_path):
    record_split(tmp_path, 12, range(6), end=False, stop=True)
    assert image_numbers(tmp_path) == [(1, 4), (5, 6)]
