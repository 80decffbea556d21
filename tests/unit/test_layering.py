"""The core imports no Tango: every decision stays testable without a server. A real detector's
server loads no simulator, and a simulator speaks the vendor's interface (photonflow.drivers)
without the acquisition logic it is tested against. Test modules share helpers only through
tests/helpers: moving one test never breaks another."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import REPOSITORY

CORE = REPOSITORY / "photonflow"
SIMULATORS = REPOSITORY / "simulators"
DRIVERS = CORE / "drivers"


def imported_modules(path: Path, depth: int = 1) -> set[str]:
    """The modules a file imports, to ``depth`` dotted parts (1: top-level packages)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(".".join(alias.name.split(".")[:depth]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(".".join(node.module.split(".")[:depth]) if node.level == 0 else "")
    return names


# The core's outer layers: the core never imports them, so it runs and is tested without them and
# nothing simulated can slip into a production path.
OUTER_LAYERS = {"photonflow.devices", "photonflow.clients", "photonflow.simulators"}


def test_core_and_simulators_never_import_tango():
    offenders = [
        str(path.relative_to(REPOSITORY))
        for folder in (CORE, SIMULATORS)
        for path in folder.rglob("*.py")
        if {"tango", "PyTango", "taurus"} & imported_modules(path)
    ]
    assert offenders == []


def test_the_layering_check_does_see_tango_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from tango.server import Device\n")
    assert "tango" in imported_modules(sample)


def test_the_core_never_imports_devices_clients_or_simulators():
    offenders = [
        str(path.relative_to(REPOSITORY))
        for path in CORE.rglob("*.py")
        if OUTER_LAYERS & imported_modules(path, depth=2)
    ]
    assert offenders == []


def test_the_layering_check_does_see_a_simulator_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from photonflow.simulators.diffraction import DiffractionFrames\n")
    assert "photonflow.simulators" in imported_modules(sample, depth=2)


def modules_loaded_by(imports: list[str], prefix: str) -> list[str]:
    """The modules under ``prefix`` that importing ``imports`` loads, in a fresh interpreter."""
    script = (f"import importlib, json, sys\nfor name in {imports!r}:\n    importlib.import_module(name)\n"
              f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefix!r}))))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            check=False, cwd=REPOSITORY)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


REAL_DETECTOR_SERVERS = [f"photonflow.devices.{name}_acquirer" for name in ("dectris", "pilatus", "andor", "tucsen")]


def test_a_real_detectors_acquirer_loads_no_simulator():
    # the simulated Andor and Tucsen are imported only when the Simulation property asks for them
    assert modules_loaded_by(REAL_DETECTOR_SERVERS, "photonflow.simulators") == []


def test_the_loading_check_does_see_a_simulator():
    loaded = modules_loaded_by(["photonflow.devices.simulator_acquirer"], "photonflow.simulators")
    assert "photonflow.simulators.simulated_camera" in loaded


def test_simulators_and_drivers_load_no_acquisition_logic():
    simulators = [f"photonflow.simulators.{path.stem}" for path in SIMULATORS.glob("*.py") if path.stem != "__init__"]
    drivers = [f"photonflow.drivers.{path.stem}" for path in DRIVERS.glob("*.py") if path.stem != "__init__"]
    assert "photonflow.simulators.simulated_camera" in simulators and "photonflow.drivers.tucam" in drivers
    assert modules_loaded_by(simulators + drivers, "photonflow.acquisition") == []


def test_drivers_import_only_errors_of_photonflow():
    offenders = {
        str(path.relative_to(REPOSITORY)): sorted(imported)
        for path in DRIVERS.rglob("*.py")
        if (imported := {name for name in imported_modules(path, depth=2) if name.startswith("photonflow.")}
            - {"photonflow.errors", "photonflow.drivers"})
    }
    assert offenders == {}


SARDANA_PLUGINS = REPOSITORY / "clients" / "sardana"  # files Sardana loads by path: no package import-linter sees


def photonflow_imports_outside(path: Path, allowed: tuple[str, ...]) -> set[str]:
    """The photonflow modules ``path`` imports (also inside functions) that are not under ``allowed``."""
    return {name for name in imported_modules(path, depth=3)
            if name.startswith("photonflow") and not name.startswith(allowed)}


def test_sardana_plugins_reach_photonflow_through_publishing_and_clients_only():
    offenders = {
        str(path.relative_to(REPOSITORY)): sorted(found)
        for path in SARDANA_PLUGINS.rglob("*.py")
        if (found := photonflow_imports_outside(path, ("photonflow.publishing", "photonflow.clients")))
    }
    assert offenders == {}


def test_the_sardana_plugin_check_does_see_a_recorder_import(tmp_path):
    sample = tmp_path / "plugin.py"
    sample.write_text("def read_one():\n    from photonflow.recording.recorder import Recorder\n")
    assert photonflow_imports_outside(sample, ("photonflow.publishing",)) == {"photonflow.recording.recorder"}


TESTS = REPOSITORY / "tests"


def imports_of_another_test_module(path: Path) -> list[str]:
    """The test code ``path`` imports from outside tests/helpers: another test module, a conftest, or
    a module beside the tests of one tier."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return [name for name in names
            if name.startswith(".") or (name.split(".")[0] == "tests" and not name.startswith("tests.helpers"))
            or (name.startswith("test_") and "." not in name)]  # `import test_x`, found through sys.path


def test_test_modules_share_helpers_only_through_tests_helpers():
    offenders = {
        str(path.relative_to(REPOSITORY)): imported
        for path in TESTS.rglob("*.py")
        if (imported := imports_of_another_test_module(path))
    }
    assert offenders == {}


def test_the_helper_check_does_see_an_import_from_another_test_module(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text("from tests.unit.test_recorder import frame\nfrom .test_panel import app\nimport test_jobs\n"
                      "from tests.helpers.recording import SHAPE\nfrom tango.test_context import DeviceTestContext\n")
    assert imports_of_another_test_module(sample) == ["tests.unit.test_recorder", ".test_panel", "test_jobs"]


def test_the_unit_tier_starts_no_tango_server():
    """A device in a test server belongs in tests/device; a database and server processes in
    tests/integration."""
    servers = {"tango.test_context", "tango.server", "photonflow.clients.launcher"}
    offenders = [
        str(path.relative_to(REPOSITORY))
        for path in (TESTS / "unit").rglob("*.py")
        if servers & (imported_modules(path, depth=2) | imported_modules(path, depth=3))
    ]
    assert offenders == []
