"""The Controller refuses at Configure what would fail at Start, keeps its Status current, and
its final report follows the file a restarted Recorder repaired; the Acquirer does not wait for
a Recorder that is gone; a Recorder whose Start was undone is armed again at once."""

import json
import math

import pytest

from photonflow import states
from photonflow.acquisition.acquirer import Acquirer
from photonflow.control.controller import ACQUIRER, RECORDER
from photonflow.errors import ConfigurationError
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor
from photonflow.stream.transport import StreamSender
from tests.helpers.controller import start_series
from tests.helpers.fakes import EventLog


@pytest.mark.parametrize(
    "settings, complaint",
    [
        ({"exposure": math.nan}, "'exposure' must be a finite number of seconds, got nan"),
        ({"exposure": math.inf, "period": math.inf}, "'exposure' must be a finite number of seconds, got inf"),
        ({"period": math.inf}, "'period' must be a finite number of seconds, got inf"),
        ({"exposure": 1e-12}, "exposure must be between 1e-06 s and 3600.0 s, got 1e-12 s"),
        ({"frames": 2**31}, "'frames' must be at most 2147483647, got 2147483648"),
        ({"frames": 1e20}, "'frames' must be int, got 1e+20"),
        ({"trigger_mode": "gated"}, "trigger mode 'gated' is not supported; choose one of internal, software"),
    ],
)
def test_configure_refuses_what_the_acquirer_could_not_do_with_the_limits(rig, settings, complaint):
    controller = rig[0]
    with pytest.raises(ConfigurationError) as caught:
        controller.configure(json.dumps({"frames": 10, "exposure": 0.001, "period": 0.002, **settings}))
    assert complaint in str(caught.value)
    assert controller.request is None


def test_configure_refuses_json_nested_too_deeply(rig):
    with pytest.raises(ConfigurationError, match="nested too deeply"):
        rig[0].configure("[" * 100_000 + "]" * 100_000)


def test_the_status_follows_the_frames_written_during_a_series(rig):
    controller, acquirer, recorder, events, clock = rig
    start_series(controller, acquirer, frames=400)
    clock.now += 1
    controller.peer_counter_changed("frames_written", 123)
    assert events.states[-1] == (states.RUNNING, "Series 1 acquiring: 123 of 400 frames written.")


def test_the_report_follows_the_file_a_restarted_recorder_repaired(rig):
    controller, acquirer, recorder, events, clock = rig
    start_series(controller, acquirer, frames=400)
    controller.peer_counter_changed("frames_acquired", 152)
    acquirer.acquired, acquirer.current_state = 152, states.ALARM
    recorder.counters = lambda: (_ for _ in ()).throw(ConnectionError("the Recorder is not running"))
    recorder.current_state = states.UNKNOWN
    controller.peer_state_changed(RECORDER, states.UNKNOWN, "not running")
    controller.peer_state_changed(ACQUIRER, states.ALARM)
    assert controller.combined_state()[0] == states.FAULT
    # The Recorder is back: it repaired the file and reports what it holds.
    del recorder.counters
    recorder.numbers = {"frames_received": 147, "frames_written": 147, "missing_frames": 0}
    recorder.file, recorder.current_state = "/data/a.h5", states.ON
    controller.peer_state_changed(RECORDER, states.ON, "Repaired /data/a.h5")
    controller.peer_state_changed(ACQUIRER, states.ON)
    controller.tick()
    state, status = controller.combined_state()
    assert state == states.ALARM
    assert "acquired 152, received 147, written 147, missing 0" in status
    assert controller.counters.frames_written == 147


def test_an_acquirer_whose_recorder_is_gone_ends_the_series_in_alarm_and_is_ready_again():
    sender = StreamSender("tcp://127.0.0.1:*", high_water_mark=1, send_timeout=0.3)
    try:
        camera = SimulatedCamera(SimulatedSensor(height=64, width=64, seed=1))
        acquirer = Acquirer(camera, sender, EventLog(), counter_interval=0.0)
        acquirer.update_settings(frame_count=50, exposure=0.001, period=0.001)
        acquirer.prepare()
        acquirer.start()
        assert acquirer.wait(20)
        assert acquirer.state == states.ALARM
        assert "no receiver took the stream" in acquirer.status and "is the Recorder running?" in acquirer.status
        acquirer.prepare()  # ready for the next series without Init
        assert acquirer.state == states.STANDBY
    finally:
        sender.close()


def test_a_recorder_whose_start_was_undone_is_armed_again_at_once(tmp_path):
    sender = StreamSender("tcp://127.0.0.1:*")
    try:
        recorder = Recorder(tmp_path)
        recorder.arm(RecordingRequest(10, 1, sender.endpoint, "first.h5"))
        recorder.abort()  # what the Controller does when the Acquirer refuses its settings
        recorder.arm(RecordingRequest(10, 2, sender.endpoint, "second.h5"))
        assert recorder.state == states.RUNNING
        recorder.abort()
        assert recorder.wait(5)
    finally:
        sender.close()
