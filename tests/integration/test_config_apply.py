"""`photonflow config apply` against a real Tango database: idempotent, and all-or-nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tango

pytestmark = pytest.mark.integration

PHOTONFLOW = str(Path(sys.executable).parent / "photonflow")

BEAMLINE = """\
servers:
  PhotonflowRecorder/cfgtest:
    PhotonflowRecorder:
      cfgtest/pf/recorder:
        properties:
          DataRoot: {root}
          DefaultFilePathTemplate: "scan_{{series_id:04d}}.h5"
"""


def apply(config: Path, tango_host: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TANGO_HOST": tango_host}
    return subprocess.run(
        [PHOTONFLOW, "config", "apply", str(config), *extra], capture_output=True, text=True, env=env, timeout=60
    )


def test_apply_writes_once_then_reports_nothing_to_change(running_suite, tmp_path):
    config = tmp_path / "beamline.yaml"
    config.write_text(BEAMLINE.format(root="/data/one"))
    first = apply(config, running_suite.tango_host)
    assert first.returncode == 0, first.stderr
    assert "changed 3 item(s)" in first.stdout
    assert "add device cfgtest/pf/recorder (class PhotonflowRecorder) to server PhotonflowRecorder/cfgtest" in first.stdout
    database = running_suite.suite.database()
    assert database.get_device_info("cfgtest/pf/recorder").class_name == "PhotonflowRecorder"
    assert list(database.get_device_property("cfgtest/pf/recorder", "DataRoot")["DataRoot"]) == ["/data/one"]

    again = apply(config, running_suite.tango_host)
    assert "changed 0 item(s)" in again.stdout

    config.write_text(BEAMLINE.format(root="/data/two"))
    preview = apply(config, running_suite.tango_host, "--dry-run")
    assert "would change 1 item(s)" in preview.stdout and "/data/one -> /data/two" in preview.stdout
    assert list(database.get_device_property("cfgtest/pf/recorder", "DataRoot")["DataRoot"]) == ["/data/one"]
    changed = apply(config, running_suite.tango_host)
    assert "set cfgtest/pf/recorder->DataRoot: /data/one -> /data/two" in changed.stdout
    assert list(database.get_device_property("cfgtest/pf/recorder", "DataRoot")["DataRoot"]) == ["/data/two"]


@pytest.mark.parametrize(
    "broken, complaint",
    [
        (BEAMLINE.format(root="/x") + "  PhotonflowController/cfgbad:\n    Nope:\n      a/b/c: {}\n",
         ":9: PhotonflowController/cfgbad: unknown class 'Nope'"),
        (BEAMLINE.format(root="/x") + "  PhotonflowController/cfgbad: [oops\n", "not valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence started at line 8)"),
    ],
)
def test_a_bad_file_writes_nothing_and_names_the_line(running_suite, tmp_path, broken, complaint):
    config = tmp_path / "broken.yaml"
    # The valid first server must not be written either: validation happens before any write.
    config.write_text(broken.replace("cfgtest", "cfgbroken"))
    result = apply(config, running_suite.tango_host)
    assert result.returncode == 2
    assert complaint.replace("cfgtest", "cfgbroken") in result.stderr
    with pytest.raises(tango.DevFailed):
        running_suite.suite.database().get_device_info("cfgbroken/pf/recorder")
