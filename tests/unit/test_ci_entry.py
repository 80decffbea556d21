"""CI runs `.ci/run` on a clean clone: a script bash cannot parse lands nothing, so check it here."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CI_RUN = REPO / ".ci" / "run"


def test_ci_entry_parses_as_bash():
    checked = subprocess.run(["bash", "-n", str(CI_RUN)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_ci_entry_ends_with_the_readme_test_command():
    commands = [line.strip() for line in CI_RUN.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "make test"
    assert re.search(r"^make test\b", (REPO / "README.md").read_text(), re.MULTILINE)
