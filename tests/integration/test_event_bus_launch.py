"""`photonflow up` starts the embedded event bus before the servers and hands its URL to them;
`photonflow down` stops it with the rest of the suite."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import psutil
import pytest
import redis

from photonflow.events import RedisStreamBus, experiment_done_event
from photonflow.publishing.blissdata_scan import blissdata_url, open_data_store
from tests.helpers.paths import DEMO_CONFIG, REPOSITORY

pytestmark = pytest.mark.timeout(180)


def photonflow(var_dir, *arguments: str) -> subprocess.CompletedProcess:
    """The command as a user runs it: nothing of this process's suite in its environment; the
    demo's mappings (config/standard) wherever its configuration was copied to."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TANGO_HOST", "PHOTONFLOW_EVENT_BUS", "PHOTONFLOW_DATA_ROOT", "PHOTONFLOW_CONFIG_DIR")}
    environment["PHOTONFLOW_VAR"] = str(var_dir)
    environment["PHOTONFLOW_CONFIG_DIR"] = str(DEMO_CONFIG.parent)
    return subprocess.run(
        [sys.executable, "-m", "photonflow.clients.cli", *arguments],
        capture_output=True, text=True, timeout=150, env=environment, cwd=REPOSITORY,
    )


def test_up_starts_the_event_bus_for_the_servers_and_down_stops_it(tmp_path):
    up = photonflow(tmp_path, "up", "--config", str(DEMO_CONFIG))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((tmp_path / "run" / "suite.json").read_text())
        url = state["event_bus"]
        client = redis.Redis.from_url(url)
        loaded = {entry[b"name"].decode() for entry in client.module_list()}
        client.close()
        servers = {p["name"]: p["pid"] for p in state["processes"]}
        recorder_environment = psutil.Process(servers["PhotonflowRecorder/demo"]).environ()
        with RedisStreamBus(url) as bus:
            sent = experiment_done_event("demo", "/data/series_00001.nxs", "NXmx", 1, {"frames": 20})
            bus.publish(sent)
        open_data_store(blissdata_url(url))  # blissdata sets its database up itself: nobody else writes there
        blissdata_keys = redis.Redis.from_url(blissdata_url(url)).keys()
        tail = photonflow(tmp_path, "events", "tail")
    finally:
        down = photonflow(tmp_path, "down")

    assert url.startswith("redis://127.0.0.1:") and url.endswith("/1")  # the events' own database
    assert blissdata_keys and not any(key.startswith(b"photonflow") for key in blissdata_keys)
    assert f"PHOTONFLOW_EVENT_BUS={url}" in up.stdout
    assert {"ReJSON", "search"} <= loaded
    assert recorder_environment["PHOTONFLOW_EVENT_BUS"] == url
    assert [json.loads(line)["event"] for line in tail.stdout.splitlines()] == [sent]
    assert down.returncode == 0, down.stdout + down.stderr
    assert not psutil.pid_exists(servers["event_bus"]) or psutil.Process(servers["event_bus"]).status() == "zombie"
    with pytest.raises(ConnectionRefusedError), socket.create_connection(
        ("127.0.0.1", urlsplit(url).port), timeout=5
    ):
        pass


def test_an_external_bus_is_used_as_it_is_and_nothing_is_started(tmp_path):
    config = tmp_path / "external.yaml"
    config.write_text("event_bus: redis://127.0.0.1:1\n" + DEMO_CONFIG.read_text())
    # the deployment's files beside it, as ${PHOTONFLOW_CONFIG_DIR} (the config's folder) finds them
    shutil.copytree(DEMO_CONFIG.parent / "standard", tmp_path / "standard")
    var_dir = tmp_path / "var"

    up = photonflow(var_dir, "up", "--config", str(config))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((var_dir / "run" / "suite.json").read_text())
        servers = {p["name"]: p["pid"] for p in state["processes"]}
        recorder_environment = psutil.Process(servers["PhotonflowRecorder/demo"]).environ()
    finally:
        photonflow(var_dir, "down")

    assert state["event_bus"] == "redis://127.0.0.1:1"
    assert "Using the event bus at PHOTONFLOW_EVENT_BUS=redis://127.0.0.1:1" in up.stdout
    assert "event_bus" not in servers
    assert recorder_environment["PHOTONFLOW_EVENT_BUS"] == "redis://127.0.0.1:1"
