"""Nothing of the suite listens beyond loopback unless PHOTONFLOW_BIND_HOST says so: every port
of every process `photonflow up` starts (Tango servers, database, event bus, Dask's scheduler
and workers with their web services), as the operating system lists them."""

from __future__ import annotations

import json

import psutil
import pytest

from tests.helpers.cli import run_photonflow
from tests.helpers.paths import DEMO_CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

def listening(pids: list[int]) -> dict[str, list[str]]:
    """Every listening TCP address of these processes and their children, by command line."""
    found: dict[str, list[str]] = {}
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            processes = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            try:
                connections = process.net_connections(kind="tcp")
                name = " ".join(process.cmdline()[:3])
            except psutil.NoSuchProcess:
                continue
            for connection in connections:
                if connection.status == psutil.CONN_LISTEN:
                    found.setdefault(name, []).append(f"{connection.laddr.ip}:{connection.laddr.port}")
    return found


@pytest.mark.parametrize("bind_host", [None, "127.0.0.2"], ids=["default", "PHOTONFLOW_BIND_HOST"])
def test_every_port_of_the_suite_listens_on_the_bind_host_only(bind_host, tmp_path):
    environment = {"PHOTONFLOW_BIND_HOST": bind_host} if bind_host else {}
    up = run_photonflow(tmp_path, "up", "--config", str(DEMO_CONFIG), **environment)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((tmp_path / "run" / "suite.json").read_text())
        ports = listening([p["pid"] for p in state["processes"]])
    finally:
        down = run_photonflow(tmp_path, "down", **environment)
    assert down.returncode == 0, down.stdout + down.stderr
    names = {p["name"] for p in state["processes"]}
    assert {"event_bus", "dask-scheduler", "DataBaseds", "PhotonflowRecorder/demo", "photonflow-web"} <= names
    assert any("photonflow-web" in command for command in ports), ports  # the web page's port was seen
    assert any("dask scheduler" in command for command in ports), ports  # the engine's ports were seen
    assert any("PyDatabaseds" in command for command in ports), ports
    expected = bind_host or "127.0.0.1"
    elsewhere = {command: [a for a in addresses if a.rsplit(":", 1)[0] != expected]
                 for command, addresses in ports.items()}
    # the frame streams bind where the deployment says (StreamBindAddress, FanOutAddress: loopback)
    configured = {command: ["127.0.0.1"] * len(addresses) for command, addresses in elsewhere.items()
                  if addresses and ("PhotonflowAcquirer" in command or "PhotonflowRecorder" in command)}
    assert {command: [a.rsplit(":", 1)[0] for a in addresses]
            for command, addresses in elsewhere.items() if addresses} == configured
