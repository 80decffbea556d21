"""LImA's clients drive photonflow unchanged: sardana-limaccd's Lima2DCtrl (LimaCCDTwoDController) in a
real Pool, on the demo suite's LimaCCDs face, counts (ct) and scans (ascan) from a Door; photonflow's
files are named as the channel's value_ref_pattern asks and hold the simulator's frames."""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("sardana")
pytest.importorskip("sardana_limaccd")

import tango

from tests.helpers.devices import demo_frames, devfailed, proxy, wait_until

EXPOSURE = 0.01
POINTS = 5
CHANNEL = "lima_face"
GROUP = f"mg_{CHANNEL}"
DATASET = "/entry/data/data"  # photonflow's frames, the Lima2DCtrl's H5DatasetPath


def _elements(pool) -> dict[str, dict]:
    _, data = pool.read_attribute("Elements").value
    return {element["name"]: element for element in json.loads(data)["new"]}


@pytest.fixture(scope="module")
def lima(running_suite):
    """Sardana (photonflow's, reused if another module started it) with a Lima2DCtrl on the face, its
    channel in a measurement group of its own made the active one; the Door's environment is put
    back afterwards."""
    import taurus
    from sardana.taurus.core.tango.sardana import registerExtensions

    from photonflow.clients.sardana_setup import start_sardana

    registerExtensions()
    suite, deployment = running_suite.suite, running_suite.deployment
    devices = start_sardana(suite, deployment)
    face = deployment.device("LimaCCDs").name
    folder = running_suite.data_root / "lima"
    pool = proxy(suite.device_url(devices.pool), 30)
    if CHANNEL not in _elements(pool):
        pool.CreateController(["TwoDExpChannel", "LimaCCDCtrl.py", "LimaCCDTwoDController", f"{CHANNEL}_ctrl",
                               "LimaCCDDeviceName", face, "LatencyTime", "0", "H5DatasetPath", DATASET,
                               "TangoClientTimeout", "20000"])
        pool.CreateElement(["TwoDExpChannel", f"{CHANNEL}_ctrl", "1", CHANNEL])
        wait_until(lambda: CHANNEL in _elements(pool), what=f"the channel {CHANNEL}")
        pool.CreateMeasurementGroup([GROUP, CHANNEL])
        wait_until(lambda: GROUP in _elements(pool), what=f"the measurement group {GROUP}")
    group = proxy(_elements(pool)[GROUP]["full_name"])
    configuration = json.loads(group.read_attribute("Configuration").value)
    for controller in configuration["controllers"].values():
        for settings in controller["channels"].values():
            settings.update(value_ref_enabled=True, value_ref_pattern=f"h5file://{folder}/lima_{{index:04d}}.h5")
    group.write_attribute("Configuration", json.dumps(configuration))
    door = taurus.Device(suite.device_url(devices.door))
    scans = running_suite.var_dir / "lima_scans"
    scans.mkdir(exist_ok=True)

    def run(name, *parameters):
        door.runMacro(name, list(parameters), synch=True)
        return str(door.getAttribute("State").read().value).split(".")[-1], door.getAttribute("Error").read().value

    changed = {"ActiveMntGrp": GROUP, "ScanDir": str(scans), "ScanFile": "lima_scan.h5",
               "ScanRecorder": "NXscanH5_FileRecorder"}
    before = {name: door.getEnvironment(name) for name in changed if _has(door, name)}
    for name, value in changed.items():
        state, error = run("senv", name, [value])
        assert state == "ON", (name, error)
    yield run, door, folder, scans, proxy(suite.device_url(face))
    for name in changed:
        state, error = run(*(("senv", name, [before[name]]) if name in before else ("usenv", [name])))
        assert state == "ON", (name, error)


def _has(door, name: str) -> bool:
    try:
        return door.getEnvironment(name) is not None
    except Exception:  # noqa: BLE001 - taurus' own error for a variable that is not set
        return False


def _files(folder: Path) -> set[Path]:
    return set(folder.glob("lima_*.h5"))


def _series_closed(running_suite):
    controller = proxy(running_suite.controller)
    wait_until(lambda: str(controller.state()) != "RUNNING", what="photonflow to close the series")
    return controller


def _assert_simulators_frames(running_suite, file: Path, count: int) -> None:
    with h5py.File(file, "r") as f:
        frames = f[DATASET][()]
    assert frames.shape[0] == count
    expected = demo_frames(running_suite, EXPOSURE, file)
    for index in range(count):
        np.testing.assert_array_equal(frames[index], expected.frame(index))


def test_ct_through_lima2dctrl_writes_one_frame_where_the_value_ref_pattern_says(lima, running_suite):
    run, door, folder, _, face = lima
    before = _files(folder)
    state, error = run("ct", str(EXPOSURE))
    assert state == "ON", error
    (new,) = _files(folder) - before
    assert new.parent == folder and new.name.startswith("lima_") and len(new.stem) == len("lima_0000")
    output = " ".join(door.getAttribute("Output").read().value)
    assert f"{CHANNEL}  =  h5file://{new}::{DATASET}" in output, output
    controller = _series_closed(running_suite)
    assert str(controller.state()) == "ON", controller.status()
    assert json.loads(controller.Configuration)["trigger_mode"] == "client"  # Lima2DCtrl's INTERNAL_TRIGGER_MULTI
    assert face.acq_trigger_mode == "INTERNAL_TRIGGER_MULTI" and face.acq_status == "Ready"
    assert (face.last_image_acquired, face.last_image_saved) == (0, 0)
    _assert_simulators_frames(running_suite, new, 1)


def test_an_ascan_through_lima2dctrl_takes_one_series_whose_frames_are_the_simulators(lima, running_suite):
    run, _, folder, scans, face = lima
    before = _files(folder)
    started = time.monotonic()
    state, error = run("ascan", "samx", "0", "0.04", str(POINTS - 1), str(EXPOSURE))
    elapsed = time.monotonic() - started
    assert state == "ON", error
    (new,) = _files(folder) - before  # one prepareAcq, one series, one file for the scan's points
    controller = _series_closed(running_suite)
    assert str(controller.state()) == "ON", controller.status()
    assert face.saving_next_number == int(new.stem.rsplit("_", 1)[1])
    _assert_simulators_frames(running_suite, new, POINTS)
    with h5py.File(scans / "lima_scan.h5", "r") as f:  # Sardana's own recorder: each point's reference
        measurement = f[sorted(f, key=lambda name: int(name[5:]))[-1]]["measurement"]
        # Lima2DCtrl names the file of each point, as with a LImA writing several frames per file
        assert [r.decode() for r in measurement[CHANNEL][()]] == [f"h5file://{new}::{DATASET}"] * POINTS
        np.testing.assert_allclose(measurement["samx"][()], np.linspace(0, 0.04, POINTS), atol=1e-6)
    print(f"\nLima2DCtrl ascan of {POINTS} points, exposure {EXPOSURE} s: {elapsed:.2f} s")


def test_the_face_refuses_what_photonflow_cannot_do_naming_what_it_can(lima, running_suite):
    *_, face = lima
    offered = list(face.getAttrStringValueList("acq_trigger_mode"))
    assert offered == ["INTERNAL_TRIGGER", "INTERNAL_TRIGGER_MULTI", "EXTERNAL_TRIGGER", "EXTERNAL_TRIGGER_MULTI",
                       "EXTERNAL_GATE"]  # the demo's simulated detector, cabled to omega's position-compare
    error = devfailed(face.write_attribute, "acq_trigger_mode", "EXTERNAL_START_STOP")
    assert error.reason == "TriggerModeNotSupported" and ", ".join(offered) in error.desc
    error = devfailed(face.write_attribute, "saving_format", "EDF")
    assert error.reason == "SavingFormatNotSupported" and "HDF5 or HDF5BS" in error.desc
    error = devfailed(face.write_attribute, "saving_directory", "/tmp/elsewhere")
    assert error.reason == "FileOutsideDataRoot" and str(running_suite.data_root.resolve()) in error.desc
    assert (face.image_width, face.image_height, face.image_type) == (1030, 1065, "Bpp16")
    assert (face.camera_type, face.lima_type) == ("Simulator", "Photonflow")
    assert str(face.state()) == "ON"


def test_a_start_acq_without_prepare_acq_is_refused_as_lima_refuses_it(lima):
    *_, face = lima
    face.reset()
    error = devfailed(face.startAcq)
    assert error.reason == "NotAllowedInThisState" and "Run prepareAcq before starting acquisition" in error.desc
    assert isinstance(face.acq_status, str) and tango.DevState.ON == face.state()
