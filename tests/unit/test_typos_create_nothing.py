"""A mistyped file name is an error that says so, and leaves nothing behind: no empty catalogue,
no suite started, no folder made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import REPOSITORY


def run(command: str, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TANGO_HOST", "PHOTONFLOW_DATA_ROOT", "PHOTONFLOW_EVENT_BUS", "PHOTONFLOW_CONFIG_DIR")}
    return subprocess.run([str(Path(sys.executable).with_name(command)), *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False, env={**environment, "PHOTONFLOW_VAR": str(cwd / "var")})


def test_the_run_table_of_a_missing_catalogue_is_refused_and_none_is_created(tmp_path):
    result = run("photonflow-runs", "typo.sqlite", cwd=tmp_path)
    assert result.returncode == 2
    assert "there is no catalogue typo.sqlite" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_missing_structure_file_is_refused_before_anything_starts(tmp_path):
    result = run("photonflow", "run-structure", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.yaml'}: cannot read the structure file" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bad_sample_name_is_refused_before_anything_starts(tmp_path):
    structure = REPOSITORY / "config" / "structures" / "eff_energy_scan.yaml"
    result = run("photonflow", "run-structure", str(structure), "--sample", "mx1\n", cwd=tmp_path)
    assert result.returncode == 2
    assert "the sample name 'mx1\\n'" in result.stderr
    assert list(tmp_path.iterdir()) == []
