"""Sardana's synchronization description, as a continuous scan (ascanct) gives it to a
trigger/gate controller, becomes one Arm of photonflow's position-compare: the position domain's
initial position, signed step and repeats, the active time as the pulse width."""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("sardana")

from sardana.pool.pooldefs import SynchDomain, SynchParam

from tests.helpers.paths import REPOSITORY

CONTROLLER = REPOSITORY / "clients" / "sardana" / "controllers" / "PhotonflowPositionCompareCtrl.py"


@pytest.fixture(scope="module")
def arm_settings():
    spec = importlib.util.spec_from_file_location("PhotonflowPositionCompareCtrl", CONTROLLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.arm_settings


def ascanct(start, end, intervals, integration, latency=0.0, acceleration_time=0.25):
    """The description Sardana's CTScan builds for ``ascanct motor start end intervals
    integration`` (sardana 3.7 gscan.CTScan._go_through_waypoints, the last point included)."""
    points = intervals + 1
    step = (end - start) / intervals
    velocity = abs(step) / (integration + latency)
    run_up = velocity * acceleration_time / 2
    return [{
        SynchParam.Delay: {SynchDomain.Time: acceleration_time, SynchDomain.Position: run_up},
        SynchParam.Initial: {SynchDomain.Position: start},
        SynchParam.Active: {SynchDomain.Position: velocity * integration * (1 if step > 0 else -1),
                            SynchDomain.Time: integration},
        SynchParam.Total: {SynchDomain.Position: (end + step - start) / points,
                           SynchDomain.Time: abs(step) / velocity},
        SynchParam.Repeats: points,
    }]


def test_an_ascanct_arms_one_pulse_per_point_at_start_plus_i_steps(arm_settings):
    settings = arm_settings(ascanct(0, 18, 180, 0.01, latency=0.002))
    assert settings == {"start": 0.0, "step": pytest.approx(0.1), "count": 181, "width": 0.01}


def test_a_scan_down_arms_a_negative_step_from_its_start(arm_settings):
    settings = arm_settings(ascanct(10, 5, 10, 0.1, latency=0.01))
    assert settings["start"] == 10.0 and settings["step"] == pytest.approx(-0.5) and settings["count"] == 11


def test_pulses_as_long_as_their_interval_are_shortened_to_half_of_it_so_they_never_overlap(arm_settings):
    """No latency time: each point's active time fills its interval; the detector, triggered on
    the rising edge, exposes for its own exposure time."""
    settings = arm_settings(ascanct(0, 18, 180, 0.01))
    assert settings["width"] == pytest.approx(0.005)


def test_a_synchronization_in_time_only_is_refused_naming_the_continuous_scan_to_use(arm_settings):
    timescan = [{SynchParam.Delay: {SynchDomain.Time: 0}, SynchParam.Active: {SynchDomain.Time: 0.1},
                 SynchParam.Total: {SynchDomain.Time: 0.1}, SynchParam.Repeats: 10}]
    with pytest.raises(ValueError, match="fires on its motor's positions.*ascanct"):
        arm_settings(timescan)


def test_two_groups_are_refused(arm_settings):
    with pytest.raises(ValueError, match="one group of equidistant positions, got 2"):
        arm_settings(ascanct(0, 1, 10, 0.1) * 2)
