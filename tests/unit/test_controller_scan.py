"""The Controller running continuous scans, with plain-Python peers: the beamline simulator's motor
model, a trigger generator it drives, an Acquirer that takes a frame per pulse, on a test clock."""

import json

import pytest

from photonflow import states
from photonflow.errors import ConfigurationError
from tests.helpers.scan import recorder_closes, scanning_controller_rig

SCAN = {"frames": 100, "exposure": 0.001, "period": 0.002, "file": "omega.h5",
        "scan": {"axis": "omega", "start": 0.0, "step": 0.1}}


def configure(controller, **changes):
    return controller.configure(json.dumps({**SCAN, **changes}))


def test_a_scan_is_planned_at_configure_and_triggers_externally_by_default():
    controller, *_ = scanning_controller_rig()
    request = configure(controller)
    assert request.trigger_mode == "external"
    configuration = controller.configuration()
    assert configuration["scan"] == {"axis": "omega", "start": 0.0, "step": 0.1}
    assert configuration["trigger_mode"] == "external"
    assert configuration["scan_plan"]["velocity"] == pytest.approx(50.0)
    assert configuration["scan_plan"]["unit"] == "deg"
    json.dumps(configuration)  # what the Configuration attribute shows


def test_a_scan_too_fast_for_the_motor_is_refused_at_configure_with_the_limit():
    controller, *_ = scanning_controller_rig()
    with pytest.raises(ConfigurationError, match="needs 100 deg/s, above its maximum 90 deg/s: take a period of "
                                                 "at least 0.0023 s or a step of at most 0.18 deg"):
        configure(controller, scan={"axis": "omega", "start": 0.0, "step": 0.2})
    assert controller.request is None and controller.plan is None  # nothing of it kept


@pytest.mark.parametrize("changes, refusal", [
    ({"trigger_mode": "internal"}, "'trigger_mode' must be external or external_enable, got 'internal'"),
    ({"scan": {"axis": "phi", "start": 0.0, "step": 0.1}}, "'scan.axis' 'phi' is not a scan axis of this "
                                                           "Controller; its scan axes: omega"),
    ({"scan": {"axis": "omega", "start": 0.0, "step": 0}}, "'scan.step' must not be 0"),
    ({"scan": {"axis": "omega", "start": 0.0}}, "missing key 'scan.step'"),
    ({"scan": {"axis": "omega", "start": 0.0, "step": 0.1, "speed": 3}}, "unknown key.* scan.speed"),
    ({"scan": [0.0, 0.1]}, "'scan' must be a JSON object"),
])
def test_a_scan_the_controller_cannot_run_is_refused_naming_the_key(changes, refusal):
    controller, *_ = scanning_controller_rig()
    with pytest.raises(ConfigurationError, match=refusal):
        configure(controller, **changes)


def test_a_series_without_a_scan_is_unchanged():
    controller, _, _, acquirer, recorder, journal, _ = scanning_controller_rig()
    request = controller.configure(json.dumps({"frames": 5, "exposure": 0.001, "period": 0.002}))
    assert request.trigger_mode == "internal" and request.rotation is None and controller.plan is None
    controller.start()
    assert journal == [("recorder.arm", 5), ("acquirer.configure", "internal", None), "acquirer.start"]


def test_start_runs_the_scan_in_order_and_the_series_ends_on_with_the_pulses_counted():
    controller, motor, generator, acquirer, recorder, journal, _ = scanning_controller_rig()
    configure(controller)
    controller.start()
    plan = controller.plan
    assert journal == [
        ("motor.move_to", plan.run_up_start),
        ("generator.arm", 0.0, 0.1, 100, 0.001),
        ("recorder.arm", 100),
        ("acquirer.configure", "external", {"axis": "omega", "start": 0.0, "increment": 0.1}),
        "acquirer.start",
        ("motor.set_velocity", pytest.approx(50.0)),
        ("motor.move_to", plan.run_down_end),
        ("motor.set_velocity", 30.0),
        "generator.disarm",
    ]
    assert controller.combined_state()[0] == states.RUNNING  # the Recorder still writes
    recorder_closes(controller, acquirer, recorder)
    state, status = controller.combined_state()
    assert state == states.ON, status
    assert "requested 100, pulses 100, acquired 100, received 100, written 100" in status
    assert controller.scan_outcome.captured_positions[99] == pytest.approx(9.9)
    assert controller.counters.last_file == "/data/omega.h5"


def test_a_generator_that_stops_halfway_ends_alarm_with_the_counts_and_the_frames_kept():
    controller, motor, generator, acquirer, recorder, journal, _ = scanning_controller_rig(fail_after=37)
    configure(controller)
    controller.start()
    assert "acquirer.stop" in journal and "recorder.abort" not in journal  # the file is closed normally
    recorder_closes(controller, acquirer, recorder)
    state, status = controller.combined_state()
    assert state == states.ALARM
    where = f"{round(controller.plan.run_down_end, 4):g}"
    assert f"the trigger generator sent 37 of 100 pulses; omega stopped at {where} deg" in status
    report = controller.last_report
    assert (report.pulses_sent, report.frames_acquired, report.frames_written) == (37, 37, 37)
    assert report.file == "/data/omega.h5"


def test_a_motor_that_stops_halfway_ends_alarm_naming_where_it_stopped():
    rig = []

    def stall(now):
        motor = rig[0]
        if motor.position() > 3.7 and motor.model.moving and motor.model.velocity > 40:
            motor.model.stop()
    controller, motor, generator, acquirer, recorder, journal, _ = scanning_controller_rig(then=stall)
    rig.append(motor)
    configure(controller)
    controller.start()
    recorder_closes(controller, acquirer, recorder)
    state, status = controller.combined_state()
    sent = controller.last_report.pulses_sent
    assert state == states.ALARM and 37 <= sent < 100
    assert f"the trigger generator sent {sent} of 100 pulses; omega stopped at {round(motor.position(), 4):g} deg" \
        in status


def test_a_captured_position_more_than_5_percent_of_the_step_off_ends_alarm():
    controller, motor, generator, acquirer, recorder, *_ = scanning_controller_rig(
        error=lambda index: -0.0075 if index == 40 else 0.0)
    configure(controller)
    controller.start()
    recorder_closes(controller, acquirer, recorder)
    state, status = controller.combined_state()
    assert state == states.ALARM
    assert "pulse 40 captured omega at 3.9925 deg, 7.5% of the 0.1 deg step from 4 deg" in status


def test_fewer_frames_than_pulses_ends_alarm():
    controller, motor, generator, acquirer, recorder, *_ = scanning_controller_rig(frames_limit=90)
    configure(controller)
    controller.start()
    recorder_closes(controller, acquirer, recorder)
    state, status = controller.combined_state()
    assert state == states.ALARM and "the detector took 90 frames of the 100 pulses sent" in status


def test_abort_stops_the_motor_disarms_the_generator_and_aborts_both_peers():
    controllers = []

    def abort_midway(now):
        controller, motor = controllers[0]
        if motor.position() > 5.0 and controller.busy and "motor.stop" not in controller_journal:
            controller.abort()
    controller, motor, generator, acquirer, recorder, controller_journal, _ = scanning_controller_rig(
        then=abort_midway)
    controllers.append((controller, motor))
    configure(controller)
    controller.start()
    assert {"motor.stop", "generator.disarm", "acquirer.abort", "recorder.abort"} <= {
        entry for entry in controller_journal if isinstance(entry, str)}
    assert motor.model.target < controller.plan.end and not generator.active  # braking, short of the end
    assert motor.velocity() == 30.0
    assert controller.combined_state()[0] != states.RUNNING
    assert "failed" not in controller.combined_state()[1]  # an Abort is the operator's, not a scan problem


def test_a_scan_that_fails_before_the_detectors_start_is_a_failed_start_with_nothing_armed():
    controller, motor, generator, acquirer, recorder, journal, _ = scanning_controller_rig()

    def refuse(*_):
        raise ConfigurationError("'width' must be a positive number")
    generator.arm = refuse
    configure(controller)
    controller.start()
    state, status = controller.combined_state()
    assert state == states.FAULT
    assert status == "Start failed: the omega scan: 'width' must be a positive number"
    assert not any(entry[0] == "recorder.arm" for entry in journal if isinstance(entry, tuple))
    assert "motor.stop" in journal and not controller.busy


def test_stop_before_the_first_frame_leaves_the_controller_ready_with_nothing_armed():
    controllers = []

    def stop_on_the_way(now):
        controller, motor = controllers[0]
        if motor.position() < -2.0 and "acquirer.stop" not in journal:
            controller.stop()
    controller, motor, generator, acquirer, recorder, journal, _ = scanning_controller_rig(then=stop_on_the_way)
    controllers.append((controller, motor))
    configure(controller)
    controller.start()
    assert "motor.stop" in journal and not any(isinstance(entry, tuple) and entry[0] == "recorder.arm"
                                               for entry in journal)
    assert controller.combined_state() == (states.ON, "Configured; ready to Start.")


def test_scan_axes_are_read_from_the_property_and_a_malformed_entry_names_it():
    from photonflow.devices.controller import parse_scan_axes

    assert parse_scan_axes(["omega demo/beamline/omega demo/beamline/omega_pcomp"]) == {
        "omega": ("demo/beamline/omega", "demo/beamline/omega_pcomp")}
    with pytest.raises(ConfigurationError, match="property ScanAxes: 'omega demo/beamline/omega' must be "
                                                 "'<axis> <motor device> <position-compare device>'"):
        parse_scan_axes(["omega demo/beamline/omega"])
    with pytest.raises(ConfigurationError, match="names the axis 'omega' twice"):
        parse_scan_axes(["omega a/b/c a/b/d", "omega a/b/e a/b/f"])
