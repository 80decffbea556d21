"""The Andor driver over the SDK3 feature interface, against the simulated camera with pylablib's API."""

import time

import h5py
import numpy as np
import pytest

from photonflow import states
from photonflow.acquisition.acquirer import Acquirer
from photonflow.acquisition.andor import AndorCamera, AndorSettings
from photonflow.drivers.sdk3 import pack_mono12packed, unpack_mono12packed
from photonflow.errors import ConfigurationError, DetectorError
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.andor_sdk3 import SimulatedSDK3Camera
from photonflow.stream.transport import StreamSender
from tests.helpers.recording import acquire_into
from tests.helpers.trigger_line import (
    WatchedTriggerLine,
    acquirer_and_recorder,
    assert_recorded_frames_are_the_pulses,
    pulse_fewer_than_asked,
    start_recorded_series,
)
from tests.helpers.waiting import SteppingClock, wait_until


def test_mono12packed_unpacks_as_the_sdk_documents_it():
    # pixels 0xABC and 0x123 -> bytes 0xAB, 0x3C, 0x12 (low nibbles share the middle byte)
    raw = bytes([0xAB, 0x3C, 0x12, 0, 0, 0, 0, 0])  # one row, padded to a stride of 8
    np.testing.assert_array_equal(unpack_mono12packed(raw, 2, 1, 8), [[0xABC, 0x123]])


@pytest.mark.parametrize("width", [6, 7])  # an odd width leaves half a triple
def test_mono12packed_round_trips_through_padded_rows(width):
    frame = np.random.default_rng(width).integers(0, 4096, (5, width), dtype=np.uint16)
    raw = pack_mono12packed(frame, stride=16)
    assert len(raw) == 5 * 16
    np.testing.assert_array_equal(unpack_mono12packed(raw, width, 5, 16), frame)


def test_a_short_buffer_is_refused_saying_what_a_frame_needs():
    with pytest.raises(ValueError, match="needs 4 rows of >= 9 bytes"):
        unpack_mono12packed(bytes(20), 6, 4, 10)


def record(tmp_path, encoding, frames, model="zyla55", binning=8, stop_after=None, sdk=None):
    sdk = sdk or SimulatedSDK3Camera(model, "VSC-01234", seed=2)
    camera = AndorCamera(sdk, AndorSettings(pixel_encoding=encoding, binning=binning))
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(camera, sender)
    recorder = Recorder(tmp_path)
    acquirer.update_settings(frame_count=frames, exposure=0.001, period=0.011)
    path = acquire_into(acquirer, recorder, RecordingRequest(frames, 1, acquirer.stream_endpoint, f"{encoding}.h5"),
                        stop_after)
    sender.close()
    return sdk, camera, acquirer, recorder, path


@pytest.mark.parametrize("encoding, dtype", [("Mono12Packed", "uint16"), ("Mono12", "uint16"),
                                             ("Mono16", "uint16"), ("Mono32", "uint32")])
def test_frames_in_each_pixel_encoding_reach_the_file_as_the_sensor_counted_them(tmp_path, encoding, dtype):
    sdk, camera, acquirer, recorder, path = record(tmp_path, encoding, 8)
    assert acquirer.state == states.ON and recorder.counters.frames_written == 8, acquirer.status
    assert camera.frame_shape == (270, 320) and camera.frame_dtype == dtype  # 2560x2160 binned 8x8
    with h5py.File(path, "r") as f:
        data = f["entry/data/data"]
        assert data.dtype == np.dtype(dtype)
        for n in (0, 7):
            np.testing.assert_array_equal(data[n], sdk.frame(n))
        detector = next(g for g in f["entry/instrument"].values() if g.attrs.get("NX_class") == "NXdetector")
        assert detector["serial_number"][()].decode() == "VSC-01234"
        assert detector["x_pixel_size"][()] == pytest.approx(6.5e-6 * 8)


def test_the_sdks_refusals_come_back_with_its_code(tmp_path):
    sdk = SimulatedSDK3Camera("zyla42")
    camera = AndorCamera(sdk)
    acquirer = Acquirer(camera, StreamSender("tcp://127.0.0.1:*"))
    acquirer.update_settings(exposure=60.0, period=60.0)  # within photonflow's limits, not the Zyla's
    with pytest.raises(DetectorError, match=r"AT_ERR_OUTOFRANGE.*ExposureTime: 60.0 is outside 1e-05 to 30.0"):
        acquirer.prepare()
    assert acquirer.state == states.FAULT and "AT_ERR_OUTOFRANGE" in acquirer.status
    with pytest.raises(ConfigurationError, match="pixel encoding must be one of"):
        AndorCamera(sdk, AndorSettings(pixel_encoding="Mono8"))
    acquirer.sender.close()


def test_an_sdk_failure_mid_series_is_a_fault_with_the_sdks_words(tmp_path):
    sdk = SimulatedSDK3Camera("balor", seed=1)
    camera = AndorCamera(sdk, AndorSettings(binning=8))
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(camera, sender)
    recorder = Recorder(tmp_path)
    acquirer.update_settings(frame_count=50, exposure=0.001, period=0.02)
    recorder.arm(RecordingRequest(50, 1, acquirer.stream_endpoint, "broken.h5"))
    acquirer.prepare()
    acquirer.start()
    while acquirer.frames_acquired < 3:
        acquirer.wait(0.01)
    sdk.fail_next(13, "AT_ERR_TIMEDOUT", "the camera link dropped")
    assert acquirer.wait(30)
    assert acquirer.state == states.FAULT
    assert "AT_ERR_TIMEDOUT" in acquirer.status and "the camera link dropped" in acquirer.status
    recorder.wait(10)
    sender.close()


def test_stop_ends_the_acquisition_at_the_camera(tmp_path):
    sdk, _, acquirer, recorder, _ = record(tmp_path, "Mono16", 500, stop_after=3)
    assert acquirer.last_end_reason == "stopped" and 3 <= acquirer.frames_acquired < 500
    assert recorder.counters.frames_written == acquirer.frames_acquired
    assert sdk.produced < 500  # the camera was stopped, not left running


def run_with_edges(tmp_path, trigger_mode, frames, edges, period=0.011):
    """A series in ``trigger_mode``; ``edges`` trigger edges are given once it runs."""
    sdk = SimulatedSDK3Camera("zyla42", seed=3)
    camera = AndorCamera(sdk, AndorSettings(binning=8))
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(camera, sender)
    recorder = Recorder(tmp_path)
    acquirer.update_settings(frame_count=frames, exposure=0.001, period=period, trigger_mode=trigger_mode)
    path = recorder.arm(RecordingRequest(frames, 1, acquirer.stream_endpoint, f"{trigger_mode}.h5"))
    acquirer.prepare()
    acquirer.start()
    wait_until(lambda: sdk.acquiring, 30, what="the camera acquiring (edges before it are not its own)")
    time.sleep(0.2)  # a camera that does not wait for an edge shows it here; load only delays its frames
    before_edges = acquirer.frames_acquired
    for _ in range(edges):
        sdk.fire_trigger()
        time.sleep(0.03)  # paces the edges
    assert acquirer.wait(30) and recorder.wait(30)
    sender.close()
    return sdk, acquirer, before_edges, path


def test_external_takes_one_frame_per_edge_and_external_start_runs_from_the_first(tmp_path):
    sdk, acquirer, before_edges, path = run_with_edges(tmp_path, "external", 3, edges=3)
    assert before_edges == 0 and acquirer.state == states.ON and acquirer.frames_acquired == 3, acquirer.status
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["entry/data/data"][2], sdk.frame(2))
    _, acquirer, before_edges, _ = run_with_edges(tmp_path, "external_start", 6, edges=1)
    assert before_edges == 0 and acquirer.frames_acquired == 6, acquirer.status
    _, acquirer, before_edges, _ = run_with_edges(tmp_path, "external_enable", 2, edges=2)
    assert before_edges == 0 and acquirer.frames_acquired == 2, acquirer.status


def test_software_mode_triggers_one_frame_per_period(tmp_path):
    sdk = SimulatedSDK3Camera("zyla42", seed=3)
    clock, period = SteppingClock(1 / 64), 4 / 64  # the camera's clock moves only as its loop reads it
    triggered = []
    send_software_trigger = sdk.send_software_trigger

    def noting_the_time():
        triggered.append(clock.now)
        send_software_trigger()

    sdk.send_software_trigger = noting_the_time
    camera = AndorCamera(sdk, AndorSettings(binning=8), clock=clock)
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(camera, sender)
    acquirer.update_settings(frame_count=5, exposure=0.001, period=period, trigger_mode="software")
    path = acquire_into(acquirer, Recorder(tmp_path), RecordingRequest(5, 1, acquirer.stream_endpoint, "software.h5"))
    sender.close()
    assert acquirer.state == states.ON and acquirer.frames_acquired == 5, acquirer.status
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["entry/data/data"][4], sdk.frame(4))
    # one trigger a period on the camera's clock, never a burst to catch up
    assert len(triggered) >= 5
    assert np.diff(triggered) == pytest.approx(period, abs=clock.step)


@pytest.mark.parametrize("trigger_mode, width", [("external", 0.0), ("external_enable", 0.003)])
def test_pulses_on_the_trigger_line_give_one_frame_each_stamped_by_the_cameras_clock(tmp_path, trigger_mode, width):
    line = WatchedTriggerLine(f"ipc://{tmp_path}/run/omega.trigger")
    sdk = SimulatedSDK3Camera("zyla42", seed=3, trigger_line=line.address)
    line.wait_for_inputs(1)
    camera = AndorCamera(sdk, AndorSettings(binning=8))
    try:
        with acquirer_and_recorder(tmp_path / "data", camera) as (acquirer, recorder):
            path = start_recorded_series(acquirer, recorder, trigger_mode, exposure=0.001, period=0.011)
            wait_until(lambda: sdk.acquiring, 30, what="the camera acquiring (edges before it are not its own)")
            times = [time.time() + 0.01 * i for i in range(3)]  # 3 of the 5 frames
            pulses = pulse_fewer_than_asked(line, acquirer, times, width)
            assert recorder.wait(30) and acquirer.state == states.ON
            # the frame metadata's timestamp (10 ns ticks) is the exposure's start: the pulse's edge
            # each frame shows the phantom at its pulse's latched angle
            assert_recorded_frames_are_the_pulses(path, pulses, lambda n: sdk.frame(n, pulses[n].position), atol=1e-5)
    finally:
        line.close()
