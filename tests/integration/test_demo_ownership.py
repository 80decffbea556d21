"""The demo owns what it starts: never another suite's database, never a folder a demo already
runs in, and whatever happens it ends with a SUMMARY line saying the state and why."""

from __future__ import annotations

import os

import pytest
import tango

from photonflow.clients.cli import _demo_lock
from photonflow.clients.launcher import Suite
from tests.helpers.cli import run_photonflow, summary_of
from tests.helpers.paths import DEMO_CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SUITES_JOB_ENGINE = "tcp://127.0.0.1:8786"


def test_a_second_demo_in_the_same_folder_is_refused_at_once_naming_the_one_running(tmp_path):
    with _demo_lock(tmp_path):  # this test process plays the demo that is running
        second = run_photonflow(tmp_path, "demo", "--config", str(DEMO_CONFIG))
    assert second.returncode == 1
    summary = summary_of(second)
    assert summary["state"] == "REFUSED"
    assert summary["reason"] == (f"a demo is already running in {tmp_path} (pid {os.getpid()}, "
                                 f"{tmp_path / 'run' / 'demo.lock'}): wait for it to end, or set PHOTONFLOW_VAR "
                                 "to another folder")
    assert not (tmp_path / "log").exists()  # nothing was started


def test_a_demo_that_fails_ends_with_a_summary_of_the_state_and_the_reason(tmp_path):
    missing = tmp_path / "nope.yaml"
    failed = run_photonflow(tmp_path, "demo", "--config", str(missing))
    assert failed.returncode == 1
    summary = summary_of(failed)
    assert summary["state"] == "FAILED" and str(missing) in summary["reason"]
    assert "Traceback" not in failed.stdout + failed.stderr
    assert "Traceback" in (tmp_path / "log" / "demo.log").read_text()


def test_a_demo_run_with_another_suites_tango_host_leaves_that_database_as_it_was(tmp_path):
    other = Suite("", tmp_path / "other")
    other.start_database(tmp_path / "other" / "suite.db")
    try:
        database = tango.Database(*other.tango_host.split(":"))
        database.put_device_property("demo/photonflow/datamanager", {"JobEngine": [SUITES_JOB_ENGINE]})
        servers_before = sorted(database.get_server_list("*"))
        demo = run_photonflow(tmp_path / "demo", "demo", "--config", str(DEMO_CONFIG), "--frames", "5",
                              TANGO_HOST=other.tango_host)
        assert summary_of(demo)["state"] == "ON", demo.stdout + demo.stderr
        assert f"TANGO_HOST={other.tango_host} is left alone" in demo.stdout
        assert sorted(database.get_server_list("*")) == servers_before
        engine = database.get_device_property("demo/photonflow/datamanager", "JobEngine")["JobEngine"]
        assert list(engine) == [SUITES_JOB_ENGINE]
    finally:
        other.stop()
