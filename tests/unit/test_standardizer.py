"""The Standardizer's core without Tango: mappings refused at load with file, line and key; what
is captured before, during and after a series; NXmx and NXtomo files over a real Recorder's
frames that validate against the official NXDL with no problem."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from photonflow.acquisition.acquirer import Acquirer
from photonflow.errors import ConfigurationError, FilePathError
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor
from photonflow.standardizing.capture import SeriesCapture
from photonflow.standardizing.mapping import load_mapping, parse_mapping
from photonflow.standardizing.nexus import value_sources
from photonflow.standardizing.nxtomo import TomographyPart, write_tomography
from photonflow.standardizing.recorded import read_recorded_series
from photonflow.standardizing.standardizer import Standardizer
from photonflow.standardizing.validation import validate_nexus
from photonflow.stream.transport import StreamSender
from tests.helpers.recording import acquire_into
from tests.helpers.standardizing import CONFIG, PREFIX, BeamlineReader, beamline_values, standardize
from tests.helpers.waiting import wait_until


@pytest.fixture(scope="module")
def recorded_file(tmp_path_factory) -> Path:
    """A real Recorder file of 6 simulated frames."""
    root = tmp_path_factory.mktemp("data")
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(SimulatedCamera(SimulatedSensor(height=40, width=50, seed=3, serial_number="SIM-S")), sender)
    acquirer.update_settings(frame_count=6, exposure=0.001, period=0.01)
    acquirer.set_series_id(7)
    try:
        path = acquire_into(acquirer, Recorder(root), RecordingRequest(6, 7, acquirer.stream_endpoint, "mx/series.h5"))
    finally:
        sender.close()
    return path


def test_the_nxmx_file_validates_and_its_frames_are_the_recorders(recorded_file):
    output, standardizer = standardize(recorded_file, BeamlineReader(beamline_values()))
    try:
        assert output == recorded_file.with_suffix(".nxs")
        report = validate_nexus(output)
        assert report.definition == "NXmx" and report.problems == ()
        with h5py.File(output) as nxs, h5py.File(recorded_file) as master:
            frames = master["entry/instrument/simulator/data"][()]
            np.testing.assert_array_equal(nxs["entry/data/data"][()], frames)
            assert nxs["entry/data"].get("data", getlink=True).filename == "series.h5"  # relative: the folder can move
            entry = nxs["entry"]
            assert entry["definition"][()] == b"NXmx"
            assert entry["instrument/beam/incident_wavelength"][()] == pytest.approx(1.0)
            assert entry["source/current"][()] == 198.5 and entry["source/current"].attrs["units"] == "mA"
            assert entry["instrument/attenuator/attenuator_transmission"][()] == 0.5
            assert entry["instrument/simulator/distance"][()] == pytest.approx(0.150)
            # the experiment's sample (the DataManager's), never a constant of the mapping
            assert entry["sample/name"][()].decode() == beamline_values()["datamanager/Sample"]
            assert entry["experiment/role"][()] == b"data" and entry["experiment/proposal"][()] == b"mx1234"
    finally:
        output.unlink()


def test_each_value_names_its_source(recorded_file):
    """/entry/value_sources says where each field comes from: the detector's header, a Tango
    attribute, the DataManager, the mapping, the frames; no field keeps a stray attribute."""
    output, _ = standardize(recorded_file, BeamlineReader(beamline_values()))
    try:
        sources = value_sources(output)
        detector = "/entry/instrument/simulator"
        assert sources[f"{detector}/beam_center_x"] == "detector header: beam_center_x"
        assert sources[f"{detector}/serial_number"] == "detector header: serial_number"
        assert sources["/entry/sample/name"] == "DataManager: test/photonflow/datamanager/Sample"
        assert sources["/entry/sample/transformations/omega"] == "Tango: test/beamline/omega/Position"
        assert sources[f"{detector}/transformations/det_z"] == "Tango: test/beamline/detz/Position"
        assert sources[f"{detector}/distance"] == "Tango: test/beamline/detz/Position"
        assert sources["/entry/source/current"] == "Tango: test/beamline/ring/Current"
        assert sources["/entry/source/probe"] == "configuration: mx.yaml source/probe"
        assert sources["/entry/instrument/beam/incident_wavelength"] == "Tango: test/beamline/mono/Wavelength"
        with h5py.File(output) as f:
            for path in sources:
                assert "photonflow_source" not in f[path].attrs
            assert f["entry/sample/name"][()].decode() == beamline_values()["datamanager/Sample"]
    finally:
        output.unlink()


def resolve_chain(f: h5py.File, start: str) -> list[str]:
    """Follows depends_on from ``start`` to '.', as a reader would; fails on a dangling link."""
    chain, current = [], start
    while current != ".":
        assert current in f, f"depends_on points to {current}, which does not exist"
        chain.append(current.rsplit("/", 1)[-1])
        current = f[current].attrs["depends_on"]
        current = current.decode() if isinstance(current, bytes) else current
    return chain


def test_depends_on_chains_resolve_for_the_sample_and_the_detector(recorded_file):
    output, _ = standardize(recorded_file, BeamlineReader(beamline_values()))
    try:
        with h5py.File(output) as f:
            sample_head = f["entry/sample/depends_on"][()].decode()
            assert resolve_chain(f, sample_head) == ["samx", "samy", "samz", "omega"]
            detector_head = f["entry/instrument/simulator/depends_on"][()].decode()
            assert resolve_chain(f, detector_head) == ["det_z"]
            fast = f["entry/instrument/simulator/module/fast_pixel_direction"]
            assert resolve_chain(f, fast.attrs["depends_on"]) == ["det_z"]
            assert f["entry/sample/transformations/samy"][()] == -0.25
            assert list(f["entry/sample/transformations/omega"].attrs["vector"]) == [-1, 0, 0]
    finally:
        output.unlink()


def test_a_rotating_axis_is_written_per_frame_at_each_frames_time(recorded_file):
    """omega moves during the series: each frame gets omega at the time the detector stamped it."""
    mapping = load_mapping(CONFIG / "mx.yaml", PREFIX)
    recorded = read_recorded_series(recorded_file)
    capture = SeriesCapture(mapping, BeamlineReader(beamline_values()))
    capture.snapshot("pre")
    omega = next(axis for axis in mapping.axes if axis.name == "omega")
    start = recorded.frame_times[0]
    for offset in np.linspace(-1.0, 1.0, 9):  # omega = 10 + 5 deg/s from one second before the first frame
        capture.sample(omega.capture, 10.0 + 5.0 * (offset + 1.0), start + offset)
    capture.finish_during()
    capture.snapshot("post")
    from photonflow.standardizing.nexus import axis_values

    values, unit = axis_values(capture, omega, recorded)
    expected = 10.0 + 5.0 * (recorded.frame_times[: recorded.frames] - start + 1.0)
    np.testing.assert_allclose(values, expected)
    assert unit == "deg" and len(values) == 6


def test_during_the_series_values_are_polled_or_taken_from_change_events(recorded_file):
    """The ring current is polled (2 Hz); omega comes from its change events, as the device
    forwards them (events: true in the mapping)."""
    mapping = load_mapping(CONFIG / "mx.yaml", PREFIX)
    reader = BeamlineReader(beamline_values())
    standardizer = Standardizer(mapping, reader, recorded_file.parents[1])
    try:
        standardizer.series_started(7)
        assert standardizer.wait_idle(30)  # the worker took the pre-exposure snapshot and polls
        before_polls = reader.reads
        start = time.time()
        for step in range(5):
            standardizer.attribute_changed("test/beamline/omega", "Position", 30.0 + step, start + 0.1 * step)
        standardizer.attribute_changed("test/beamline/samx", "Position", 9.0, start)  # not evented: ignored
        wait_until(lambda: reader.reads > before_polls, 30, what="a poll of the ring current during the series")
        standardizer.series_ended(7, str(recorded_file))
        assert standardizer.wait_idle(30)
        output = Path(standardizer.counters.last_file)
    finally:
        standardizer.close()
    try:
        with h5py.File(output) as f:
            current = f["entry/during_exposure/source/current"]
            assert current.attrs["NX_class"] in (b"NXlog", "NXlog")
            assert set(current["value"][()]) == {198.5} and len(current["value"]) >= 1
            omega = f["entry/during_exposure/sample/omega"]
            assert list(omega["value"][()]) == [30.0, 31.0, 32.0, 33.0, 34.0]
            assert np.allclose(np.diff(omega["time"][()]), 0.1)
            assert "samx" not in f["entry/during_exposure/sample"]
            assert f["entry/pre_exposure/shutter/status"][()] == b"OPEN"
            assert f["entry/post_exposure/monochromator/energy"][()] == pytest.approx(12.398419843320026)
    finally:
        output.unlink()


def test_an_absent_device_is_recorded_in_the_file_and_reported_never_fatal(recorded_file):
    reader = BeamlineReader(beamline_values(), absent=("test/beamline/attenuator",))
    output, standardizer = standardize(recorded_file, reader)
    try:
        assert standardizer.state == "ALARM"
        assert "attenuator/attenuator_transmission from test/beamline/attenuator/Transmission" in standardizer.status
        assert "not answering" in standardizer.status
        with h5py.File(output) as f:
            problems = [p.decode() for p in f["entry/capture_problems/problems"][()]]
            assert any("test/beamline/attenuator/Transmission" in p and "not answering" in p for p in problems)
            assert "attenuator" not in f["entry/instrument"]
        assert validate_nexus(output).problems == ()  # the rest of the file is still complete
    finally:
        output.unlink()


def test_a_file_outside_the_data_root_is_refused_and_an_existing_file_never_touched(recorded_file, tmp_path):
    mapping = load_mapping(CONFIG / "mx.yaml", PREFIX)
    standardizer = Standardizer(mapping, BeamlineReader(beamline_values()), recorded_file.parents[1])
    try:
        with pytest.raises(FilePathError, match="outside the data root"):
            standardizer.standardize(str(recorded_file.parents[1] / ".." / "elsewhere.h5"))
        existing = recorded_file.with_suffix(".nxs")
        existing.write_bytes(b"a file already written")
        with pytest.raises(FilePathError, match="already exists"):
            standardizer.standardize(str(recorded_file))
        assert existing.read_bytes() == b"a file already written"
        existing.unlink()
    finally:
        standardizer.close()


def test_a_tomography_joins_darks_flats_and_projections_in_one_valid_nxtomo(recorded_file, tmp_path):
    mapping = load_mapping(CONFIG / "tomo.yaml", PREFIX)
    recorded = read_recorded_series(recorded_file)
    parts = []
    for kind, angle in (("dark", 0.0), ("flat", 0.0), ("projection", 90.0)):
        capture = SeriesCapture(mapping, BeamlineReader({**beamline_values(), "omega/Position": angle}))
        capture.snapshot("pre")
        capture.finish_during()
        capture.snapshot("post")
        parts.append(TomographyPart(kind, recorded, capture))
    output = recorded_file.with_name("tomo.nx")
    write_tomography(output, mapping, parts, sample_name="rock")
    try:
        report = validate_nexus(output)
        assert report.definition == "NXtomo" and report.problems == ()
        with h5py.File(output) as f, h5py.File(recorded_file) as master:
            frames = master["entry/instrument/simulator/data"][()]
            np.testing.assert_array_equal(f["entry/data/data"][()], np.concatenate([frames] * 3))
            assert list(f["entry/instrument/detector/image_key"][()]) == [2] * 6 + [1] * 6 + [0] * 6
            assert list(f["entry/sample/rotation_angle"][()]) == [0.0] * 12 + [90.0] * 6
            assert f["entry/sample/x_translation"][0] == pytest.approx(0.0005)  # 0.5 mm in metres
            assert f["entry/instrument/detector/distance"][()] == pytest.approx(0.150)
    finally:
        output.unlink()


def run_planned_series(recorded_file: Path, folder: Path, series: list[tuple[str, str, float, float]]) -> Standardizer:
    """Series as a DataManager's structure runs them: each (node, role, omega, samx) a copy of the
    Recorder's file named as the data policy names its dataset, the DataManager's DataPolicy
    naming it at the series start."""
    folder.mkdir()
    values = beamline_values()
    standardizer = Standardizer(load_mapping(CONFIG / "tomo.yaml", PREFIX), BeamlineReader(values),
                                recorded_file.parents[1], datamanager=PREFIX["DATAMANAGER"])
    try:
        for series_id, (node, role, omega, samx) in enumerate(series, start=1):
            dataset = f"{series_id:04d}_tomo_{node}"
            copy = shutil.copy(recorded_file, folder / f"{dataset}.h5")
            values.update({"omega/Position": omega, "samx/Position": samx, "datamanager/DataPolicy": json.dumps(
                {"node": f"tomo/{node}", "role": role, "dataset": dataset, "sample": "rock"})})
            standardizer.series_started(series_id)
            standardizer.series_ended(series_id, str(copy))
            assert standardizer.wait_idle(30)
    finally:
        standardizer.close()
    return standardizer


def test_a_structures_darks_flats_and_projections_are_joined_in_one_valid_nxtomo(recorded_file):
    """The DataManager says what each series is: the darks and the flats get an NXtomo of their own
    (their image_key), the projections' NXtomo joins the three series of the tomography."""
    folder = recorded_file.parents[1] / "structure"
    standardizer = run_planned_series(recorded_file, folder, [
        ("darks", "dark", 0.0, 0.5), ("flats", "flat", 0.0, 5.0), ("projections", "data", 90.0, 0.5)])
    joined = folder / "0003_tomo_projections.nx"  # the suffix nabu opens
    assert standardizer.counters.last_file == str(joined) and standardizer.state == "ON", standardizer.status
    report = validate_nexus(joined)
    assert report.definition == "NXtomo" and report.problems == ()
    with h5py.File(joined) as f, h5py.File(recorded_file) as master:
        frames = master["entry/instrument/simulator/data"][()]
        np.testing.assert_array_equal(f["entry/data/data"][()], np.concatenate([frames] * 3))
        assert {source.file_name for source in f["entry/instrument/detector/data"].virtual_sources()} == {
            "0001_tomo_darks.h5", "0002_tomo_flats.h5", "0003_tomo_projections.h5"}  # relative: the folder can move
        assert list(f["entry/instrument/detector/image_key"][()]) == [2] * 6 + [1] * 6 + [0] * 6
        assert list(f["entry/sample/rotation_angle"][()]) == [0.0] * 12 + [90.0] * 6
        np.testing.assert_allclose(f["entry/sample/x_translation"][()], [0.0005] * 6 + [0.005] * 6 + [0.0005] * 6)
        assert f["entry/sample/name"][()] == b"rock"  # the DataManager's sample
    with h5py.File(folder / "0001_tomo_darks.nx") as f:
        assert list(f["entry/instrument/detector/image_key"][()]) == [2] * 6
    assert validate_nexus(folder / "0002_tomo_flats.nx").problems == ()


def test_a_series_whose_file_is_not_the_datamanagers_dataset_is_standardized_on_its_own(recorded_file):
    folder = recorded_file.parents[1] / "elsewhere"
    folder.mkdir()
    stray = shutil.copy(recorded_file, folder / "stray.h5")  # not the file the DataManager's policy named
    standardizer = Standardizer(load_mapping(CONFIG / "tomo.yaml", PREFIX), BeamlineReader({
        **beamline_values(), "datamanager/DataPolicy": json.dumps(
            {"node": "tomo/flats", "role": "flat", "dataset": "0002_tomo_flats", "sample": "rock"})}),
        recorded_file.parents[1], datamanager=PREFIX["DATAMANAGER"])
    try:
        standardizer.series_started(2)
        standardizer.series_ended(2, str(stray))
        assert standardizer.wait_idle(30)
    finally:
        standardizer.close()
    with h5py.File(stray.with_suffix(".nx")) as f:
        assert set(f["entry/instrument/detector/image_key"][()]) == {0}  # not called a flat: projections
        assert "name" not in f["entry/sample"]  # nobody named the sample: absent, never a constant
        assert "sample/name: no value was captured" in "\n".join(
            line.decode() for line in f["entry/capture_problems/problems"][()])


# -- mappings refused at load ----------------------------------------------------------------
GOOD = """beamline: X
definition: NXmx
components:
  source:
    current: {attribute: a/b/ring/Current, unit: mA}
axes:
  goniometer:
    omega: {attribute: a/b/omega/Position, unit: deg, type: rotation, vector: [-1, 0, 0]}
"""


def test_a_good_mapping_loads():
    mapping = parse_mapping(GOOD, "good.yaml")
    assert [c.source for c in mapping.captures("pre")] == ["a/b/ring/Current", "a/b/omega/Position"]
    assert mapping.chain_head("goniometer") == "omega"


@pytest.mark.parametrize("change, message", [
    (("source:", "storage:"), r"bad.yaml:4: components: unknown component 'storage'"),
    (("current:", "currant:"), r"bad.yaml:5: source: 'currant' is not a field of NXsource"),
    (("unit: mA", "unit: mm"), r"bad.yaml:5: source/current: unit 'mm' does not convert to A"),
    (("unit: mA", "unit: furlongs_per_fortnight"), r"bad.yaml:5: source/current: unit 'furlongs_per_fortnight'"),
    (("type: rotation", "type: spin"), r"bad.yaml:8: goniometer/omega: type must be rotation or translation"),
    (("vector: [-1, 0, 0]", "vector: [0, 0, 0]"), r"bad.yaml:8: goniometer/omega: vector must not be zero"),
    (("definition: NXmx", "definition: NXfancy"), r"bad.yaml:2: definition: 'NXfancy' is not one of NXmx, NXtomo"),
    (("unit: deg", "unit: deg, depends_on: kappa"), r"bad.yaml:7: goniometer/omega: depends_on 'kappa' is not"),
    (("unit: deg", "unit: deg, depends_on: omega"), r"bad.yaml:7: goniometer: the depends_on chain .* loops"),
    (("{attribute: a/b/ring/Current, unit: mA}", "{attribute: ring/Current, unit: mA}"),
     r"bad.yaml:5: source/current: attribute 'ring/Current' must be"),
    (("unit: mA}", "unit: mA, capture: [pre, sometimes]}"), r"bad.yaml:5: source/current: capture must be among"),
    (("current: {", "current: {rate: 0, "), r"bad.yaml:5: source/current: rate must be between 0 and 1000 Hz"),
    (("unit: mA}", "unit: mA, colour: red}"), r"bad.yaml:5: source/current: unknown key 'colour'"),
    (("components:", "components: ["), r"bad.yaml:\d+: not valid YAML"),
])
def test_a_mapping_mistake_names_the_file_line_and_key(change, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_mapping(GOOD.replace(*change), "bad.yaml")


def test_two_axes_both_last_in_their_chain_are_refused():
    text = GOOD + "    kappa: {attribute: a/b/kappa/Position, unit: deg, type: rotation, vector: [0, 0, 1]}\n"
    with pytest.raises(ConfigurationError, match="bad.yaml:7: goniometer: the axes must form one chain"):
        parse_mapping(text, "bad.yaml")


def test_the_shipped_mappings_load():
    for path in CONFIG.glob("*.yaml"):
        assert load_mapping(path, PREFIX).definition in ("NXmx", "NXtomo")


def test_polling_stops_when_asked(recorded_file):
    mapping = parse_mapping(GOOD.replace("unit: mA}", "unit: mA, capture: during, rate: 100}"), "x.yaml")
    reader = BeamlineReader({"ring/Current": 1.0, "omega/Position": 0.0})
    capture = SeriesCapture(mapping, reader)
    stop = threading.Event()
    poller = threading.Thread(target=capture.poll_during, args=(stop,))
    poller.start()
    wait_until(lambda: reader.reads >= 5, 30, what="five polls of the ring current")
    stop.set()
    poller.join(2)
    assert not poller.is_alive()
    capture.finish_during()
    times, values = capture.series("source/current")
    assert len(values) >= 5 and set(values) == {1.0}


def test_a_deployments_mappings_are_checked_before_anything_starts(tmp_path):
    from photonflow.deployment import load_deployment
    from photonflow.standardizing.mapping import check_mappings

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("current:", "currant:"))
    deployment = f"""servers:
  PhotonflowStandardizer/x:
    PhotonflowStandardizer:
      x/photonflow/standardizer:
        properties: {{Controller: x/photonflow/controller, MappingFile: {bad}, DevicePrefix: x/beamline,
                     DataManager: x/photonflow/datamanager, DataRoot: /tmp}}
"""
    with pytest.raises(ConfigurationError, match=rf"{bad}:5: source: 'currant' is not a field of NXsource"):
        check_mappings(load_deployment(deployment, "x.yaml", environment={}))
    good = load_deployment(deployment.replace(str(bad), str(CONFIG / "mx.yaml")), "x.yaml", environment={})
    assert [m.definition for m in check_mappings(good)] == ["NXmx"]


def test_what_tango_could_not_give_comes_from_the_detector_or_is_absent_never_invented(recorded_file):
    """The detector-distance motor and the DataManager not answering, samy's motor gone: det_z is
    the distance the detector itself reported, samy is left out of the chain (samx hangs from
    samz), and the sample has no name rather than a made-up one; each is a capture problem."""
    reader = BeamlineReader(beamline_values(), absent=("test/beamline/detz", "test/beamline/samy",
                                                       "test/photonflow/datamanager"))
    output, standardizer = standardize(recorded_file, reader)
    try:
        assert standardizer.state == "ALARM"
        with h5py.File(output) as f, h5py.File(recorded_file) as master:
            told = master["entry/instrument/simulator/distance"][()]
            det_z = f["entry/instrument/simulator/transformations/det_z"]
            assert det_z[()] == pytest.approx(told) and det_z.attrs["units"] == "m" and told > 0
            assert f["entry/instrument/simulator/distance"][()] == pytest.approx(told)
            transformations = f["entry/sample/transformations"]
            assert "samy" not in transformations
            assert transformations["samx"].attrs["depends_on"] == transformations["samz"].name
            assert resolve_chain(f, f["entry/sample/depends_on"][()].decode()) == ["samx", "samz", "omega"]
            assert "name" not in f["entry/sample"]
            problems = " ".join(p.decode() for p in f["entry/capture_problems/problems"][()])
            assert "samy" in problems and "sample/name" in problems
            centre = master["entry/instrument/simulator"]
            for name in ("beam_center_x", "beam_center_y", "serial_number", "bit_depth_readout"):
                assert f[f"entry/instrument/simulator/{name}"][()] == centre[name][()]
    finally:
        output.unlink()


def test_a_validator_false_positive_is_reported_as_such_and_a_real_problem_still_counts(recorded_file, tmp_path):
    """pynxtools reports NXdetector's own pixel_mask as a reserved suffix without its field: that is
    named as its mistake (with its version), and a field NXmx requires, removed, is still a problem."""
    output, _ = standardize(recorded_file, BeamlineReader(beamline_values()))
    try:
        masked = tmp_path / "masked.nxs"
        shutil.copy(output, masked)
        shutil.copy(recorded_file, tmp_path / recorded_file.name)
        with h5py.File(masked, "a") as f:
            f["entry/instrument/simulator"].create_dataset("pixel_mask", data=np.zeros((40, 50), dtype=np.uint32))
        report = validate_nexus(masked)
        assert report.problems == ()
        assert len(report.false_positives) == 1 and "pixel_mask" in report.false_positives[0]
        assert "known false positive of pynxtools" in report.false_positives[0]
        with h5py.File(masked, "a") as f:
            del f["entry/instrument/simulator/sensor_material"]
        assert any("sensor_material" in problem for problem in validate_nexus(masked).problems)
    finally:
        output.unlink()


def test_a_sample_nobody_named_is_absent_and_the_standardizer_says_so(recorded_file):
    """The DataManager answers but no experiment named a sample: NXmx requires a name, so the
    Standardizer writes none, goes ALARM and says which value is missing."""
    output, standardizer = standardize(recorded_file, BeamlineReader({**beamline_values(), "datamanager/Sample": ""}))
    try:
        assert standardizer.state == "ALARM" and "sample/name: no value was captured" in standardizer.status
        with h5py.File(output) as f:
            assert "name" not in f["entry/sample"]
        assert any("sample/name" in problem for problem in validate_nexus(output).problems)
    finally:
        output.unlink()
