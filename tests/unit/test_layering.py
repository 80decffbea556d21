"""The core imports no Tango: every decision stays testable without a server."""

import ast
from pathlib import Path

from tests.conftest import REPOSITORY

CORE = REPOSITORY / "photonflow"
SIMULATORS = REPOSITORY / "simulators"


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
