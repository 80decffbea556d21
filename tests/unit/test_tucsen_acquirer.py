"""The Tucsen driver over TUCam's C functions (through ctypes), against the simulated library."""

import time

import h5py
import numpy as np
import pytest

from photonflow import states
from photonflow.acquisition.acquirer import Acquirer
from photonflow.acquisition.tucsen import TucsenCamera, TucsenSettings
from photonflow.camera import AcquisitionSettings
from photonflow.drivers.tucam import PROTOTYPES, load_tucam_library, mangled_name
from photonflow.errors import ConfigurationError, DetectorConnectionLost, DetectorError
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.tucsen_tucam import SimulatedTucam
from photonflow.stream.transport import StreamSender
from tests.helpers.recording import acquire_into
from tests.helpers.trigger_line import (
    WatchedTriggerLine,
    acquirer_and_recorder,
    assert_recorded_frames_are_the_pulses,
    pulse_fewer_than_asked,
    start_recorded_series,
)
from tests.helpers.waiting import ManualClock, SteppingClock, wait_until

ROI = (100, 200, 256, 128)


def record(tmp_path, library, settings=None, frames=6, period=0.02, trigger_mode="internal",
           stop_after=None, while_running=None, clock=time.monotonic):
    camera = TucsenCamera(library.functions, 0, settings or TucsenSettings(roi=ROI), clock=clock)
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(camera, sender)
    recorder = Recorder(tmp_path)
    acquirer.update_settings(frame_count=frames, exposure=0.005, period=period, trigger_mode=trigger_mode)
    request = RecordingRequest(frames, 1, acquirer.stream_endpoint, f"tucsen_{time.monotonic_ns()}.h5")
    if while_running is None:
        path = acquire_into(acquirer, recorder, request, stop_after)
    else:
        path = recorder.arm(request)
        acquirer.prepare()
        acquirer.start()
        while_running(acquirer)
        assert acquirer.wait(30) and recorder.wait(30)
    sender.close()
    return camera, acquirer, recorder, path


@pytest.mark.parametrize("model, gain_mode, bits, dtype", [
    ("dhyana95", "HDR", 16, "uint16"), ("dhyana95", "High", 16, "uint16"),
    ("dhyana400bsi", "CMS", 16, "uint16"), ("dhyana400bsi", "HDR", 8, "uint8"),
])
def test_each_gain_mode_and_bit_depth_reaches_the_file_as_the_camera_delivered_it(tmp_path, model, gain_mode, bits,
                                                                                   dtype):
    library = SimulatedTucam(model, "TS-0042", seed=4)
    camera, acquirer, recorder, path = record(tmp_path, library, TucsenSettings(gain_mode, bits, roi=ROI))
    assert acquirer.state == states.ON and recorder.counters.frames_written == 6, acquirer.status
    assert camera.gain_mode == gain_mode and camera.bit_depth == bits and camera.frame_dtype == dtype
    with h5py.File(path, "r") as f:
        data = f["entry/data/data"]
        assert data.shape == (6, 128, 256) and data.dtype == np.dtype(dtype)
        for n in (0, 5):
            np.testing.assert_array_equal(data[n], library.frame(n))
        detector = next(g for g in f["entry/instrument"].values() if g.attrs.get("NX_class") == "NXdetector")
        assert detector["serial_number"][()].decode() == "TS-0042"
        assert detector["x_pixel_size"][()] == pytest.approx(11e-6 if model == "dhyana95" else 6.5e-6)
        assert detector["bit_depth_readout"][()] == bits
        assert detector["detector_specific/gain_mode"][()].decode() == gain_mode
    assert np.ptp(library.frame(0)) > 0  # real content, not a blank frame
    camera.close()


def test_the_camera_aligns_the_roi_and_one_outside_the_sensor_is_refused_with_its_size():
    camera = TucsenCamera(SimulatedTucam("dhyana95").functions, 0, TucsenSettings(roi=(101, 203, 259, 130)))
    assert camera.roi == (100, 200, 256, 128) and camera.frame_shape == (128, 256)
    with pytest.raises(ConfigurationError, match=r"ROI x=2000 y=0 width=100 height=10 does not fit the 2048x2048 "
                                                 r"sensor: need x \+ width <= 2048"):
        camera.set_roi(2000, 0, 100, 10)
    camera.set_roi(0, 0, 0, 0)
    assert camera.frame_shape == (2048, 2048)
    camera.close()


def test_values_the_camera_cannot_take_are_refused_with_its_limits():
    library = SimulatedTucam("dhyana95")
    camera = TucsenCamera(library.functions)
    with pytest.raises(ConfigurationError, match="a Dhyana 95 V2 has gain modes HDR, High, Low, not 'CMS'"):
        camera.set_gain_mode("CMS")
    with pytest.raises(ConfigurationError, match="target temperature -60 degC is outside what a Dhyana 95 V2 "
                                                 "accepts: -50 to 50 degC"):
        camera.set_target_temperature(-60)
    with pytest.raises(ConfigurationError, match="fan gear must be one of high, medium, low, off"):
        camera.set_fan_gear("turbo")
    with pytest.raises(ConfigurationError, match="bit depth must be 8 or 16, got 12"):
        camera.set_bit_depth(12)
    acquirer = Acquirer(camera, StreamSender("tcp://127.0.0.1:*"))
    acquirer.update_settings(exposure=20.0, period=20.0)
    with pytest.raises(ConfigurationError, match=r"exposure 20.0 s is outside what a Dhyana 95 V2 accepts: "
                                                 r"2.1e-05 to 10 s"):
        acquirer.prepare()
    acquirer.update_settings(exposure=0.001, period=0.01)  # 100 frames/s: more than 2048 rows allow
    with pytest.raises(ConfigurationError, match=r"period 0.01 s is shorter than a Dhyana 95 V2 reads out a "
                                                 r"2048x2048 ROI: at most 24.0 frames/s"):
        acquirer.prepare()
    # What the Controller's Configure asks (CheckSettings): the same refusals, nothing armed.
    with pytest.raises(ConfigurationError, match=r"at most 24.0 frames/s, a period of at least 0.0417 s"):
        acquirer.check_settings(frame_count=5, exposure=0.001, period=0.01, trigger_mode="internal")
    with pytest.raises(ConfigurationError, match=r"exposure 20.0 s is outside what a Dhyana 95 V2 accepts"):
        acquirer.check_settings(exposure=20.0, period=20.0)
    acquirer.check_settings(exposure=0.001, period=0.05)
    acquirer.sender.close()
    camera.close()


def test_a_camera_without_frame_rate_control_says_which_trigger_mode_keeps_the_period():
    library = SimulatedTucam("dhyana95")
    camera = TucsenCamera(library.functions, 0, TucsenSettings(roi=ROI))
    library.fail_next("TUCAM_Prop_GetAttr", "TUCAMRET_NOT_SUPPORT")
    with pytest.raises(ConfigurationError, match=r"this Dhyana 95 V2 has no frame rate control \(TUCam "
                                                 r"TUCAM_Prop_GetAttr: TUCAMRET_NOT_SUPPORT .*"
                                                 r"use trigger mode software"):
        camera.prepare(AcquisitionSettings(3, 0.01, 0.05))
    camera.close()


def test_a_tucam_error_is_a_fault_with_the_calls_name_and_code():
    library = SimulatedTucam("dhyana400bsi")
    camera = TucsenCamera(library.functions, 0, TucsenSettings(roi=ROI))
    acquirer = Acquirer(camera, StreamSender("tcp://127.0.0.1:*"))
    library.fail_next("TUCAM_Cap_SetTrigger", "TUCAMRET_NOT_SUPPORT")
    with pytest.raises(DetectorError, match=r"TUCam TUCAM_Cap_SetTrigger: TUCAMRET_NOT_SUPPORT \(0x80000312\)"):
        acquirer.prepare()
    assert acquirer.state == states.FAULT and "TUCAMRET_NOT_SUPPORT" in acquirer.status
    acquirer.sender.close()
    camera.close()


def test_an_unplugged_camera_faults_mid_series_and_opens_again_once_back(tmp_path):
    library = SimulatedTucam("dhyana95", seed=1)

    def unplug_after_three_frames(acquirer):
        while acquirer.frames_acquired < 3:
            acquirer.wait(0.01)
        library.unplug()

    camera, acquirer, recorder, path = record(tmp_path, library, frames=200, while_running=unplug_after_three_frames)
    assert acquirer.state == states.FAULT
    # unplugged while waiting for a frame, or just before the call: the library's reason either way
    assert any(f"TUCAM_Buf_WaitForFrame: {code}" in acquirer.status
               for code in ("TUCAMRET_USB_STATUS_ERROR", "TUCAMRET_FAIL_READ_CAMERA")), acquirer.status
    with h5py.File(path, "r") as f:  # what came before is in the file
        assert f["entry/data/data"].shape[0] == acquirer.frames_acquired >= 3
        np.testing.assert_array_equal(f["entry/data/data"][2], library.frame(2))
    camera.close()
    with pytest.raises(DetectorConnectionLost, match="TUCam found 0 camera"):
        TucsenCamera(library.functions)
    library.plug_in()
    camera, acquirer, recorder, _ = record(tmp_path, library, frames=3)  # what Init does: open it again
    assert acquirer.state == states.ON and recorder.counters.frames_written == 3
    camera.close()


def test_a_stalled_sensor_is_a_fault_once_the_timeout_passes(tmp_path):
    library = SimulatedTucam("dhyana95")
    library.stall()
    camera, acquirer, _, _ = record(tmp_path, library, TucsenSettings(roi=ROI, timeout=0.3), frames=5)
    assert acquirer.state == states.FAULT and "no frame from the camera within" in acquirer.status
    camera.close()


def test_software_triggers_pace_the_frames_one_period_apart(tmp_path):
    library = SimulatedTucam("dhyana400bsi", seed=7)
    clock, period = SteppingClock(1 / 64), 4 / 64  # the camera's clock moves only as its loop reads it
    triggered = []
    do_software_trigger = library.functions.TUCAM_Cap_DoSoftwareTrigger

    def noting_the_time(*args):
        triggered.append(clock.now)
        return do_software_trigger(*args)

    library.functions.TUCAM_Cap_DoSoftwareTrigger = noting_the_time
    camera, acquirer, _, path = record(tmp_path, library, frames=5, period=period, trigger_mode="software",
                                       clock=clock)
    assert acquirer.state == states.ON and acquirer.frames_acquired == 5, acquirer.status
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["entry/data/data"][4], library.frame(4))
    # one trigger a period on the camera's clock, not as fast as the sensor goes, never a burst
    assert len(triggered) >= 5
    assert np.diff(triggered) == pytest.approx(period, abs=clock.step)
    camera.close()


@pytest.mark.parametrize("trigger_mode", ["external", "external_enable"])
def test_each_external_edge_takes_one_frame(tmp_path, trigger_mode):
    library = SimulatedTucam("dhyana95", seed=2)

    def three_edges(acquirer):
        wait_until(lambda: library.capturing, 30, what="the camera capturing (edges before it are not its own)")
        time.sleep(0.2)  # a camera that does not wait for an edge shows it here; load only delays its frames
        assert acquirer.frames_acquired == 0  # nothing without an edge
        for _ in range(3):
            library.fire_trigger(width=0.01)
            time.sleep(0.05)  # paces the edges

    camera, acquirer, _, path = record(tmp_path, library, frames=3, trigger_mode=trigger_mode,
                                       while_running=three_edges)
    assert acquirer.state == states.ON and acquirer.frames_acquired == 3, acquirer.status
    with h5py.File(path, "r") as f:
        for n in range(3):
            np.testing.assert_array_equal(f["entry/data/data"][n], library.frame(n))
    camera.close()


def test_stop_ends_the_capture_at_the_camera(tmp_path):
    library = SimulatedTucam("dhyana95")
    camera, acquirer, recorder, _ = record(tmp_path, library, frames=500, stop_after=3)
    assert acquirer.last_end_reason == "stopped" and 3 <= acquirer.frames_acquired < 500
    assert recorder.counters.frames_written == acquirer.frames_acquired
    assert not library.capturing  # TUCAM_Cap_Stop reached the camera
    camera.close()


def test_the_sensor_cools_towards_the_target_as_far_as_the_fan_allows():
    clock = ManualClock()
    library = SimulatedTucam("dhyana95", clock=clock)
    camera = TucsenCamera(library.functions, 0, TucsenSettings(target_temperature=-10, fan_gear="high"))
    clock.now = 2.0  # one time constant: a third of the way from 22 degC ambient to the target
    assert camera.sensor_temperature == pytest.approx(-10 + 32 * np.exp(-1), abs=0.1)
    clock.now = 60.0
    assert camera.sensor_temperature == pytest.approx(-10, abs=0.1)  # held: the high fan reaches -13
    assert camera.target_temperature == -10 and camera.fan_gear == "high"
    camera.set_fan_gear("low")  # air at low fan reaches 35 degC below ambient: -13, so -10 still holds
    assert camera.fan_gear == "low"
    camera.close()


def test_the_linux_library_is_bound_by_its_cpp_names_and_a_missing_one_is_explained():
    # the names Tucsen's Linux libTUCam exports (seen in its symbol table)
    assert mangled_name("TUCAM_Api_Init", PROTOTYPES["TUCAM_Api_Init"]) == "_Z14TUCAM_Api_InitP14_tagTUCAM_INITi"
    assert mangled_name("TUCAM_Buf_WaitForFrame", PROTOTYPES["TUCAM_Buf_WaitForFrame"]) == \
        "_Z22TUCAM_Buf_WaitForFrameP9_tagTUCAMP15_tagTUCAM_FRAMEi"
    assert mangled_name("TUCAM_Cap_Start", PROTOTYPES["TUCAM_Cap_Start"]) == "_Z15TUCAM_Cap_StartP9_tagTUCAMj"
    assert mangled_name("TUCAM_Cap_SetROI", PROTOTYPES["TUCAM_Cap_SetROI"]) == \
        "_Z16TUCAM_Cap_SetROIP9_tagTUCAM18_tagTUCAM_ROI_ATTR"
    with pytest.raises(ConfigurationError, match="cannot load the TUCam library 'libTUCam-absent.so'"):
        load_tucam_library("libTUCam-absent.so")


def waiting_through_a_long_exposure(tmp_path, library):
    """A series of 10 s exposures (TUCam waits that long in each WaitForFrame), once the first wait is on."""
    camera = TucsenCamera(library.functions, 0, TucsenSettings(roi=ROI))
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(camera, sender)
    recorder = Recorder(tmp_path)
    acquirer.update_settings(frame_count=3, exposure=10.0, period=10.0)
    recorder.arm(RecordingRequest(3, 1, acquirer.stream_endpoint, "long.h5"))
    acquirer.prepare()
    acquirer.start()
    wait_until(library.waiting_for_frame.is_set, 30, what="TUCam waiting for the first frame")
    return camera, sender, acquirer, recorder


def test_settings_read_while_capturing_do_not_wait_for_the_frame(tmp_path):
    library = SimulatedTucam("dhyana95")
    camera, sender, acquirer, recorder = waiting_through_a_long_exposure(tmp_path, library)
    waits_ended = len(library.frame_wait_endings)
    assert -40 < acquirer.camera.sensor_temperature < 30
    assert len(library.frame_wait_endings) == waits_ended  # read while that same wait went on
    acquirer.abort()
    assert acquirer.wait(30) and recorder.wait(30)
    sender.close()
    camera.close()


def test_abort_ends_a_long_exposure_at_once_through_tucams_abort_wait(tmp_path):
    library = SimulatedTucam("dhyana95")
    camera, sender, acquirer, recorder = waiting_through_a_long_exposure(tmp_path, library)
    acquirer.abort()
    assert acquirer.wait(30), "the acquisition did not end after the abort"
    assert list(library.frame_wait_endings) == ["abort"], "the wait inside TUCam ended otherwise than by AbortWait"
    assert acquirer.last_end_reason == "aborted" and not library.capturing
    assert recorder.wait(10)
    sender.close()
    camera.close()


@pytest.mark.parametrize("trigger_mode, width", [("external", 0.0), ("external_enable", 0.01)])
def test_pulses_on_the_trigger_line_give_one_frame_each_when_the_pulse_comes(tmp_path, trigger_mode, width):
    line = WatchedTriggerLine(f"ipc://{tmp_path}/run/omega.trigger")
    library = SimulatedTucam("dhyana95", seed=2, trigger_line=line.address)
    line.wait_for_inputs(1)
    camera = TucsenCamera(library.functions, 0, TucsenSettings(roi=ROI))
    try:
        with acquirer_and_recorder(tmp_path / "data", camera) as (acquirer, recorder):
            path = start_recorded_series(acquirer, recorder, trigger_mode, exposure=0.005, period=0.02)
            wait_until(lambda: library.capturing, 30, what="the camera capturing (edges before it are not its own)")
            times = [time.time() + 0.02 * i for i in range(3)]  # 3 of the 5 frames
            pulses = pulse_fewer_than_asked(line, acquirer, times, width)
            assert recorder.wait(30) and acquirer.state == states.ON
            # TUCam's frame carries no time: the driver stamps a frame when it is handed over, which the
            # simulator does at the end of the exposure the pulse started
            assert_recorded_frames_are_the_pulses(path, pulses, lambda n: library.frame(n, pulses[n].position),
                                                  offset=width or 0.005, atol=0.25)
    finally:
        line.close()
