"""Shared fixtures. The running suite is started exactly as `make demo` starts it: a real
pytango-db database on a free loopback port and every server as its own process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.paths import DEMO_CONFIG, REPOSITORY

# Tests here start real servers (gui/ drives the panel against them): `-m "not integration"`
# leaves only the unit tests, which need no Tango at all.
SERVER_TEST_DIRECTORIES = (REPOSITORY / "tests" / "integration", REPOSITORY / "tests" / "gui")


def pytest_collection_modifyitems(items):
    for item in items:
        if any(directory in Path(str(item.fspath)).parents for directory in SERVER_TEST_DIRECTORIES):
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class SuiteDevices:
    """Device names of the running suite, in full (``tango://host:port/...``: this process's
    TANGO_HOST is left alone), so tests never spell them out."""

    tango_host: str
    controller: str
    acquirer: str
    recorder: str
    data_root: Path
    var_dir: Path
    suite: Any  # photonflow.clients.launcher.Suite: restart or kill servers through it
    deployment: Any


@pytest.fixture(scope="session")
def running_suite(tmp_path_factory):
    """The demo deployment on its own database, servers as separate processes."""
    from photonflow.clients.launcher import Suite
    from photonflow.deployment import load_deployment_file
    from tests.helpers.devices import preserved_environment

    var_dir = tmp_path_factory.mktemp("suite")
    data_root = var_dir / "data"
    with preserved_environment("PHOTONFLOW_DATA_ROOT", "PHOTONFLOW_EVENT_BUS", "PHOTONFLOW_CONFIG_DIR", "PHOTONFLOW_VAR"):
        os.environ["PHOTONFLOW_VAR"] = str(var_dir.resolve())  # its trigger lines: this suite's own
        os.environ["PHOTONFLOW_DATA_ROOT"] = str(data_root)
        os.environ["PHOTONFLOW_CONFIG_DIR"] = str(DEMO_CONFIG.parent)
        deployment = load_deployment_file(DEMO_CONFIG)
        suite = Suite("", var_dir)
        try:
            suite.start_event_bus()
            suite.start_deployment(deployment, var_dir / "tango.db")
            yield SuiteDevices(
                tango_host=suite.tango_host,
                controller=suite.device_url(deployment.device("PhotonflowController").name),
                acquirer=suite.device_url(deployment.device("SimulatorAcquirer").name),
                recorder=suite.device_url(deployment.device("PhotonflowRecorder").name),
                data_root=data_root,
                var_dir=var_dir,
                suite=suite,
                deployment=deployment,
            )
        finally:
            suite.stop()
