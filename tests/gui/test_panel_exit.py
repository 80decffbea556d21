"""Operators end a panel with Ctrl-C or SIGTERM as often as by closing it: each must be a clean
exit, status 0, never a crash (before: "double free or corruption" or a segmentation fault in 3 of
4 SIGTERMs, and Ctrl-C did nothing). The panels run as their own processes on the demo suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
CRASH_WORDS = ("corruption", "Segmentation", "Aborted", "core dumped", "Traceback")


def open_panel(running_suite, command: list[str]) -> subprocess.Popen:
    """A panel process, offscreen, once it says its window is shown."""
    env = {**os.environ, "TANGO_HOST": running_suite.tango_host, "QT_QPA_PLATFORM": "offscreen"}
    process = subprocess.Popen([str(BIN / command[0]), *command[1:]], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line.startswith(f"{command[0]}: showing"):
        process.kill()
        raise AssertionError(f"{command} did not show its window: {line!r} {process.communicate()[1][-2000:]}")
    return process


def ended(process: subprocess.Popen) -> tuple[int, str]:
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError("the panel did not end within 30 s of the signal") from None
    return process.returncode, stderr


@pytest.mark.parametrize("kills", [10])
def test_a_controller_panel_killed_ten_times_with_sigterm_exits_cleanly_each_time(running_suite, kills):
    for _ in range(kills):
        process = open_panel(running_suite, ["photonflow-panel", running_suite.deployment.device(
            "PhotonflowController").name])
        process.send_signal(signal.SIGTERM)
        status, stderr = ended(process)
        assert status == 0 and not any(word in stderr for word in CRASH_WORDS), (status, stderr[-2000:])


@pytest.mark.parametrize("command", [["photonflow-panel"], ["photonflow-beamline", "--prefix", "demo/beamline"]])
def test_ctrl_c_closes_a_panel(running_suite, command):
    if command == ["photonflow-panel"]:
        command = [*command, running_suite.deployment.device("PhotonflowController").name]
    process = open_panel(running_suite, command)
    process.send_signal(signal.SIGINT)
    status, stderr = ended(process)
    assert status == 0 and not any(word in stderr for word in CRASH_WORDS), (status, stderr[-2000:])


def test_make_panel_follows_the_deployment_and_finds_the_running_suites_database(running_suite, tmp_path):
    """``make panel DETECTOR=…`` passes the deployment: the panel opens that deployment's Controller,
    on the database of the suite ``make up`` started (its var/run/suite.json), with no TANGO_HOST."""
    from tests.helpers.paths import DEMO_CONFIG

    running_suite.suite.save(tmp_path / "run" / "suite.json")
    env = {key: value for key, value in os.environ.items() if key != "TANGO_HOST"}
    env.update(PHOTONFLOW_VAR=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    process = subprocess.Popen([str(BIN / "photonflow-panel"), "--config", str(DEMO_CONFIG)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    status, stderr = ended(process)
    controller = running_suite.deployment.device("PhotonflowController").name
    assert line.strip() == f"photonflow-panel: showing {controller}", (line, stderr[-2000:])
    assert status == 0, stderr[-2000:]
