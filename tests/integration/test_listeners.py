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

LOOPBACK = ("127.0.0.1", "::1")


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


def test_every_port_of_the_suite_listens_on_loopback_only(tmp_path):
    up = run_photonflow(tmp_path, "up", "--config", str(DEMO_CONFIG))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((tmp_path / "run" / "suite.json").read_text())
        ports = listening([p["pid"] for p in state["processes"]])
    finally:
        down = run_photonflow(tmp_path, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    names = {p["name"] for p in state["processes"]}
    assert {"event_bus", "dask-scheduler", "DataBaseds", "PhotonflowRecorder/demo"} <= names
    assert any("dask" in command for command in ports), ports  # the engine's ports were seen
    beyond = {command: [a for a in addresses if a.rsplit(":", 1)[0] not in LOOPBACK]
              for command, addresses in ports.items()}
    assert {command: addresses for command, addresses in beyond.items() if addresses} == {}
