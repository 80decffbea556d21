"""The core imports no Tango: every decision stays testable without a server."""

import ast
from pathlib import Path

from tests.conftest import REPOSITORY

CORE = REPOSITORY / "photonflow"
SIMULATORS = REPOSITORY / "simulators"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0] if node.level == 0 else "")
    return names


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
