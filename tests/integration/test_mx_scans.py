"""The shipped MX deployments (config/pilatus3.yaml, config/eiger4m.yaml: the detector's simulator
process, the beamline with omega's position-compare cabled to the detector's trigger input, the
Standardizer) run a continuous rotation scan as `make demo DETECTOR=...` does, and the NXmx file
reads back, with Diamond's nxmx reader, as the scan that was asked for."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from photonflow.standardizing.nexus import value_sources
from tests.helpers.devices import proxy, running_deployment, wait_for_state, wait_until
from tests.helpers.paths import REPOSITORY
from tests.helpers.standardizing import assert_nxmx_rotation_scan

FRAMES, START, STEP = 20, 0.0, 0.1
EXPERIMENT = {"proposal": "mx0001", "session": "20261205", "sample": "lysozyme_7"}
# Each deployment's truth: what its simulated detector was configured with, and what it counts up to
TRUTH = {
    "pilatus3": {"serial_number": "24-0111", "beam_center": (490.0, 520.0), "saturation_value": 1048574,
                 "bit_depth_readout": 20},  # camserver --serial-number; BeamCentre row, column; PILATUS3 cut-off
    "eiger4m": {"serial_number": "E-32-0123", "beam_center": (1020.0, 1100.0), "saturation_value": 2**16 - 2,
                "bit_depth_readout": 16},  # the DCU's --serial-number; BeamCentre; its count cut-off
}


def configured_user_data(detector: str) -> dict | None:
    """What the deployment tells its simulated detector's stream as user_data (--user-data), if anything."""
    command = yaml.safe_load((REPOSITORY / "config" / f"{detector}.yaml").read_text())["simulators"]
    command = next(iter(command.values()))["command"]
    return json.loads(command[command.index("--user-data") + 1]) if "--user-data" in command else None


@pytest.mark.parametrize("detector", ["pilatus3", "eiger4m"])
def test_a_detectors_demo_scan_is_the_rotation_asked_for(detector, tmp_path):
    text = (REPOSITORY / "config" / f"{detector}.yaml").read_text()
    demo = yaml.safe_load(text)["demo"]  # what that detector's demo asks: its exposure and period
    with running_deployment(text, tmp_path, {"PHOTONFLOW_DATA_ROOT": str(tmp_path / "data")}) as suite:
        controller = proxy(suite.device_url(f"{detector}/photonflow/controller"), timeout_s=60)
        standardizer = proxy(suite.device_url(f"{detector}/photonflow/standardizer"))
        pcomp = proxy(suite.device_url(f"{detector}/beamline/omega_pcomp"))
        wait_for_state(controller, "ON", timeout=60)
        proxy(suite.device_url(f"{detector}/photonflow/datamanager")).SetExperiment(json.dumps(EXPERIMENT))
        controller.Configure(json.dumps({"frames": FRAMES, "exposure": demo["exposure"], "period": demo["period"],
                                         "file": "scans/rotation.h5",
                                         "scan": {"axis": "omega", "start": START, "step": STEP}}))
        controller.Start()
        wait_until(lambda: str(controller.state()) != "RUNNING", timeout=180, what="the scan's end")
        assert str(controller.state()) == "ON", controller.status()
        master = Path(controller.LastFile)
        nxs = master.with_suffix(".nxs")
        wait_until(lambda: standardizer.LastFile == str(nxs), timeout=120, what=f"{nxs} written")
        assert list(standardizer.Warnings or []) == []
        assert_nxmx_rotation_scan(nxs, FRAMES, START, STEP)
        with h5py.File(nxs) as f:  # each frame's angle is the encoder's at its trigger
            omega = f["entry/sample/transformations/omega"][()]
            np.testing.assert_array_equal(omega, np.asarray(pcomp.CapturedPositions)[:FRAMES])
            np.testing.assert_allclose(omega, START + STEP * np.arange(FRAMES), atol=2e-4)
            assert_values_from_their_sources(f, suite, detector)
        assert_sources_named(nxs, suite, detector)
        if detector == "eiger4m":  # the DCU's own header carries the scan, as a real EIGER's does
            with h5py.File(master) as f:
                specific = next(g for g in f["entry/instrument"].values()
                                if g.attrs.get("NX_class") == "NXdetector")["detector_specific"]
                assert (specific["omega_start"][()], specific["omega_increment"][()]) == (START, STEP)


def assert_values_from_their_sources(f: h5py.File, suite, detector: str) -> None:
    """Every value the NXmx states equals its source: the simulated detector's configuration, the
    simulated beamline's motor and monochromator, the DataManager's sample."""
    truth = TRUTH[detector]
    group = next(g for g in f["entry/instrument"].values() if g.attrs.get("NX_class") == "NXdetector")
    assert group["serial_number"][()].decode() == truth["serial_number"]
    assert (group["beam_center_x"][()], group["beam_center_y"][()]) == truth["beam_center"]
    assert group["saturation_value"][()] == truth["saturation_value"]
    assert group["bit_depth_readout"][()] == truth["bit_depth_readout"]
    assert f["entry/sample/name"][()].decode() == EXPERIMENT["sample"]
    detz = proxy(suite.device_url(f"{detector}/beamline/detz")).Position
    assert group["distance"][()] == pytest.approx(detz / 1000.0)
    assert f[group["depends_on"][()].decode()][()] == pytest.approx(detz)  # det_z, in the motor's mm
    mono = proxy(suite.device_url(f"{detector}/beamline/mono")).Wavelength
    assert f["entry/instrument/beam/incident_wavelength"][()] == pytest.approx(mono, rel=1e-6)
    told = configured_user_data(detector)
    if told is None:
        assert "space_group" not in f["entry/sample"]
        return
    # the stream's user_data fills what the experiment did not say; its sample name yields to the DataManager's
    assert told["sample_name"] != EXPERIMENT["sample"]
    assert f["entry/sample/space_group"][()].decode() == told["space_group"]
    np.testing.assert_array_equal(f["entry/sample/unit_cell_abc"][()], told["unit_cell"][:3])
    np.testing.assert_array_equal(f["entry/sample/detector_goniometer/omega_axis"][()], told["omega_axis"])
    assert group["user_data/attenuator"][()].decode() == told["attenuator"]
    assert f["entry/sample/detector_goniometer/chi_start"].attrs["units"] == "deg"  # the DCU's header


def assert_sources_named(nxs: Path, suite, detector: str) -> None:
    """The beam centre says the detector's header, the sample the DataManager, omega the
    position-compare that latched it, the distance detz's Position."""
    sources = value_sources(nxs)
    with h5py.File(nxs) as f:
        group = next(g for g in f["entry/instrument"].values() if g.attrs.get("NX_class") == "NXdetector").name
    assert sources[f"{group}/beam_center_x"].startswith("detector")
    assert sources[f"{group}/serial_number"].startswith("detector")
    assert sources["/entry/sample/name"] == f"DataManager: {detector}/photonflow/datamanager/Sample"
    assert sources["/entry/sample/transformations/omega"] == f"Tango: {detector}/beamline/omega_pcomp/CapturedPositions"
    assert sources[f"{group}/distance"] == f"Tango: {detector}/beamline/detz/Position"
