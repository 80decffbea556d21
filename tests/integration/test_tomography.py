"""A tomography on the tomo deployment (config/tomo.yaml), servers as processes: the structure
config/structures/tomography.yaml runs through the DataManager (darks with the shutter closed,
flats with the sample out, projections while the stage turns), a client's values overriding the
structure's; the Standardizer, told by the DataManager what each series is, joins them in one
NXtomo, valid against the official NXDL."""

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

from photonflow.clients.sequencer import Beamline, run_tomography, tomography_overrides
from photonflow.datamanager.catalogue import Catalogue
from photonflow.drivers.tucam import MODELS as TUCSEN_MODELS
from photonflow.simulators.andor_sdk3 import MODELS as ANDOR_MODELS
from photonflow.simulators.phantom import Phantom
from photonflow.standardizing.validation import validate_nexus
from tests.helpers.devices import proxy, running_deployment, wait_for_state, wait_until
from tests.helpers.paths import REPOSITORY

STRUCTURE = str(REPOSITORY / "config" / "structures" / "tomography.yaml")
OPTIONS = {"projections": 30, "darks": 4, "flats": 5, "exposure": 0.002, "period": 0.011, "start_angle": 0.0,
           "end_angle": 90.0, "sample_out": 20.0}
EXPERIMENT = {"proposal": "tm0001", "session": "s1", "sample": "test_rock"}


@pytest.fixture(scope="module")
def tomography(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("tomo")
    text = (REPOSITORY / "config" / "tomo.yaml").read_text()
    environment = {"PHOTONFLOW_DATA_ROOT": str(var_dir / "data"), "PHOTONFLOW_CONFIG_DIR": str(REPOSITORY / "config")}
    with running_deployment(text, var_dir, environment) as suite:  # full names: this process knows several databases
        device = {name: proxy(suite.device_url(f"tomo/photonflow/{name}"))
                  for name in ("controller", "datamanager", "standardizer")}
        wait_for_state(device["controller"], "ON")
        summary = run_tomography(device["datamanager"], device["controller"], device["standardizer"],
                                 Beamline("tomo/beamline", suite.device_url), STRUCTURE, EXPERIMENT,
                                 tomography_overrides(**OPTIONS), timeout=120)
        yield summary, device, var_dir / "data", suite


def test_one_valid_nxtomo_holds_darks_flats_and_projections_in_order(tomography):
    summary, device, data_root, _ = tomography
    assert summary["state"] == "ON" and summary["frames"] == {"dark": 4, "flat": 5, "projection": 30}, summary
    nxtomo = summary["nexus"]
    raw = data_root / "tm0001" / "tomo" / "s1" / "RAW_DATA" / "test_rock"
    assert Path(nxtomo).parent.parent == raw and nxtomo.endswith("_tomo_projections.nx")  # the data policy's
    assert device["standardizer"].LastFile == nxtomo
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
        assert np.allclose(x[4:9], 0.020) and np.allclose(x[9:], x[0])  # out for the flats only
        angles = f["entry/sample/rotation_angle"][()]
        assert np.allclose(angles[:9], 0.0)
        turning = angles[9:]
        assert np.all(np.diff(turning) >= 0) and 45.0 < turning[-1] <= 90.0
        assert f["entry/sample/name"][()] == b"test_rock"  # the DataManager's sample


def assert_the_projections_show_the_phantom(nxtomo: str, pixel_size: float) -> None:
    """Each projection is the flats' mean times exp(-the phantom's line integrals at the frame's
    recorded angle) within photon noise, and equals the flats wherever the phantom casts no shadow."""
    with h5py.File(nxtomo) as f:
        keys = f["entry/instrument/detector/image_key"][()]
        data = f["entry/data/data"]
        flats = np.flatnonzero(keys == 1)
        flat = data[flats].astype(np.float64).mean(axis=0)
        angles = f["entry/sample/rotation_angle"][()]
        projections = np.flatnonzero(keys == 0)
        phantom = Phantom.filling(flat.shape[1] * pixel_size)
        for index in projections[[0, len(projections) // 2, -1]]:
            projection = data[index].astype(np.float64)
            integrals = phantom.line_integrals(float(angles[index]), flat.shape, pixel_size)
            expected = flat * np.exp(-integrals)
            # the noise of the projection and of the flats' mean
            noise = np.sqrt(expected * (1 + np.exp(-integrals) / len(flats))) + 1.0
            assert (np.abs(projection - expected) / noise).max() < 6.0, f"frame {index} at {angles[index]} deg"
            outside, shadow = integrals == 0, integrals > 0.3
            assert outside.mean() > 0.3 and shadow.mean() > 0.1
            assert projection[outside].mean() / flat[outside].mean() == pytest.approx(1.0, abs=0.01)  # as bright
            assert (projection[shadow] < flat[shadow] - 6 * np.sqrt(flat[shadow])).all()


def test_the_projections_show_the_phantom_at_their_angle_and_equal_the_flats_around_it(tomography):
    """The simulated Zyla (binned 4x4, config/tomo.yaml) sees the phantom where it is."""
    summary, _, _, _ = tomography
    assert_the_projections_show_the_phantom(summary["nexus"], ANDOR_MODELS["zyla55"].pixel_size * 1e-6 * 4)


METRES = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6}


def assert_the_nxtomo_values_are_the_beamlines(nxtomo: str, suite, prefix: str, pixel_size: float,
                                               exposure: float) -> None:
    """Energy, distance, pixel size, exposure and field of view: what the simulated beamline and
    camera were set to, read from them, never a default."""
    energy = proxy(suite.device_url(f"{prefix}/mono")).Energy
    detz = proxy(suite.device_url(f"{prefix}/detz")).Position
    with h5py.File(nxtomo) as f:
        detector = f["entry/instrument/detector"]
        incident = f["entry/instrument/beam/incident_energy"]
        assert incident.attrs["units"] == "keV" and incident[()] == pytest.approx(energy, rel=1e-6)
        assert detector["distance"].attrs["units"] == "m" and detector["distance"][()] == pytest.approx(detz * 1e-3)
        for name in ("x_pixel_size", "y_pixel_size"):
            size = detector[name]
            assert size[()] * METRES[size.attrs["units"]] == pytest.approx(pixel_size)
        count_time = detector["count_time"]
        assert count_time.shape == detector["image_key"].shape and np.allclose(count_time[()], exposure)
        assert detector["field_of_view"][()] == b"Full"


def test_the_nxtomo_values_are_the_simulated_beamlines_and_cameras(tomography):
    summary, _, _, suite = tomography
    assert_the_nxtomo_values_are_the_beamlines(summary["nexus"], suite, "tomo/beamline",
                                               ANDOR_MODELS["zyla55"].pixel_size * 1e-6 * 4, OPTIONS["exposure"])


def test_a_dhyana95_tomography_shows_the_phantom_too(tmp_path):
    """config/dhyana95.yaml takes the same tomography: the Tucsen simulator, through TUCam's C
    functions, sees the same phantom at each pulse's angle, out of the beam for the flats."""
    text = (REPOSITORY / "config" / "dhyana95.yaml").read_text()
    environment = {"PHOTONFLOW_DATA_ROOT": str(tmp_path / "data"), "PHOTONFLOW_CONFIG_DIR": str(REPOSITORY / "config")}
    with running_deployment(text, tmp_path, environment) as suite:
        device = {name: proxy(suite.device_url(f"dhyana95/photonflow/{name}"))
                  for name in ("controller", "datamanager", "standardizer")}
        wait_for_state(device["controller"], "ON")
        options = {"projections": 12, "darks": 2, "flats": 3, "exposure": 0.01, "period": 0.025, "end_angle": 30.0}
        summary = run_tomography(device["datamanager"], device["controller"], device["standardizer"],
                                 Beamline("dhyana95/beamline", suite.device_url), STRUCTURE, EXPERIMENT,
                                 tomography_overrides(**options), timeout=120)
        assert_the_nxtomo_values_are_the_beamlines(summary["nexus"], suite, "dhyana95/beamline",
                                                   TUCSEN_MODELS["dhyana95"].pixel_size, options["exposure"])
    assert summary["state"] == "ON" and summary["frames"] == {"dark": 2, "flat": 3, "projection": 12}, summary
    assert summary["definition"] == "NXtomo" and summary["nexus_problems"] == 0
    with h5py.File(summary["nexus"]) as f:
        assert f["entry/data/data"][:2].max() == 0  # the darks: shutter closed
    assert_the_projections_show_the_phantom(summary["nexus"], TUCSEN_MODELS["dhyana95"].pixel_size)


def test_the_frames_are_the_recorders_files_joined_without_copy(tomography):
    summary, _, _, _ = tomography
    catalogue = Catalogue(Path(summary["catalogue"]).parent, "tm0001")
    runs = [catalogue.run(number) for number in summary["runs"]]
    assert [(run.node, run.role) for run in runs] == [("tomo/darks", "dark"), ("tomo/flats", "flat"),
                                                      ("tomo/projections", "data")]
    wait_until(lambda: catalogue.run(runs[-1].run).nexus_file == summary["nexus"], timeout=60,
               what="the data run's standardized file: the tomography's NXtomo")
    folder = Path(summary["nexus"]).parent
    with h5py.File(summary["nexus"]) as f:
        data = f["entry/instrument/detector/data"]
        assert data.is_virtual
        sources = {source.file_name for source in data.virtual_sources()}
        assert sources == {os.path.relpath(run.raw_file, folder) for run in runs}  # relative: the folder can move
        with h5py.File(runs[1].raw_file) as flat:
            np.testing.assert_array_equal(data[6], flat["entry/data/data"][2])
    with h5py.File(Path(runs[0].raw_file).with_suffix(".nx")) as darks:  # each run has its own file, with the image_key of its role
        assert list(darks["entry/instrument/detector/image_key"][()]) == [2] * 4


def test_bad_overrides_are_refused_before_anything_moves(tomography):
    _, device, _, _ = tomography
    datamanager, controller = device["datamanager"], device["controller"]
    series = controller.SeriesId
    for overrides, complaint in (({"frames": {"data": 0}}, "frames: data: expected a whole number"),
                                 ({"parameters": {"period": 0.001, "exposure": 0.01}}, "shorter than exposure"),
                                 ({"colour": "red"}, "unknown key 'colour'"),
                                 ({"parameters": {"end_angle": 0.0}}, "end_angle must differ from start_angle")):
        with pytest.raises(tango.DevFailed) as caught:
            datamanager.LoadStructureWith([STRUCTURE, json.dumps(overrides)])
        assert caught.value.args[0].reason == "InvalidConfiguration"
        assert complaint in caught.value.args[0].desc
    assert controller.SeriesId == series and str(datamanager.state()) == "ON"


def test_the_tomo_command_runs_one_on_a_running_suite(tomography):
    _, _, _, suite = tomography
    result = subprocess.run(
        [str(Path(sys.executable).with_name("photonflow")), "tomo", "--structure", STRUCTURE, "--projections", "12",
         "--darks", "2", "--flats", "2", "--end-angle", "30", "--sample-name", "cli_rock", "--proposal", "tm0002"],
        env={**os.environ, "TANGO_HOST": suite.tango_host}, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1].removeprefix("SUMMARY "))
    assert summary["definition"] == "NXtomo" and summary["nexus_problems"] == 0
    assert summary["frames"] == {"dark": 2, "flat": 2, "projection": 12}
    assert Path(summary["catalogue"]).stem == "tm0002" and len(summary["runs"]) == 3
    with h5py.File(summary["nexus"]) as f:
        assert f["entry/sample/name"][()] == b"cli_rock"
        assert list(f["entry/instrument/detector/image_key"][()]) == [2, 2, 1, 1] + [0] * 12
        assert f["entry/sample/rotation_angle"][-1] <= 30.0
