"""The ``photonflow`` command run as a user runs it, in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import DEMO_CONFIG, REPOSITORY

SUITE_VARIABLES = ("TANGO_HOST", "PHOTONFLOW_EVENT_BUS", "PHOTONFLOW_DATA_ROOT", "PHOTONFLOW_CONFIG_DIR")


def run_photonflow(var_dir: Path, *arguments: str, timeout: float = 300, **environment: str) -> subprocess.CompletedProcess:
    """``photonflow ARGUMENTS`` with nothing of this process's suite in its environment, its
    folder ``var_dir``, plus ``environment`` (e.g. a running suite's TANGO_HOST)."""
    env = {key: value for key, value in os.environ.items() if key not in SUITE_VARIABLES}
    env.update(PHOTONFLOW_VAR=str(var_dir), PHOTONFLOW_CONFIG_DIR=str(DEMO_CONFIG.parent), **environment)
    return subprocess.run([sys.executable, "-m", "photonflow.clients.cli", *arguments],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPOSITORY)


def summary_of(result: subprocess.CompletedProcess) -> dict:
    """The SUMMARY the command ended with: its last line of output, whatever happened."""
    last = result.stdout.rstrip().splitlines()[-1]
    assert last.startswith("SUMMARY "), result.stdout + result.stderr
    return json.loads(last.removeprefix("SUMMARY "))
