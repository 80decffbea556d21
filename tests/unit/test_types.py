"""The core type-checks: mypy (configured in setup.cfg) holds the Controller's ports, the camera
capabilities, the Sender, the Receiver and the other Protocol ports to what is called on them,
so a port and its callers cannot drift apart unnoticed."""

import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import REPOSITORY

CONTROLLER = REPOSITORY / "photonflow" / "control" / "controller.py"
PORTS = REPOSITORY / "tests" / "unit" / "ports.py"  # each port beside its fakes and implementations


def mypy(*arguments: str) -> subprocess.CompletedProcess:
    """mypy with the repository's configuration, as `make test` runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPOSITORY / "setup.cfg"), *arguments],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=280, check=False,
    )


def test_the_core_type_checks_clean():
    result = mypy()
    assert result.returncode == 0, f"mypy found problems in photonflow/:\n{result.stdout}{result.stderr}"
    assert "Success: no issues found" in result.stdout


def test_the_tests_fakes_and_the_cores_implementations_conform_to_the_ports():
    result = mypy(str(PORTS))
    assert result.returncode == 0, f"a fake or an implementation no longer fits its port:\n{result.stdout}{result.stderr}"


def test_a_port_called_with_the_wrong_type_fails_the_check(tmp_path: Path):
    # The Controller arms the Recorder through RecorderPort.arm(frames: int, ...): a frame count
    # passed as text must be caught.
    source = CONTROLLER.read_text()
    call = "path = self.recorder.arm(\n            request.frames,"
    assert call in source, "the Controller no longer arms the Recorder this way: update this test"
    broken = tmp_path / "controller_with_wrong_arm.py"
    broken.write_text(source.replace(call, call.replace("request.frames,", "str(request.frames),")))

    result = mypy(str(broken))

    assert result.returncode == 1, f"mypy accepted a wrong argument to RecorderPort.arm:\n{result.stdout}"
    assert 'Argument 1 to "arm" of "RecorderPort" has incompatible type "str"; expected "int"' in result.stdout
