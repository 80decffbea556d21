"""Two suites on one host, each with the instance its user chose and its own Tango Starter: the
Starter finds servers by ``<executable> <instance>`` in the process table, so a second suite of the
same instance is refused before anything starts, and a server the Starter cannot run fails with
the Starter's own reason."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import tango

from photonflow.clients.launcher import (
    STARTER_BINARY,
    Suite,
    register_starter,
    servers_running_on_this_host,
    starter_binary,
    var_directory,
)
from photonflow.clients.tango_database import apply_deployment
from photonflow.deployment import default_starter_host, load_deployment_file, with_instance
from tests.helpers.cli import run_photonflow
from tests.helpers.devices import wait_until
from tests.helpers.paths import DEMO_CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600),
              pytest.mark.skipif(starter_binary() is None,
                                 reason=f"the Tango Starter ({STARTER_BINARY}) is not installed: "
                                        "apt install tango-starter")]

# this run's own instance names: other suites (another test run, a make up) may share the host
FIRST, SECOND = f"pfa{os.getpid()}", f"pfb{os.getpid()}"


def _tango_host(up_output: str) -> str:
    return next(line.split("=", 1)[1] for line in up_output.splitlines() if line.strip().startswith("export TANGO_HOST="))


def _running_by_starter(tango_host: str) -> set[str]:
    starter = tango.DeviceProxy(f"tango://{tango_host}/tango/admin/{default_starter_host()}")
    starter.command_inout("UpdateServersInfo")  # the servers it started, now known to have run here
    return set(starter.command_inout("DevGetRunningServers", True))


def _wait_until_the_starter_runs(tango_host: str, servers: set[str]) -> None:
    """The Starter polls its processes: a server of the last level may need a moment to be seen."""
    wait_until(lambda: _running_by_starter(tango_host) == servers, timeout=60,
               what=lambda: f"the Starter of {tango_host} to run {sorted(servers)}, "
                            f"not {sorted(_running_by_starter(tango_host))}")


def test_two_suites_share_a_host_each_with_its_instance_and_its_starter(tmp_path):
    folders = {FIRST: tmp_path / FIRST, SECOND: tmp_path / SECOND}
    deployments = {name: with_instance(load_deployment_file(DEMO_CONFIG), name) for name in folders}
    hosts = {}
    try:
        for name, folder in folders.items():
            up = run_photonflow(folder, "up", "--config", str(DEMO_CONFIG), "--starter", "--instance", name)
            assert up.returncode == 0, up.stdout + up.stderr
            assert f"Stop it with: make down INSTANCE={name}" in up.stdout
            hosts[name] = _tango_host(up.stdout)
        assert hosts[FIRST] != hosts[SECOND]
        pids = {}
        for name, deployment in deployments.items():
            ours = {server.name for server in deployment.servers}
            assert ours == {f"{executable}/{name}" for executable in (
                "PhotonflowAcquirer", "PhotonflowRecorder", "PhotonflowController", "PhotonflowStandardizer",
                "PhotonflowDataManager", "PhotonflowBeamline")}
            # each Starter runs its suite's servers, and only those
            _wait_until_the_starter_runs(hosts[name], ours)
            pids[name] = servers_running_on_this_host(deployment.servers)
            assert set(pids[name]) == ours
            controller = tango.DeviceProxy(f"tango://{hosts[name]}/demo/photonflow/controller")
            assert controller.state() == tango.DevState.ON, controller.status()
        assert not set(pids[FIRST].values()) & set(pids[SECOND].values())

        # a third suite of the first one's instance is refused before anything starts
        third = run_photonflow(tmp_path / "third", "up", "--config", str(DEMO_CONFIG), "--starter",
                               "--instance", FIRST)
        assert third.returncode != 0
        assert f"PhotonflowController/{FIRST} (pid {pids[FIRST][f'PhotonflowController/{FIRST}']})" in third.stderr
        assert "the Tango Starter would take them for this suite's" in third.stderr
        assert "INSTANCE=<name>" in third.stderr
        assert not (tmp_path / "third" / "tango").exists()
    finally:
        for name, folder in folders.items():
            run_photonflow(folder, "down", "--instance", name)
    for deployment in deployments.values():
        assert servers_running_on_this_host(deployment.servers) == {}


def test_the_starter_runs_several_recorders_and_their_live_workers_from_one_deployment(tmp_path):
    """Beyond one machine, as far as one machine shows it: one deployment file, two Recorders and a
    live-analysis worker beside each, every server started by the Starter at its Recorder's level;
    a series through them is in one master and every frame is analysed by one worker."""
    import json

    from photonflow.deployment import with_live_analysis, with_recorders

    name = f"pfs{os.getpid()}"
    deployment = with_live_analysis(with_recorders(with_instance(load_deployment_file(DEMO_CONFIG), name), 2))
    ours = {server.name for server in deployment.servers}
    assert {f"PhotonflowRecorder/{name}_r2", f"PhotonflowAnalysis/{name}", f"PhotonflowAnalysis/{name}_r2"} <= ours
    levels = {entry.server: entry.level for entry in deployment.starter}
    assert levels[f"PhotonflowAnalysis/{name}_r2"] == levels[f"PhotonflowRecorder/{name}"]
    try:
        up = run_photonflow(tmp_path, "up", "--config", str(DEMO_CONFIG), "--starter", "--instance", name,
                            "--recorders", "2", "--analysis")
        assert up.returncode == 0, up.stdout + up.stderr
        host = _tango_host(up.stdout)
        _wait_until_the_starter_runs(host, ours)
        controller = tango.DeviceProxy(f"tango://{host}/demo/photonflow/controller")
        workers = [tango.DeviceProxy(f"tango://{host}/{recorder}_analysis")
                   for recorder in ("demo/photonflow/recorder", "demo/photonflow/recorder_2")]
        wait_until(lambda: all(str(w.state()) == "ON" for w in workers), 60,
                   what=lambda: f"the workers ready ({[w.status() for w in workers]})")
        controller.Configure(json.dumps({"frames": 20, "exposure": 0.01, "period": 0.05, "file": "starter.h5"}))
        controller.Start()
        wait_until(lambda: str(controller.state()) != "RUNNING", 120, what="the series' end")
        assert str(controller.state()) == "ON", controller.status()
        wait_until(lambda: sum(w.FramesAnalysed for w in workers) == 20, 60,
                   what=lambda: f"20 frames analysed ({[w.FramesAnalysed for w in workers]})")
        assert all(w.FramesAnalysed > 0 for w in workers)  # each worker analysed its Recorder's share
    finally:
        run_photonflow(tmp_path, "down", "--instance", name)
    assert servers_running_on_this_host(deployment.servers) == {}


def _failing_server(folder: Path, message: str) -> Path:
    """A server executable that cannot open its hardware: it says why and exits, as a real one would."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "PhotonflowBeamline"
    script.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 3\n")
    script.chmod(0o755)
    return folder


def test_a_server_the_starter_cannot_run_fails_with_the_starters_reason(tmp_path):
    host = default_starter_host()
    deployment = with_instance(load_deployment_file(DEMO_CONFIG), f"pfc{os.getpid()}")
    beamline_only = replace(
        deployment, servers=tuple(s for s in deployment.servers if s.executable == "PhotonflowBeamline"),
        starter=tuple(e for e in deployment.starter if e.server.startswith("PhotonflowBeamline/")))
    beamline_server = beamline_only.servers[0].name
    suite = Suite("", tmp_path)
    try:
        suite.start_database(tmp_path / "tango.db")
        apply_deployment(suite.database(), beamline_only)
        register_starter(suite.database(), host, str(_failing_server(tmp_path / "bin", "cannot open /dev/ttyS9")))
        starter = suite.start_starter(host, starter_binary())
        with pytest.raises(RuntimeError) as failed:
            suite.start_levels(beamline_only, starter, timeout=20)
        assert f"{beamline_server}, started by the Tango Starter (level 1)" in str(failed.value)
        assert "cannot open /dev/ttyS9" in str(failed.value)  # the server's own words, from the Starter

        # an executable the Starter's StartDsPath does not hold: the Starter's refusal, as it says it
        register_starter(suite.database(), host, str(tmp_path / "empty"))
        starter.command_inout("Init")
        with pytest.raises(RuntimeError) as refused:
            suite.start_levels(beamline_only, starter, timeout=20)
        assert str(refused.value).startswith(f"the Tango Starter cannot start {beamline_server} (level 1): ")
        assert "not found in 'StartDsPath'" in str(refused.value)
    finally:
        suite.stop()


def test_a_suite_of_its_own_instance_has_a_folder_of_its_own(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PHOTONFLOW_VAR", raising=False)
    assert var_directory("b2") == tmp_path / "var" / "b2"
    monkeypatch.setenv("PHOTONFLOW_VAR", str(tmp_path / "elsewhere"))
    assert var_directory("b2") == tmp_path / "elsewhere"  # the variable says
