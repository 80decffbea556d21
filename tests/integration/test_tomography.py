"""A tomography on the tomo deployment (config/tomo.yaml), servers as processes: AcquireTomography
takes darks with the shutter closed, flats with the sample out, projections while the stage turns,
and one NXtomo joins them, valid against the official NXDL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tango

from photonflow.standardizing.validation import validate_nexus
from tests.helpers.devices import proxy, running_deployment, wait_for_state, wait_until
from tests.helpers.paths import REPOSITORY

PLAN = {"projections": 30, "darks": 4, "flats": 5, "exposure": 0.002, "period": 0.011, "start_angle": 0.0,
        "end_angle": 90.0, "sample_out": 6.0, "sample_name": "test rock", "name": "rock"}


@pytest.fixture(scope="module")
def tomography(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("tomo")
    text = (REPOSITORY / "config" / "tomo.yaml").read_text()
    environment = {"PHOTONFLOW_DATA_ROOT": str(var_dir / "data"), "PHOTONFLOW_CONFIG_DIR": str(REPOSITORY / "config")}
    with running_deployment(text, var_dir, environment) as suite:  # full names: this process knows several databases
        standardizer = proxy(suite.device_url("tomo/photonflow/standardizer"))
        wait_for_state(proxy(suite.device_url("tomo/photonflow/controller")), "ON")
        standardizer.AcquireTomography(json.dumps(PLAN))
        wait_until(lambda: standardizer.FilesWritten == 1 or str(standardizer.state()) == "ALARM", timeout=120,
                   what="the NXtomo written")
        yield standardizer, var_dir / "data", suite


def test_one_valid_nxtomo_holds_darks_flats_and_projections_in_order(tomography):
    standardizer, data_root, _ = tomography
    assert str(standardizer.state()) == "ON", standardizer.status()
    nxtomo = standardizer.LastFile
    assert nxtomo.startswith(str(data_root / "tomo" / "rock_")) and nxtomo.endswith("/rock.nxs")
    report = validate_nexus(nxtomo)
    assert report.definition == "NXtomo" and report.problems == ()
    with h5py.File(nxtomo) as f:
        keys = f["entry/instrument/detector/image_key"][()]
        assert list(keys) == [2] * 4 + [1] * 5 + [0] * 30
        data = f["entry/data/data"]
        assert data.shape[0] == 39
        darks, flats, projections = data[:4], data[4:9], data[9:]
        assert darks.max() == 0  # shutter closed: no photon
        assert flats.mean() > 0.5 and projections.mean() > 0.5
        x = f["entry/sample/x_translation"][()]
        assert np.allclose(x[4:9], 0.006) and np.allclose(x[9:], x[0])  # out for the flats only
        angles = f["entry/sample/rotation_angle"][()]
        assert np.allclose(angles[:9], 0.0)
        turning = angles[9:]
        assert np.all(np.diff(turning) >= 0) and 45.0 < turning[-1] <= 90.0
        assert f["entry/sample/name"][()] == b"test rock"


def test_the_frames_are_the_recorders_files_joined_without_copy(tomography):
    standardizer, _, _ = tomography
    with h5py.File(standardizer.LastFile) as f:
        data = f["entry/instrument/detector/data"]
        assert data.is_virtual
        sources = {source.file_name for source in data.virtual_sources()}
        assert sources == {"dark.h5", "flat.h5", "projection.h5"}  # relative: the folder can move
        folder = standardizer.LastFile.rsplit("/", 1)[0]
        with h5py.File(f"{folder}/flat.h5") as flat:
            np.testing.assert_array_equal(data[6], flat["entry/data/data"][2])


def test_a_bad_plan_is_refused_before_anything_moves(tomography):
    standardizer, _, _ = tomography
    written = standardizer.FilesWritten
    for plan, complaint in (({"projections": 0}, "projections must be at least 1"),
                            ({"period": 0.001, "exposure": 0.01}, "period >= exposure"),
                            ({"colour": "red"}, "unknown key"),
                            ({"end_angle": 0.0}, "must differ from start_angle"),
                            ({"name": "../escape"}, "name must be")):
        with pytest.raises(tango.DevFailed) as caught:
            standardizer.AcquireTomography(json.dumps(plan))
        assert caught.value.args[0].reason == "InvalidConfiguration"
        assert complaint in caught.value.args[0].desc
    assert standardizer.FilesWritten == written


def test_the_tomo_command_runs_one_on_a_running_suite(tomography):
    standardizer, data_root, suite = tomography
    result = subprocess.run(
        [str(Path(sys.executable).with_name("photonflow")), "tomo", "--projections", "12", "--darks", "2",
         "--flats", "2", "--end-angle", "30", "--name", "cli", "--sample-name", "from the command line"],
        env={**os.environ, "TANGO_HOST": suite.tango_host}, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1].removeprefix("SUMMARY "))
    assert summary["definition"] == "NXtomo" and summary["nexus_problems"] == 0
    assert summary["frames"] == {"dark": 2, "flat": 2, "projection": 12}
    with h5py.File(summary["nexus"]) as f:
        assert f["entry/sample/name"][()] == b"from the command line"
        assert list(f["entry/instrument/detector/image_key"][()]) == [2, 2, 1, 1] + [0] * 12
