"""The pipeline on a real Tango database with every server as its own process."""

from __future__ import annotations

import json
import threading

import h5py
import numpy as np
import pytest
import tango

from tests.helpers.devices import (
    acquire,
    demo_frames,
    devfailed,
    proxy,
    wait_for_state,
    wait_until,
)
from tests.helpers.trigger_line import WatchedTriggerLine, assert_recorded_frames_are_the_pulses, pulsed_series

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def devices(running_suite):
    return running_suite


@pytest.fixture
def controller(devices):
    return proxy(devices.controller)


def test_500_frames_end_to_end_every_frame_equals_what_the_simulator_sent(devices, controller):
    state = acquire(controller, frames=500, exposure=0.001, period=0.002, file="e2e/five_hundred.h5")
    assert state == "ON", controller.status()
    assert (controller.FramesAcquired, controller.FramesReceived, controller.FramesWritten) == (500, 500, 500)
    assert controller.MissingFrames == 0 and controller.Progress == 100.0
    path = controller.LastFile
    assert path == str(devices.data_root / "e2e" / "five_hundred.h5")
    expected = demo_frames(devices, exposure=0.001, data_file=path)
    with h5py.File(path, "r") as f:
        data = f["entry/data/data"]
        assert data.shape == (500, 1065, 1030) and data.dtype == np.uint16
        for n in range(500):
            np.testing.assert_array_equal(data[n], expected.frame(n), err_msg=f"frame {n}")
        detector = f["entry/instrument/simulator"]
        assert detector["serial_number"][()] == b"SIM-DEMO-1"
        # it followed the demo beamline: detz at 120 mm, 20 keV, a ring current just under nominal
        assert detector["distance"][()] == pytest.approx(0.120)
        assert detector["detector_specific/incident_wavelength"][()] == pytest.approx(12.398419843320026 / 20 * 1e-10)
        assert 0.99 < detector["detector_specific/beam_intensity_scale"][()] < 1.0
        assert f["entry/accounting/frames_written"][()] == 500


def test_controller_counters_and_state_arrive_as_change_events(controller):
    written, states_seen = [], []
    done = threading.Event()

    def on_written(event):
        if not event.err:
            written.append(event.attr_value.value)
            if event.attr_value.value == 60:
                done.set()

    def on_state(event):
        if not event.err:
            states_seen.append(str(event.attr_value.value))

    ids = [
        controller.subscribe_event("FramesWritten", tango.EventType.CHANGE_EVENT, on_written),
        controller.subscribe_event("State", tango.EventType.CHANGE_EVENT, on_state),
    ]
    try:
        acquire(controller, frames=60, exposure=0.005, period=0.02)
        assert done.wait(10), written
        # the polled state is ON; its event may still be on its way to this subscriber
        wait_until(lambda: states_seen and states_seen[-1] == "ON", timeout=10, what=f"the ON event ({states_seen})")
    finally:
        for event_id in ids:
            controller.unsubscribe_event(event_id)
    assert "RUNNING" in states_seen and states_seen[-1] == "ON"
    progress = [value for value in written if 0 < value < 60]
    assert progress, f"no intermediate counter events: {written}"
    assert progress == sorted(progress)


@pytest.mark.parametrize(
    "settings, reason, advice",
    [
        ({"frames": -3, "exposure": 0.001, "period": 0.002}, "InvalidConfiguration", "'frames' must be at least 1, got -3"),
        ({"frames": 3, "exposure": 0.001, "period": 0.002, "gain": 2}, "UnknownConfigurationKey", "unknown key(s) gain"),
        ({"frames": 3, "exposure": 0.01, "period": 0.002}, "InvalidConfiguration", "shorter than 'exposure'"),
        ({"frames": 3, "exposure": 0.001, "period": 0.002, "file": "/etc/evil.h5"}, "FileOutsideDataRoot", "outside the data root"),
    ],
)
def test_configure_refuses_bad_input_with_reason_and_advice(controller, settings, reason, advice):
    error = devfailed(controller.Configure, json.dumps(settings))
    assert error.reason == reason
    assert advice in error.desc


def test_an_existing_file_is_refused_and_kept(devices, controller):
    existing = devices.data_root / "kept" / "precious.h5"
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_bytes(b"earlier data")
    error = devfailed(controller.Configure, json.dumps({"frames": 2, "exposure": 0.001, "period": 0.002, "file": "kept/precious.h5"}))
    assert error.reason == "FileExists" and "never overwrites" in error.desc
    recorder = proxy(devices.recorder)
    arm = json.dumps({"frames": 2, "series_id": 1, "endpoint": "tcp://127.0.0.1:1", "file": "kept/precious.h5"})
    assert devfailed(recorder.Arm, arm).reason == "FileExists"
    assert existing.read_bytes() == b"earlier data"
    assert str(recorder.state()) in ("ON", "ALARM")


def test_acquirer_attributes_refuse_values_outside_their_limits(devices):
    acquirer = proxy(devices.acquirer)
    error = devfailed(acquirer.write_attribute, "TriggerMode", "software")  # it has external ones, on its cable
    assert "trigger mode 'software' is not supported; choose one of internal" in error.desc
    error = devfailed(acquirer.write_attribute, "Exposure", -1.0)
    assert "min" in error.desc.lower() or "below" in error.desc.lower()
    assert acquirer.TriggerMode == "internal"


def test_start_without_the_recorder_agreeing_leaves_everything_idle(devices, controller):
    wait_for_state(controller, "ON", "ALARM")
    controller.Configure(json.dumps({"frames": 2, "exposure": 0.001, "period": 0.002, "file": "race/late.h5"}))
    late = devices.data_root / "race" / "late.h5"
    late.parent.mkdir(parents=True, exist_ok=True)
    late.write_bytes(b"created after Configure")
    assert devfailed(controller.Start).reason == "FileExists"
    assert str(proxy(devices.acquirer).state()) == "ON"
    assert late.read_bytes() == b"created after Configure"


def test_frames_lost_between_acquirer_and_recorder_raise_alarm_with_the_numbers(devices, controller):
    wait_for_state(controller, "ON", "ALARM")
    controller.Configure(json.dumps({"frames": 400, "exposure": 0.001, "period": 0.01, "file": "lost/partial.h5"}))
    controller.Start()
    recorder = proxy(devices.recorder)
    wait_until(lambda: recorder.FramesWritten >= 10, what="first frames written")
    recorder.Stop()  # the Recorder leaves mid-series; the Acquirer keeps acquiring
    wait_for_state(recorder, "ON", "ALARM")
    wait_until(lambda: proxy(devices.acquirer).FramesAcquired > recorder.FramesWritten, what="frames acquired unrecorded")
    controller.Abort()
    assert wait_for_state(controller, "ALARM") == "ALARM"
    status = controller.status()
    assert f"acquired {controller.FramesAcquired}" in status and f"written {controller.FramesWritten}" in status
    assert controller.FramesAcquired > controller.FramesWritten
    with h5py.File(devices.data_root / "lost" / "partial.h5", "r") as f:  # still a valid file
        assert f["entry/accounting/end_reason"][()] == b"stopped"
        assert f["entry/data/data"].shape[0] == f["entry/accounting/frames_written"][()]


def test_the_controller_recovers_when_a_peer_restarts(devices, controller):
    wait_for_state(controller, "ON", "ALARM")
    server = next(s for s in devices.deployment.servers if s.executable == "PhotonflowRecorder")
    devices.suite.kill(server.name)
    wait_for_state(controller, "FAULT", timeout=40)
    assert "recorder is unreachable" in controller.status()
    devices.suite.start_server(server)
    wait_for_state(controller, "ON", "ALARM", timeout=40)
    assert acquire(controller, frames=5, exposure=0.001, period=0.002) == "ON"
    assert controller.FramesWritten == 5


def test_live_preview_and_fan_out_follow_the_series(devices, controller):
    import zmq

    from photonflow.stream.stins import DataMessage, decode

    recorder = proxy(devices.recorder)
    viewer = zmq.Context.instance().socket(zmq.SUB)
    viewer.setsockopt(zmq.SUBSCRIBE, b"")
    viewer.setsockopt(zmq.LINGER, 0)
    joined = viewer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    viewer.connect(recorder.FanOutEndpoint)
    previews = []
    event_id = recorder.subscribe_event(
        "Preview", tango.EventType.CHANGE_EVENT,
        lambda event: previews.append(event.attr_value.value) if not event.err else None,
    )
    try:
        wait_until(lambda: recorder.FanOutFramesForwarded >= 0, what="fan-out attribute")
        # a SUB socket only gets what is published after it has joined: its subscription goes out
        # once the connection's handshake is done, long before a series has started
        assert joined.poll(30_000), "the viewer never joined the fan-out"
        viewer.disable_monitor()
        assert acquire(controller, frames=50, exposure=0.001, period=0.02) == "ON"
        received = {}
        while viewer.poll(2000):
            message = decode(viewer.recv_multipart())
            if isinstance(message, DataMessage):
                received[message.frame_number] = message.to_array().copy()
            elif message.__class__.__name__ == "SeriesEnd":
                break
    finally:
        recorder.unsubscribe_event(event_id)
        joined.close()
        viewer.close()
    assert sorted(received) == [0, 10, 20, 30, 40]
    expected = demo_frames(devices, exposure=0.001, data_file=controller.LastFile)
    for number, frame in received.items():
        np.testing.assert_array_equal(frame, expected.frame(number))
    images = [image for image in previews if image is not None and image.size]
    assert images, "no live preview event"
    assert images[-1].shape[0] * images[-1].shape[1] <= 512 * 512
    assert recorder.PreviewFrameNumber >= 0


def test_a_series_split_over_data_files_through_the_controller(devices, controller):
    recorder = proxy(devices.recorder)
    assert recorder.QueueCapacity == 256 and recorder.QueueDepth == 0  # idle: nothing waits for the disk
    assert recorder.QueueCapacityMegabytes == 512 and recorder.QueueDepthMegabytes == 0
    recorder.FramesPerFile = 100
    try:
        state = acquire(controller, frames=250, exposure=0.001, period=0.002, file="split/series.h5")
    finally:
        recorder.FramesPerFile = 0
    assert state == "ON", controller.status()
    data_files = sorted(p.name for p in (devices.data_root / "split").glob("series_data_*.h5"))
    assert data_files == ["series_data_000001.h5", "series_data_000002.h5", "series_data_000003.h5"]
    expected = demo_frames(devices, exposure=0.001, data_file=devices.data_root / "split" / "series.h5")
    with h5py.File(devices.data_root / "split" / "series.h5", "r") as f:
        data = f["entry/data/data"]
        assert data.is_virtual and data.shape == (250, 1065, 1030)
        for n in (0, 99, 100, 199, 200, 249):
            np.testing.assert_array_equal(data[n], expected.frame(n), err_msg=f"frame {n}")
    error = devfailed(recorder.write_attribute, "FramesPerFile", -1)
    assert "min" in error.desc.lower() or "below" in error.desc.lower()


def test_an_external_series_has_a_frame_per_pulse_stamped_with_the_pulses_time(devices, controller, tmp_path):
    acquirer = proxy(devices.acquirer)
    line = WatchedTriggerLine(f"ipc://{tmp_path}/omega.trigger")  # the test is the pulse generator
    cabled = acquirer.get_property("SimulationTriggerInput")["SimulationTriggerInput"]
    acquirer.put_property({"SimulationTriggerInput": [line.address]})
    acquirer.Init()
    try:
        line.wait_for_inputs(1)
        state, pulses = pulsed_series(controller, acquirer, line, spacing=0.02, frames=5, exposure=0.001,
                                      period=0.002, trigger_mode="external", file="e2e/pulses.h5")
        assert state == "ON", controller.status()
        assert "5 of 5 frames acquired" in acquirer.status()
        path = devices.data_root / "e2e" / "pulses.h5"
        expected = demo_frames(devices, exposure=0.001, data_file=path)
        # the simulated detector stamps the end of each exposure: its pulse's edge + the exposure
        assert_recorded_frames_are_the_pulses(path, pulses, expected.frame, offset=0.001)
    finally:
        acquirer.put_property({"SimulationTriggerInput": list(cabled)})
        acquirer.Init()
        line.close()
