"""The layering, as import-linter contracts (``.importlinter``): the core imports no device, client,
simulator nor Tango; simulators import no device or client.

import-linter reads packages from the disk, and photonflow's devices/, simulators/ and clients/
are installed into the ``photonflow`` namespace from folders of their own (setup.cfg's
package_dir): so the sources are laid out as installed in a temporary folder first.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
INSTALLED_AS = {"photonflow": "photonflow", "devices": "photonflow/devices",
                "simulators": "photonflow/simulators", "clients": "photonflow/clients"}


def lay_out_as_installed(target: Path) -> None:
    for source, destination in INSTALLED_AS.items():
        shutil.copytree(REPOSITORY / source, target / destination, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def lint_imports(where: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--config", str(config), "--no-cache"],
        cwd=where, env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=120, check=False,
    )


def test_the_import_contracts_hold(tmp_path):
    lay_out_as_installed(tmp_path)
    result = lint_imports(tmp_path, REPOSITORY / ".importlinter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_a_core_module_importing_tango_breaks_a_contract(tmp_path):
    lay_out_as_installed(tmp_path)
    errors = tmp_path / "photonflow" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport tango  # noqa\n")
    result = lint_imports(tmp_path, REPOSITORY / ".importlinter")
    assert result.returncode != 0
    assert "photonflow.errors -> tango" in result.stdout


def breaks_with(tmp_path, module: str, line: str) -> str:
    """lint-imports' report once ``line`` is added to ``module`` (a path under the installed layout)."""
    lay_out_as_installed(tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path, REPOSITORY / ".importlinter")
    assert result.returncode != 0
    return result.stdout


def test_a_real_detectors_device_importing_a_simulator_breaks_a_contract(tmp_path):
    report = breaks_with(tmp_path, "photonflow/devices/dectris_acquirer.py",
                         "import photonflow.simulators.dectris_dcu")
    assert "photonflow.devices.dectris_acquirer -> photonflow.simulators.dectris_dcu" in report


def test_a_simulator_importing_acquisition_logic_breaks_a_contract(tmp_path):
    report = breaks_with(tmp_path, "photonflow/simulators/pilatus_camserver.py",
                         "import photonflow.acquisition.pilatus")
    assert "photonflow.simulators.pilatus_camserver -> photonflow.acquisition.pilatus" in report


def test_a_client_importing_the_recorder_breaks_a_contract(tmp_path):
    report = breaks_with(tmp_path, "photonflow/clients/panel.py", "import photonflow.recording.recorder")
    assert "photonflow.clients.panel -> photonflow.recording.recorder" in report
