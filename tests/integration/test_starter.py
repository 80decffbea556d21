"""Astor's way: a `starter:` section written as Astor writes it (DbPutServerInfo), the Starter
registered with its StartDsPath, and the real Tango Starter (Debian's tango-starter) starting the
servers level by level."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest
import tango

from photonflow.clients.launcher import STARTER_BINARY, Suite, register_starter, starter_binary
from photonflow.clients.tango_database import apply_deployment
from photonflow.deployment import default_starter_host, load_deployment
from tests.helpers.devices import wait_until

pytestmark = pytest.mark.integration

# instance names of this run only: the Starter finds running servers by "<exec> <instance>" in the
# process table, and other suites may run on this host
TAG = f"st{os.getpid()}"
DEPLOYMENT = f"""\
servers:
  PhotonflowBeamline/{TAG}ring:
    SimulatedStorageRing:
      {TAG}/beamline/ring: {{}}
  PhotonflowBeamline/{TAG}motors:
    SimulatedMotor:
      {TAG}/beamline/omega:
        properties: {{Unit: deg}}
starter:
  host: {{host}}
  servers:
    PhotonflowBeamline/{TAG}ring: 1
    PhotonflowBeamline/{TAG}motors: {{level: 2}}
"""


def test_the_starter_section_is_written_as_astor_writes_it(tmp_path):
    deployment = load_deployment(DEPLOYMENT.replace("{host}", "bl-ctl-01"))
    assert [(e.server, e.host, e.level) for e in deployment.starter] == [
        (f"PhotonflowBeamline/{TAG}ring", "bl-ctl-01", 1), (f"PhotonflowBeamline/{TAG}motors", "bl-ctl-01", 2)]
    suite = Suite("", tmp_path)
    try:
        suite.start_database(tmp_path / "tango.db")
        database = suite.database()
        changes = apply_deployment(database, deployment)
        assert f"set Starter info of PhotonflowBeamline/{TAG}ring: none -> host bl-ctl-01, level 1" in [
            change.describe() for change in changes]
        info = database.get_server_info(f"PhotonflowBeamline/{TAG}motors")
        assert (info.host, info.mode, info.level) == ("bl-ctl-01", 1, 2)
        assert apply_deployment(database, deployment) == []
        assert register_starter(database, "bl-ctl-01", "/opt/venv/bin") is True
        assert register_starter(database, "bl-ctl-01", "/opt/venv/bin") is False  # never re-added
        assert database.get_device_info("tango/admin/bl-ctl-01").ds_full_name == "Starter/bl-ctl-01"
        stored = database.get_device_property("tango/admin/bl-ctl-01", "StartDsPath")["StartDsPath"]
        assert list(stored) == ["/opt/venv/bin"]
    finally:
        suite.stop()


@pytest.mark.skipif(starter_binary() is None,
                    reason=f"the Tango Starter ({STARTER_BINARY}) is not installed: apt install tango-starter")
def test_the_tango_starter_starts_the_suite_level_by_level(tmp_path):
    host = default_starter_host()
    deployment = load_deployment(DEPLOYMENT.replace("{host}", host))
    suite = Suite("", tmp_path)
    seen = []
    try:
        suite.start_database(tmp_path / "tango.db")
        apply_deployment(suite.database(), deployment)
        register_starter(suite.database(), host, str(Path(sys.executable).parent))
        starter = suite.start_starter(host, starter_binary())

        def answering(name: str) -> bool:
            try:
                tango.DeviceProxy(suite.device_url(name)).ping()
            except tango.DevFailed:
                return False
            return True

        def on_level(level, servers):
            seen.append((level, servers, answering(f"{TAG}/beamline/ring"), answering(f"{TAG}/beamline/omega")))

        suite.start_levels(deployment, starter, on_level=on_level)
        assert seen == [(1, [f"PhotonflowBeamline/{TAG}ring"], True, False),
                        (2, [f"PhotonflowBeamline/{TAG}motors"], True, True)]
        starter.command_inout("UpdateServersInfo")  # they ran on this host now: the Starter lists them
        ours = {f"PhotonflowBeamline/{TAG}ring", f"PhotonflowBeamline/{TAG}motors"}
        wait_until(lambda: ours <= set(starter.command_inout("DevGetRunningServers", True)), 20,
                   what="the Starter seeing both servers running")
        omega = tango.DeviceProxy(suite.device_url(f"{TAG}/beamline/omega"))
        assert omega.read_attribute("Position").value == 0.0
        pids = [p.pid for p in suite.processes if not p.group]
        assert len(pids) == 2
    finally:
        suite.stop()
    for pid in pids:  # ended (a zombie only, when no process here reaps the Starter's orphans)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
