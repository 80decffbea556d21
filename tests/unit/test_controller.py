"""The Controller's sequencing, combined state and integrity check, with plain-Python peers."""

import json

import pytest

from photonflow import states
from photonflow.control.controller import ACQUIRER, RECORDER, REPORT_RETRY_INTERVAL, parse_request
from photonflow.errors import ConfigurationError, FilePathError, StateError
from tests.helpers.controller import finish_series, start_series


def test_start_arms_the_recorder_before_the_acquirer_starts(rig):
    controller, acquirer, recorder, events, _ = rig
    start_series(controller, acquirer)
    assert recorder.calls == [("arm", 10, 1, "tcp://127.0.0.1:5000", "a.h5", "stins")]
    assert acquirer.calls == [("configure", 10, 1), "prepare", "start"]
    assert controller.combined_state()[0] == states.RUNNING


def test_a_complete_series_ends_on_with_the_numbers(rig):
    controller, acquirer, recorder, events, _ = rig
    start_series(controller, acquirer)
    finish_series(controller, acquirer, recorder, 10, 10, 10)
    state, status = controller.combined_state()
    assert state == states.ON
    assert "acquired 10, received 10, written 10, missing 0" in status
    assert events.counters[-1].frames_written == 10 and events.counters[-1].progress == 100.0


def test_a_difference_between_the_counts_is_an_alarm_with_the_numbers(rig):
    controller, acquirer, recorder, _, _ = rig
    start_series(controller, acquirer)
    finish_series(controller, acquirer, recorder, 10, 9, 9, missing=1)
    state, status = controller.combined_state()
    assert state == states.ALARM
    assert "acquired 10, received 9, written 9, missing 1" in status


def test_the_series_is_not_over_while_the_recorder_still_writes(rig):
    controller, acquirer, recorder, _, clock = rig
    start_series(controller, acquirer)
    acquirer.current_state = states.ON
    controller.peer_state_changed(ACQUIRER, states.ON)
    assert controller.combined_state()[0] == states.RUNNING
    clock.now = 4.9
    controller.tick()
    assert controller.combined_state()[0] == states.RUNNING and "stop" not in recorder.calls


def test_a_recorder_that_never_sees_the_end_is_stopped_after_the_timeout(rig):
    controller, acquirer, recorder, _, clock = rig
    start_series(controller, acquirer)
    acquirer.acquired = 10
    acquirer.current_state = states.ON
    controller.peer_state_changed(ACQUIRER, states.ON)
    recorder.numbers = {"frames_received": 7, "frames_written": 7, "missing_frames": 0}
    clock.now = 5.1
    controller.tick()
    assert "stop" in recorder.calls
    assert controller.combined_state()[0] == states.ALARM


def test_a_peer_fault_is_the_controllers_fault_with_the_peers_reason(rig):
    controller, *_ = rig
    controller.peer_state_changed(RECORDER, states.FAULT, "cannot write /data/x.h5: No space left on device")
    state, status = controller.combined_state()
    assert state == states.FAULT and "No space left on device" in status
    controller.peer_state_changed(RECORDER, states.ON, "idle")
    assert controller.combined_state()[0] == states.ON


def test_an_unreachable_peer_is_a_fault_until_it_returns(rig):
    controller, *_ = rig
    controller.peer_unreachable(ACQUIRER, "API_EventTimeout")
    assert controller.combined_state() == (states.FAULT, "The acquirer is unreachable: API_EventTimeout")
    controller.peer_state_changed(ACQUIRER, states.ON, "idle")
    assert controller.combined_state()[0] == states.ON


def test_a_failed_prepare_faults_and_releases_the_recorder(rig):
    controller, acquirer, recorder, events, _ = rig
    acquirer.fail_prepare = "camera not cooled"
    controller.configure(json.dumps({"frames": 1, "exposure": 0.001, "period": 0.002}))
    controller.start()
    events.wait_for_state(states.FAULT)
    assert "camera not cooled" in controller.combined_state()[1]
    assert "abort" in recorder.calls


def test_a_refused_acquirer_setting_releases_the_recorder_and_keeps_the_series_id(rig):
    controller, acquirer, recorder, _, _ = rig

    def refuse(request, series_id):
        raise ConfigurationError("trigger mode 'gate' is not supported")

    acquirer.configure = refuse
    controller.configure(json.dumps({"frames": 1, "exposure": 0.001, "period": 0.002}))
    with pytest.raises(ConfigurationError, match="'gate'"):
        controller.start()
    assert "abort" in recorder.calls and controller.series_id == 0
    assert controller.combined_state()[0] == states.ON


def test_start_needs_a_configuration_and_refuses_a_second_start(rig):
    controller, acquirer, *_ = rig
    with pytest.raises(StateError, match="call Configure"):
        controller.start()
    start_series(controller, acquirer)
    with pytest.raises(StateError, match="while a series is running"):
        controller.start()
    with pytest.raises(StateError):
        controller.configure('{"frames": 1, "exposure": 1, "period": 1}')


def test_abort_stops_both_peers(rig):
    controller, acquirer, recorder, _, _ = rig
    start_series(controller, acquirer)
    controller.abort()
    assert "abort" in acquirer.calls and "abort" in recorder.calls
    assert controller.combined_state()[0] in (states.ON, states.ALARM)


@pytest.mark.parametrize("given, armed", [({}, True), ({"blissdata_scan": False}, False)])
def test_a_scan_engines_series_is_armed_to_be_left_out_of_blissdata(rig, given, armed):
    """Sardana's controller says its series are in its own blissdata scan: the Recorder is told."""
    controller, acquirer, recorder, _, _ = rig
    controller.configure(json.dumps({"frames": 2, "exposure": 0.001, "period": 0.002, **given}))
    controller.start()
    assert acquirer.started.wait(5)
    assert recorder.blissdata_scan is armed
    assert json.loads(json.dumps(controller.request.describe()))["blissdata_scan"] is armed


def test_configure_checks_the_file_with_the_recorder(rig):
    controller, *_ = rig
    with pytest.raises(FilePathError, match="outside the data root"):
        controller.configure(json.dumps({"frames": 1, "exposure": 0.1, "period": 0.1, "file": "/etc/x.h5"}))
    assert controller.request is None


@pytest.mark.parametrize(
    "request_text, complaint",
    [
        ("{", "Configure needs a JSON object"),
        ('{"frames": -5, "exposure": 0.001, "period": 0.002}', "'frames' must be at least 1, got -5"),
        ('{"frames": 5, "exposure": 0.001, "period": 0.002, "speed": 3}', "unknown key(s) speed"),
        ('{"frames": 5, "exposure": 0.01, "period": 0.002}', "'period' (0.002 s) is shorter than 'exposure'"),
        ('{"frames": 5, "exposure": 0, "period": 0.002}', "'exposure' must be a positive number"),
        ('{"frames": 5.5, "exposure": 0.001, "period": 0.002}', "'frames' must be int"),
        ('{"exposure": 0.001, "period": 0.002}', "missing key 'frames'"),
        ('[1]', "JSON object of settings"),
    ],
)
def test_configure_explains_every_bad_value(request_text, complaint):
    with pytest.raises(ConfigurationError) as caught:
        parse_request(request_text)
    assert complaint in str(caught.value)


def test_a_peer_whose_events_broke_is_asked_directly_until_it_answers(rig):
    """Tango may deliver no further event of a peer whose subscription failed while the peer started
    (API_ZmqFailed under load): the watchdog asks such a peer itself, every REPORT_RETRY_INTERVAL s
    of the clock, and the FAULT clears once the peer answers."""
    controller, acquirer, recorder, events, clock = rig
    asked = []

    def down():
        asked.append(clock.now)
        raise RuntimeError("API_CantConnectToDevice")

    recorder.state = down
    controller.peer_unreachable(RECORDER, "API_ZmqFailed: Failed to create connection to event!")
    controller.tick()
    assert controller.combined_state() == (
        states.FAULT, "The recorder is unreachable: API_ZmqFailed: Failed to create connection to event!")
    clock.now += REPORT_RETRY_INTERVAL / 2
    controller.tick()
    assert asked == [0.0]  # not asked again before the interval
    del recorder.state  # the class's own: the Recorder answers, ON
    clock.now += REPORT_RETRY_INTERVAL / 2
    controller.tick()
    assert controller.combined_state() == (states.ON, "Ready: Configure the acquisition, then Start.")
    assert events.states[-1] == (states.ON, "Ready: Configure the acquisition, then Start.")
