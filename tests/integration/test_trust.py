"""The suite under hostile and unlucky use, on its own database with servers as processes:
ready when started, listening on loopback only, refusing bad values at the door with a reason,
recovering from a Recorder killed mid-series without an operator, and Init under load."""

from __future__ import annotations

import json
import math
import os

import h5py
import psutil
import pytest
import tango

from tests.helpers.devices import acquire, devfailed, proxy, running_deployment, wait_for_state, wait_until

DEPLOYMENT = """
servers:
  PhotonflowAcquirer/trust:
    SimulatorAcquirer:
      test/trust/acquirer:
        properties:
          ImageWidth: 256
          ImageHeight: 200
          Seed: 3
          SendTimeout: 3
  PhotonflowRecorder/trust:
    PhotonflowRecorder:
      test/trust/recorder:
        properties:
          DataRoot: ${TRUST_DATA}
  PhotonflowController/trust:
    PhotonflowController:
      test/trust/controller:
        properties:
          Acquirer: test/trust/acquirer
          Recorder: test/trust/recorder
          FinishTimeout: 10
"""
CONTROLLER, ACQUIRER, RECORDER = "test/trust/controller", "test/trust/acquirer", "test/trust/recorder"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("trust")
    with running_deployment(DEPLOYMENT, var_dir, {"TRUST_DATA": str(var_dir / "data")}) as suite:
        suite.data_root = var_dir / "data"
        yield suite


def test_started_servers_are_ready_at_once_and_configure_works_immediately(suite):
    for name in (CONTROLLER, ACQUIRER, RECORDER):
        device = proxy(suite.device_url(name))
        assert str(device.state()) not in ("FAULT", "UNKNOWN"), device.status()
    controller = proxy(suite.device_url(CONTROLLER))
    controller.Configure(json.dumps({"frames": 3, "exposure": 0.001, "period": 0.002, "file": "ready.h5"}))
    assert json.loads(controller.Configuration)["frames"] == 3
    assert os.environ.get("TANGO_HOST") != suite.tango_host  # the servers' only: this process's is left alone


def test_every_server_listens_on_loopback_only(suite):
    for managed in suite.processes:
        listening = {
            c.laddr.ip for c in psutil.Process(managed.pid).net_connections(kind="inet") if c.status == "LISTEN"
        }
        assert listening and listening <= {"127.0.0.1"}, (managed.name, listening)


@pytest.mark.parametrize(
    "settings, complaint",
    [
        ({"exposure": math.nan}, "'exposure' must be a finite number of seconds"),
        ({"exposure": 1e-12}, "exposure must be between"),
        ({"frames": 2**31}, "'frames' must be at most 2147483647"),
        ({"frames": 1e20}, "'frames' must be int"),
        ({"trigger_mode": "gated"}, "trigger mode 'gated' is not supported; choose one of internal"),
    ],
)
def test_configure_refuses_bad_values_with_the_limits(suite, settings, complaint):
    error = devfailed(
        proxy(suite.device_url(CONTROLLER)).Configure, json.dumps({"frames": 3, "exposure": 0.001, "period": 0.002, **settings})
    )
    assert error.reason == "InvalidConfiguration"
    assert complaint in error.desc


@pytest.mark.parametrize(
    "call, reason, complaint",
    [
        (lambda suite: proxy(suite.device_url(CONTROLLER)).Configure("[" * 100000 + "]" * 100000), "InvalidConfiguration", "nested too deeply"),
        (lambda suite: proxy(suite.device_url(RECORDER)).Arm(json.dumps({"frames": 2, "series_id": 1, "endpoint": "garbage"})),
         "InvalidEndpoint", "is not a ZeroMQ address"),
        (lambda suite: proxy(suite.device_url(RECORDER)).write_attribute("FilePathTemplate", "{series_id:>1000000000000}"),
         "InvalidConfiguration", "at most 64"),
        (lambda suite: proxy(suite.device_url(RECORDER)).Arm(json.dumps({"frames": 10**30, "series_id": 1, "endpoint": "tcp://127.0.0.1:1"})),
         "InvalidConfiguration", "property MaxFramesPerSeries"),
    ],
)
def test_every_command_answers_bad_input_with_a_domain_reason(suite, call, reason, complaint):
    error = devfailed(call, suite)
    assert error.reason == reason
    assert complaint in error.desc


def test_a_recorder_killed_mid_series_leaves_a_report_that_matches_the_repaired_file(suite):
    controller, acquirer = proxy(suite.device_url(CONTROLLER)), proxy(suite.device_url(ACQUIRER))
    wait_for_state(controller, "ON", "ALARM")
    statuses = []  # the Controller's Status as its change events tell it
    controller.subscribe_event("Status", tango.EventType.CHANGE_EVENT,
                               lambda event: statuses.append("" if event.err else event.attr_value.value))
    controller.Configure(json.dumps({"frames": 100000, "exposure": 0.001, "period": 0.002, "file": "killed.h5"}))
    controller.Start()
    wait_until(lambda: proxy(suite.device_url(RECORDER)).FramesWritten >= 300, what="frames written")  # and flushed, 5 times a second
    recorder_server = next(s for s in _servers(suite) if s.name == "PhotonflowRecorder/trust")
    suite.kill(recorder_server.name)
    # The Acquirer stops waiting for a receiver that is gone: ALARM with the reason, within SendTimeout.
    assert wait_for_state(acquirer, "ALARM", timeout=30) == "ALARM"
    assert "is the Recorder running?" in acquirer.status()
    suite.start_server(recorder_server)  # a restarted Recorder repairs the file it left open
    wait_for_state(controller, "ALARM", timeout=40)
    path = suite.data_root / "killed.h5"
    with h5py.File(path, "r") as f:
        kept = int(f["entry/accounting/frames_written"][()])
        assert f["entry/accounting/end_reason"][()] == b"interrupted"
        assert f["entry/data/data"].shape[0] >= kept > 0
    wait_until(lambda: controller.FramesWritten == kept, what=f"the Controller reporting the {kept} frames kept")
    assert f"written {kept}" in controller.status()
    # As an operator would, start again once the Controller follows the restarted Recorder's events, not
    # only its answers: Tango's keepalive notices the restart up to 20 s after the kill, and until then the
    # Controller may yet hear that the Recorder went (a FAULT that would land in the next series).
    wait_until(lambda: any("the recorder is unreachable" in status.lower() for status in statuses)
               and str(controller.state()) == "ALARM", timeout=60,
               what=lambda: f"the Controller following the restarted Recorder (its statuses: {statuses[-5:]})")
    assert acquire(controller, frames=5, exposure=0.001, period=0.002, file="after_kill.h5") == "ON", \
        controller.status()


def _servers(suite):
    from photonflow.deployment import load_deployment

    return load_deployment(DEPLOYMENT.replace("${TRUST_DATA}", str(suite.data_root))).servers


def test_init_under_load_never_deadlocks_and_the_next_series_completes(suite):
    controller, acquirer = proxy(suite.device_url(CONTROLLER), timeout_s=10), proxy(suite.device_url(ACQUIRER), timeout_s=10)
    wait_for_state(controller, "ON", "ALARM")
    controller.Configure(json.dumps({"frames": 2000, "exposure": 0.001, "period": 0.002, "file": "init_load.h5"}))
    controller.Start()
    wait_until(lambda: proxy(suite.device_url(RECORDER)).FramesWritten >= 20, what="frames written")
    for _ in range(3):
        controller.Init()
        controller.Init()  # twice within a second
        acquirer.Init()
        controller.Init()  # right after an Acquirer Init, mid-series
        assert str(controller.state()) in ("ON", "ALARM", "RUNNING", "FAULT")  # answers, within the timeout
    wait_until(lambda: str(controller.state()) in ("ON", "ALARM"), timeout=60, what="the Controller idle again")
    assert acquire(controller, frames=20, exposure=0.001, period=0.002, file="after_init.h5") == "ON"
    assert controller.FramesWritten == 20
