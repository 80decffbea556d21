"""The DataManager on real servers: `photonflow run-structure` runs a structure through it (the
simulated beamline, the Controller, the Standardizer, the embedded Dask engine), and the run
catalogue shows every acquisition with its role, its files and its computed variables; the roles
reach the standardized files; commands in the wrong state answer with what to do first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import tango

from photonflow.datamanager.catalogue import Catalogue
from tests.helpers.devices import proxy
from tests.helpers.paths import REPOSITORY

STRUCTURE = """
name: small
title: one dark, then one energy point (white, data)
beamline:
  energy: mono/Energy
  shutter: {setting: shutter, values: [open, closed]}
  sample: {setting: samx, values: {in: 0.0, out: 5.0}}
sequence:
  - paramSet: {name: defaults, frames: 4, exposure: 0.002, period: 0.005, shutter: open, sample: in}
  - acquisition: {name: dark, role: dark, shutter: closed}
  - scan:
      name: energy
      parameter: energy
      values: [20.0]
      sequence:
        - acquisition: {name: white, role: white, sample: out}
        - acquisition: {name: data, role: data}
"""


@pytest.fixture(scope="module")
def structure_run(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("structure")
    structure = var_dir / "small.yaml"
    structure.write_text(STRUCTURE)
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TANGO_HOST", "PHOTONFLOW_DATA_ROOT", "PHOTONFLOW_EVENT_BUS", "PHOTONFLOW_CONFIG_DIR",
                                  "PHOTONFLOW_JOB_ENGINE")}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("photonflow")), "run-structure", str(structure), "--proposal", "it0001",
         "--session", "s1", "--sample", "ceo2", "--config", str(REPOSITORY / "config" / "demo.yaml")],
        env={**environment, "PHOTONFLOW_VAR": str(var_dir)}, cwd=REPOSITORY, capture_output=True, text=True,
        timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1].removeprefix("SUMMARY "))
    return summary, var_dir, result.stdout


def test_every_acquisition_is_catalogued_with_its_role_files_and_variables(structure_run):
    summary, var_dir, _ = structure_run
    assert summary["acquisitions"] == 3 and summary["state"] == "ON"
    catalogue = Catalogue(Path(summary["catalogue"]).parent, "it0001")
    runs = catalogue.runs()
    assert [(run.node, run.role) for run in runs] == [
        ("small/dark", "dark"), ("small/energy[0]/white", "white"), ("small/energy[0]/data", "data")]
    raw = var_dir / "data" / "it0001" / "demo" / "s1" / "RAW_DATA" / "ceo2"
    for run in runs:
        assert Path(run.raw_file).parent.parent == raw and Path(run.raw_file).exists()
        assert run.nexus_file == str(Path(run.raw_file).with_suffix(".nxs"))
        assert run.frames_written == 4 and run.end_reason == "completed"
        with h5py.File(run.nexus_file) as f:  # the role reaches the standardized file
            assert f["entry/experiment/role"][()].decode() == run.role
            assert f["entry/experiment/node"][()].decode() == run.node
    dark, white, data = (catalogue.variables(run.run) for run in runs)
    assert dark["mean_intensity"] == 0.0  # shutter closed: no photon
    assert white["mean_intensity"] > 0.5 and data["mean_intensity"] > 0.5
    assert 150.0 < data["ring_current"] <= 200.5
    # the data run's role started an azimuthal integration on the Dask engine, into PROCESSED_DATA
    integrated = Path(data["integration_file"])
    assert integrated.parts[-4] == "PROCESSED_DATA" and integrated.exists()
    with h5py.File(integrated) as f:
        process = next(item for item in f["entry"].values() if item.attrs.get("NX_class") in (b"NXprocess", "NXprocess"))
        assert process is not None
    rows = {row["run"]: row for row in catalogue.table()}
    assert rows[runs[2].run]["role"] == "data" and rows[runs[2].run]["mean_intensity"] == data["mean_intensity"]


def test_the_datamanager_refuses_commands_in_the_wrong_state(running_suite):
    datamanager = proxy(running_suite.suite.device_url(running_suite.deployment.device("PhotonflowDataManager").name))
    with pytest.raises(tango.DevFailed) as caught:
        datamanager.SetExperiment(json.dumps({"proposal": "../up", "session": "s", "sample": "x"}))
    assert caught.value.args[0].reason in ("FileOutsideDataRoot", "InvalidFilePath")
    with pytest.raises(tango.DevFailed) as caught:
        datamanager.SetExperiment("not json")
    assert caught.value.args[0].reason == "InvalidArgument"
    datamanager.SetExperiment(json.dumps({"proposal": "st0001", "session": "s", "sample": "x"}))
    with pytest.raises(tango.DevFailed) as caught:
        datamanager.NextAcquisition()
    assert caught.value.args[0].reason == "NotAllowedInThisState" and "LoadStructure" in caught.value.args[0].desc
    with pytest.raises(tango.DevFailed) as caught:
        datamanager.LoadStructure(str(REPOSITORY / "config" / "demo.yaml"))
    assert caught.value.args[0].reason == "InvalidConfiguration"
    assert datamanager.Proposal == "st0001" and datamanager.CurrentRole == ""
