"""The whole chain on real servers: a continuous rotation scan through the Controller (omega
crossing the range at constant velocity, its position-compare triggering every frame), the
Standardizer following it by events, an NXmx file that validates against the official NXDL, whose metadata
alone lets pyFAI find the calibrant's rings, announced on the Redis event bus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from pyFAI.calibrant import get_calibrant
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from photonflow.standardizing.validation import validate_nexus
from tests.helpers.devices import proxy, wait_for_state, wait_until
from tests.helpers.standardizing import assert_nxmx_rotation_scan

FRAMES = 40
PERIOD = 0.01
START, STEP = 10.0, 0.1  # omega of the first frame, degrees per frame
EXPERIMENT = {"proposal": "std0001", "session": "20261205", "sample": "fe_foil"}


@pytest.fixture(scope="module")
def rotation_series(running_suite):
    """One continuous scan of 40 frames, 0.1 deg each from 10 deg; its Recorder and NXmx files."""
    devices = running_suite
    controller = proxy(devices.controller)
    standardizer = proxy(devices.suite.device_url(devices.deployment.device("PhotonflowStandardizer").name))
    pcomp = proxy(devices.suite.device_url("demo/beamline/omega_pcomp"))
    wait_for_state(controller, "ON", "ALARM")
    datamanager = proxy(devices.suite.device_url(devices.deployment.device("PhotonflowDataManager").name))
    datamanager.SetExperiment(json.dumps(EXPERIMENT))  # the sample the NXmx must name
    controller.Configure(json.dumps({"frames": FRAMES, "exposure": 0.005, "period": PERIOD,
                                     "file": "standardized/rotation.h5",
                                     "scan": {"axis": "omega", "start": START, "step": STEP}}))
    controller.Start()
    wait_for_state(controller, "ON", "ALARM", timeout=120)
    assert str(controller.state()) == "ON", controller.status()
    master = Path(controller.LastFile)
    nxs = master.with_suffix(".nxs")
    wait_until(lambda: standardizer.LastFile == str(nxs), timeout=60, what=f"{nxs} written")
    return master, nxs, standardizer, pcomp


def test_the_standardizer_writes_a_valid_nxmx_beside_the_recorders_file(rotation_series, running_suite):
    url = running_suite.suite.device_url
    master, nxs, standardizer, pcomp = rotation_series
    assert nxs.parent == master.parent
    report = validate_nexus(nxs)
    assert report.definition == "NXmx" and report.problems == ()
    assert str(standardizer.state()) == "ON" and list(standardizer.Warnings or []) == []
    with h5py.File(nxs) as f, h5py.File(master) as recorded:
        np.testing.assert_array_equal(f["entry/data/data"][5], recorded["entry/data/data"][5])
        assert f["entry/data/data"].shape[0] == FRAMES
        assert f["entry/sample/name"][()].decode() == EXPERIMENT["sample"]  # the experiment's, from the DataManager
        # the detector's own description, never the frame's middle or a default
        told = recorded["entry/instrument/simulator"]
        for name in ("beam_center_x", "beam_center_y", "serial_number", "bit_depth_readout", "x_pixel_size",
                     "sensor_material", "sensor_thickness", "saturation_value"):
            assert f[f"entry/instrument/simulator/{name}"][()] == told[name][()], name
        # the simulated sensor clips at its pixel type's largest count: DIALS must not trust that count
        assert told["saturation_value"][()] == np.iinfo(recorded["entry/data/data"].dtype).max - 1
        assert "beam_center_derived" not in f["entry/instrument/simulator"]
        mono = proxy(url("demo/beamline/mono"))
        assert f["entry/instrument/beam/incident_wavelength"][()] == pytest.approx(mono.Wavelength, rel=1e-6)
        assert f["entry/instrument/simulator/distance"][()] == pytest.approx(
            proxy(url("demo/beamline/detz")).Position / 1000.0)
        # frame i's omega is where the encoder was at its trigger: START + i * STEP (the simulated
        # encoder's resolution, 1e-4 deg), whatever the machine's load did to the frames' delivery
        transformations = f["entry/sample/transformations"]
        omega = transformations["omega"][()]
        np.testing.assert_allclose(omega, START + STEP * np.arange(FRAMES), atol=2e-4)
        np.testing.assert_allclose(transformations["omega_increment"][()], STEP)
        np.testing.assert_allclose(transformations["omega_end"][()], omega + STEP)
        # the same positions the position-compare latched, and the frames are stamped with its pulses
        np.testing.assert_array_equal(omega, np.asarray(pcomp.CapturedPositions)[:FRAMES])
        stamped = recorded["entry/accounting/timestamp"][()]
        np.testing.assert_allclose(stamped, np.asarray(pcomp.CapturedTimes)[:FRAMES] + 0.005, atol=1e-4)
        np.testing.assert_allclose(np.diff(stamped), PERIOD, rtol=0.01)  # constant velocity: a frame every period
        assert f["entry/instrument/simulator/frame_time"][()] == pytest.approx(PERIOD)
        assert f["entry/pre_exposure/shutter/status"][()] == b"OPEN"
        current = f["entry/during_exposure/source/current/value"][()]
        assert len(current) >= 1 and np.all((current > 150) & (current <= 200.5))


def test_diamonds_nxmx_reader_sees_the_scan_as_it_was_asked(rotation_series):
    """The reader DIALS builds on: omega is the one scan axis, 40 images from 10 deg, 0.1 deg each."""
    _, nxs, _, _ = rotation_series
    assert_nxmx_rotation_scan(nxs, FRAMES, START, STEP)


def test_pyfai_finds_the_calibrants_rings_using_only_the_files_metadata(rotation_series):
    """Geometry from the NXmx alone (wavelength, distance through det_z, beam centre, pixel size):
    the first CeO2 rings sit within 0.5 % of q = 2π/d."""
    _, nxs, _, _ = rotation_series
    with h5py.File(nxs) as f:
        entry = f["entry"]
        detector = entry["instrument/simulator"]
        wavelength = float(entry["instrument/beam/incident_wavelength"][()]) * 1e-10  # Å -> m
        head = detector["depends_on"][()].decode()
        assert f[head].attrs["transformation_type"] == "translation"
        distance = float(f[head][()]) / 1000.0 if f[head].attrs["units"] == "mm" else float(f[head][()])
        pixel_x, pixel_y = float(detector["x_pixel_size"][()]), float(detector["y_pixel_size"][()])
        centre_x, centre_y = float(detector["beam_center_x"][()]), float(detector["beam_center_y"][()])
        image = entry["data/data"][:FRAMES].sum(axis=0, dtype=np.float64)
    integrator = AzimuthalIntegrator(dist=distance, poni1=centre_y * pixel_y, poni2=centre_x * pixel_x,
                                     pixel1=pixel_y, pixel2=pixel_x, wavelength=wavelength)
    result = integrator.integrate1d(image, 3000, unit="q_nm^-1")
    q, intensity = np.asarray(result.radial), np.asarray(result.intensity)
    background = float(np.median(intensity[intensity > 0]))
    expected = [2 * np.pi / (d / 10.0) for d in sorted(get_calibrant("CeO2").dspacing, reverse=True)[:3]]
    for q_ring in expected:
        window = (q > q_ring * 0.97) & (q < q_ring * 1.03)
        assert window.any(), f"the ring at q={q_ring:.3f} nm^-1 is not on the detector"
        peak = q[window][np.argmax(intensity[window])]
        assert intensity[window].max() > 3 * background, f"no ring near q={q_ring:.3f} nm^-1"
        assert abs(peak - q_ring) / q_ring < 0.005, f"ring found at {peak:.4f}, expected {q_ring:.4f} nm^-1"


def test_the_experiment_done_event_is_read_back_from_redis_by_another_process(rotation_series):
    _, nxs, _, _ = rotation_series
    reader = (
        "import json, sys\n"
        "from photonflow.events.bus import RedisStreamBus\n"
        "bus = RedisStreamBus(sys.argv[1])\n"
        "print(json.dumps([m.event for m in bus.read(count=1000)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", reader, os.environ["PHOTONFLOW_EVENT_BUS"]],
                            capture_output=True, text=True, timeout=60, check=True)
    events = [e for e in json.loads(result.stdout) if e["filepath"] == str(nxs)]
    assert len(events) == 1
    event = events[0]
    assert event["definition"] == "NXmx" and event["beamline"] == "PF-SIM"
    assert event["entry"]["entry"]["definition"]["value"] == "NXmx"
    assert event["entry"]["entry"]["data"]["data"]["external_link"]["file"] == "rotation.h5"


def test_standardize_refuses_a_file_outside_the_data_root(rotation_series):
    import tango

    _, _, standardizer, _ = rotation_series
    with pytest.raises(tango.DevFailed) as caught:
        standardizer.Standardize("/etc/passwd")
    assert caught.value.args[0].reason == "FileOutsideDataRoot"
    assert "outside the data root" in caught.value.args[0].desc
