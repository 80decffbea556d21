"""The Recorder fed by detector streams other than STINS: Dectris v2 (bslz4) and MAX IV legacy."""

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reading back)
import numpy as np
import pytest

from photonflow import states
from photonflow.recording.config import RecorderConfig
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.diffraction import DiffractionFrames, PatternSettings
from photonflow.stream import bslz4, dectris, maxiv
from photonflow.stream.transport import StreamSender

FRAMES = DiffractionFrames(PatternSettings(height=64, width=80, dtype="uint32", seed=2, exposure=0.05))


@pytest.fixture
def sender():
    stream = StreamSender("tcp://127.0.0.1:*")
    yield stream
    stream.close()


def test_dectris_v2_bslz4_frames_are_written_compressed_and_read_back_equal(tmp_path, sender):
    recorder = Recorder(tmp_path)
    path = recorder.arm(RecordingRequest(5, 3, sender.endpoint, "eiger.h5", protocol="dectris-v2"))
    chunks = [bslz4.compress(FRAMES.frame(n)) for n in range(5)]
    sender.send(dectris.encode_start_v2(3, shape=(64, 80), frame_count=5, image_dtype="uint32",
                                        detector={"serial_number": "E-32-0001", "count_time": 0.05}))
    for n, chunk in enumerate(chunks):
        sender.send(dectris.encode_image_v2(3, n, chunk, encoding="bslz4", shape=(64, 80), dtype="uint32"))
    sender.send(dectris.encode_end_v2(3))
    assert recorder.wait(10)
    assert recorder.state == states.ON, recorder.status
    with h5py.File(path, "r") as f:
        data = f["entry/data/data"]
        assert data.id.get_create_plist().get_filter(0)[0] == 32008  # the bitshuffle filter
        for n in range(5):
            # the chunk on disk is the very buffer the detector sent: no recompression
            assert data.id.read_direct_chunk((n, 0, 0))[1] == chunks[n]
            np.testing.assert_array_equal(data[n], FRAMES.frame(n))


def test_maxiv_legacy_stream_without_series_ids_or_counts_is_recorded(tmp_path, sender):
    recorder = Recorder(tmp_path)
    path = recorder.arm(RecordingRequest(4, 9, sender.endpoint, "maxiv.h5", protocol="maxiv"))
    sender.send(maxiv.encode_start(0))
    for n in (0, 1, 3):
        sender.send(maxiv.encode_image(n + 1, n, FRAMES.frame(n)))
    sender.send(maxiv.encode_end(5))
    assert recorder.wait(10)
    # Nothing announced a count: the highest frame tells, and frame 2 never came.
    assert recorder.state == states.ALARM and recorder.counters.missing_frames == 1
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["entry/data/data"][3], FRAMES.frame(3))
        assert list(f["entry/accounting/missing_frame_numbers"][()]) == [2]


def test_raw_frames_can_be_stored_compressed_by_the_worker_pool_in_order(tmp_path, sender):
    from photonflow.stream.stins import StinsEncoder

    recorder = Recorder(RecorderConfig(tmp_path, compression="bslz4", compression_workers=2))
    path = recorder.arm(RecordingRequest(40, 1, sender.endpoint, "packed.h5"))
    encoder = StinsEncoder()
    sender.send(encoder.series_start(1, 40, (64, 80), "uint32", {"name": "sim"}))
    for n in range(40):
        sender.send(encoder.data(1, n, FRAMES.frame(n), 0.0))
    sender.send(encoder.series_end(1, 40, 40))
    assert recorder.wait(20)
    assert recorder.state == states.ON and recorder.counters.frames_written == 40
    with h5py.File(path, "r") as f:
        data = f["entry/data/data"]
        assert data.id.get_create_plist().get_filter(0)[0] == 32008
        stored = sum(len(data.id.read_direct_chunk((n, 0, 0))[1]) for n in range(40))
        assert stored < 40 * 64 * 80 * 4 / 2  # really compressed
        for n in range(40):
            np.testing.assert_array_equal(data[n], FRAMES.frame(n))


def test_an_unknown_compression_is_refused(tmp_path):
    from photonflow.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="compression must be one of none, bslz4"):
        Recorder(RecorderConfig(tmp_path, compression="zstd"))
