"""A scan axis' per-frame angles come from the trigger positions its position-compare latched,
when they belong to the series; anything off (a range not covered, a frame off its step, fewer
triggers than frames, motion without triggers, a frame rate not kept) is a warning of the
Standardizer and a line of the file's capture_problems. The NXmx is read back with Diamond's
``nxmx`` reader, the one DIALS builds on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest

from photonflow.errors import ConfigurationError
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.standardizing.capture import SeriesCapture
from photonflow.standardizing.mapping import load_mapping, parse_mapping
from photonflow.standardizing.nexus import axis_per_frame
from photonflow.standardizing.nxtomo import TomographyPart, write_tomography
from photonflow.standardizing.recorded import read_recorded_series
from photonflow.standardizing.standardizer import Standardizer
from photonflow.standardizing.validation import validate_nexus
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import StreamSender
from tests.helpers.recording import DETECTOR, SHAPE, frame
from tests.helpers.standardizing import CONFIG, PREFIX, BeamlineReader, assert_nxmx_rotation_scan, beamline_values

FRAMES = 6
PERIOD = 0.01  # s between frames, as the detector was asked
STEP = 0.1  # deg per frame
SERIES_START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC).timestamp()  # when the detector was armed
FIRST_TRIGGER = SERIES_START + 1.5  # after the run-up
# the encoder a little off the ideal positions, as a real one is (1 % of a step at most)
ENCODER_NOISE = np.array([0.0004, -0.0008, 0.001, 0.0, -0.0003, 0.0006])


def record_series(root: Path, name: str, frame_times, frame_time: float = PERIOD) -> Path:
    """A Recorder file of ``len(frame_times)`` frames stamped ``frame_times``, its series started
    at SERIES_START, the detector asked for ``frame_time``."""
    sender = StreamSender("tcp://127.0.0.1:*")
    recorder = Recorder(root)
    try:
        path = recorder.arm(RecordingRequest(len(frame_times), 7, sender.endpoint, f"mx/{name}.h5"))
        encoder = StinsEncoder()
        start = datetime.fromtimestamp(SERIES_START, UTC).isoformat().replace("+00:00", "Z")
        detector = {**DETECTOR, "frame_time": frame_time, "sensor_material": "Si", "sensor_thickness": 450e-6,
                    "beam_center_x": 12.0, "beam_center_y": 10.0}
        sender.send(encoder.series_start(7, len(frame_times), SHAPE, "uint16", detector, start_time=start))
        for number, timestamp in enumerate(frame_times):
            sender.send(encoder.data(7, number, frame(number), timestamp))
        sender.send(encoder.series_end(7, len(frame_times), len(frame_times)))
        assert recorder.wait(30)
    finally:
        sender.close()
    return path


def trigger_times(count: int = FRAMES) -> np.ndarray:
    return FIRST_TRIGGER + PERIOD * np.arange(count)


def pcomp(positions, times, start: float = 0.0, step: float = STEP, count: int = FRAMES) -> dict[str, object]:
    """omega's position-compare as the Standardizer reads it after the series."""
    return {"omega_pcomp/CapturedPositions": np.asarray(positions, dtype=np.float64),
            "omega_pcomp/CapturedTimes": np.asarray(times, dtype=np.float64),
            "omega_pcomp/Start": start, "omega_pcomp/Step": step, "omega_pcomp/Count": count}


def triggered_positions(count: int = FRAMES) -> np.ndarray:
    return STEP * np.arange(count) + ENCODER_NOISE[:count]


def standardize_series(recorded: Path, reader: BeamlineReader, omega_readings=(), mapping: str = "mx.yaml"):
    """The Standardizer through one series: omega's change events ``omega_readings`` ((value,
    time) pairs) arrive during it. Returns the file and the Standardizer (closed)."""
    standardizer = Standardizer(load_mapping(CONFIG / mapping, PREFIX), reader, recorded.parents[1])
    try:
        standardizer.series_started(7)
        assert standardizer.wait_idle(30)
        for value, timestamp in omega_readings:
            standardizer.attribute_changed("test/beamline/omega", "Position", value, timestamp)
        standardizer.series_ended(7, str(recorded))
        assert standardizer.wait_idle(30)
    finally:
        standardizer.close()
    return Path(standardizer.counters.last_file), standardizer


def file_problems(output: Path) -> list[str]:
    with h5py.File(output) as f:
        if "entry/capture_problems" not in f:
            return []
        return [line.decode() for line in f["entry/capture_problems/problems"][()]]


@pytest.fixture
def data_root(tmp_path) -> Path:
    return tmp_path


def test_each_frames_omega_is_the_position_latched_at_its_trigger(data_root):
    recorded = record_series(data_root, "triggered", trigger_times())
    reader = BeamlineReader({**beamline_values(omega=0.0), **pcomp(triggered_positions(), trigger_times())})
    output, standardizer = standardize_series(recorded, reader)
    assert standardizer.state == "ON" and standardizer.counters.warnings == (), standardizer.status
    with h5py.File(output) as f:
        transformations = f["entry/sample/transformations"]
        np.testing.assert_array_equal(transformations["omega"][()], triggered_positions())
        np.testing.assert_array_equal(transformations["omega_increment"][()], [STEP] * FRAMES)
        assert transformations["omega_increment_set"][()] == STEP
        np.testing.assert_allclose(transformations["omega_end"][()], triggered_positions() + STEP)
        assert transformations["omega_end"].attrs["units"] == "deg"
        assert f["entry/instrument/sim/frame_time"][()] == PERIOD  # kept: the frames came at the period asked
    assert file_problems(output) == []
    report = validate_nexus(output)
    assert report.definition == "NXmx" and report.problems == ()


def test_diamonds_nxmx_reader_finds_the_scan_start_increment_and_images(data_root):
    recorded = record_series(data_root, "read_back", trigger_times())
    reader = BeamlineReader({**beamline_values(omega=0.0), **pcomp(triggered_positions(), trigger_times())})
    output, _ = standardize_series(recorded, reader)
    assert_nxmx_rotation_scan(output, FRAMES, 0.0, STEP)


def test_an_earlier_scans_capture_is_ignored(data_root):
    """The position-compare still holds the previous scan's positions, latched before this series
    started: they are not this series' angles."""
    recorded = record_series(data_root, "earlier", trigger_times())
    earlier = SERIES_START - 60.0 + PERIOD * np.arange(FRAMES)
    reader = BeamlineReader({**beamline_values(omega=30.0), **pcomp(triggered_positions() + 90.0, earlier)})
    output, standardizer = standardize_series(recorded, reader)
    assert standardizer.state == "ON", standardizer.status  # omega did not move: its one value is right
    with h5py.File(output) as f:
        transformations = f["entry/sample/transformations"]
        np.testing.assert_array_equal(transformations["omega"][()], [30.0] * FRAMES)
        assert "omega_end" not in transformations and "omega_increment_set" not in transformations


def test_frames_short_of_the_requested_range_are_a_capture_problem(data_root):
    """Armed for 10 triggers, the series took 6 frames: 0 to 0.6 deg of the 0 to 1 deg asked for."""
    recorded = record_series(data_root, "short", trigger_times())
    reader = BeamlineReader({**beamline_values(omega=0.0), **pcomp(triggered_positions(), trigger_times(), count=10)})
    output, standardizer = standardize_series(recorded, reader)
    expected = "omega: the frames cover 0 to 0.6006 deg (6 triggered frames), not the requested 0 to 1 deg (10 × 0.1 deg)"
    assert standardizer.counters.warnings == (expected,)
    assert standardizer.state == "ALARM" and expected in standardizer.status
    assert file_problems(output) == [expected]


def test_a_frame_more_than_5_percent_of_a_step_off_is_a_capture_problem(data_root):
    positions = STEP * np.arange(FRAMES)
    positions[3] += 0.08 * STEP  # the encoder latched late on trigger 3
    recorded = record_series(data_root, "off_step", trigger_times())
    reader = BeamlineReader({**beamline_values(omega=0.0), **pcomp(positions, trigger_times())})
    output, standardizer = standardize_series(recorded, reader)
    expected = ("omega: 1 frame(s) more than 5% of the 0.1 deg step from start + i × step (worst: frame 3 at 0.308 "
                "deg, planned 0.3 deg)")
    assert standardizer.counters.warnings == (expected,)
    assert file_problems(output) == [expected]
    with h5py.File(output) as f:  # the angle written is the one measured
        assert f["entry/sample/transformations/omega"][3] == pytest.approx(0.308)


def test_fewer_trigger_positions_than_frames_is_a_capture_problem(data_root):
    """Two frames have no latched position: they get their planned angle, and it is said."""
    recorded = record_series(data_root, "fewer", trigger_times())
    reader = BeamlineReader({**beamline_values(omega=0.0), **pcomp(triggered_positions(4), trigger_times(4))})
    output, standardizer = standardize_series(recorded, reader)
    assert standardizer.counters.warnings == (
        "omega: the frames cover 0 to 0.4 deg (4 triggered frames), not the requested 0 to 0.6 deg (6 × 0.1 deg)",
        "omega: test/beamline/omega_pcomp captured 4 trigger positions for 6 frames; frames 4 to 5 have their "
        "planned angle start + i × step",
    )
    with h5py.File(output) as f:
        np.testing.assert_allclose(f["entry/sample/transformations/omega"][()],
                                   [*triggered_positions(4), 0.4, 0.5])


def test_an_axis_turned_without_triggers_is_interpolated_and_flagged(data_root):
    """No trigger capture (the position-compare was never armed): omega per frame from its
    readings at each frame's time, flagged with the steps that gives."""
    frame_times = FIRST_TRIGGER + np.array([0.0, 0.01, 0.02, 0.03, 0.04, 0.1])  # the last frame late
    recorded = record_series(data_root, "interpolated", frame_times)
    reader = BeamlineReader(beamline_values(omega=0.0))
    readings = [(10.0 + 100.0 * offset, FIRST_TRIGGER + offset) for offset in np.linspace(-1.0, 1.0, 9)]  # 100 deg/s
    output, standardizer = standardize_series(recorded, reader, readings)
    interpolated = "omega per frame interpolated from motor readings: steps 1 to 6 deg"
    assert interpolated in standardizer.counters.warnings and standardizer.state == "ALARM"
    assert interpolated in file_problems(output)
    with h5py.File(output) as f:
        np.testing.assert_allclose(f["entry/sample/transformations/omega"][()], [10, 11, 12, 13, 14, 20], atol=1e-3)
        assert "omega_end" not in f["entry/sample/transformations"]  # no step is known


def test_an_axis_that_moved_with_neither_triggers_nor_readings_is_flagged(data_root):
    recorded = read_recorded_series(record_series(data_root, "held", trigger_times()))
    mapping = load_mapping(CONFIG / "mx.yaml", PREFIX)
    values = beamline_values(omega=30.0)
    capture = SeriesCapture(mapping, BeamlineReader(values))
    capture.snapshot("pre")
    values["omega/Position"] = 36.0
    capture.snapshot("post")
    capture.read_triggers()
    omega = next(axis for axis in mapping.axes if axis.name == "omega")
    found = axis_per_frame(capture, omega, recorded)
    np.testing.assert_array_equal(found.values, [30.0] * FRAMES)
    assert capture.problem_list() == ["omega moved from 30 to 36 deg during the series with neither trigger "
                                      "positions nor readings: every frame has 30"]


def test_a_frame_rate_not_kept_writes_the_achieved_frame_time_and_says_so(data_root):
    recorded = record_series(data_root, "slow", FIRST_TRIGGER + 0.025 * np.arange(FRAMES))  # 40 Hz of 100 asked
    reader = BeamlineReader({**beamline_values(omega=0.0), **pcomp(triggered_positions(), trigger_times())})
    output, standardizer = standardize_series(recorded, reader)
    expected = ("frame_time: the frames came every 0.025 s (40 Hz), not every 0.01 s as requested; the file has the "
                "achieved one")
    assert standardizer.counters.warnings == (expected,)
    with h5py.File(output) as f:
        assert f["entry/instrument/sim/frame_time"][()] == pytest.approx(0.025)
        assert f["entry/instrument/sim/frame_time"].attrs["units"] == "s"


def test_an_absent_position_compare_is_a_capture_failure_never_fatal(data_root):
    recorded = record_series(data_root, "no_pcomp", trigger_times())
    reader = BeamlineReader(beamline_values(omega=0.0), absent=("test/beamline/omega_pcomp",))
    output, standardizer = standardize_series(recorded, reader)
    assert standardizer.counters.warnings == (
        "post: goniometer/omega from test/beamline/omega_pcomp (trigger positions): ConnectionError: "
        "test/beamline/omega_pcomp is not answering",)
    assert standardizer.counters.capture_failures == 1
    with h5py.File(output) as f:  # the file is written, omega as it stood
        np.testing.assert_array_equal(f["entry/sample/transformations/omega"][()], [0.0] * FRAMES)


def test_the_nxtomo_rotation_angle_is_the_trigger_positions(data_root):
    mapping = load_mapping(CONFIG / "tomo.yaml", PREFIX)
    still = read_recorded_series(record_series(data_root, "still", trigger_times()))
    turning = read_recorded_series(record_series(data_root, "turning", trigger_times()))
    positions = 30.0 * np.arange(FRAMES) + ENCODER_NOISE  # 0 to 180 deg in 30 deg steps
    parts = []
    for kind, recorded, trigger in (("dark", still, {}), ("flat", still, {}),
                                    ("projection", turning, pcomp(positions, trigger_times(), step=30.0))):
        capture = SeriesCapture(mapping, BeamlineReader({**beamline_values(omega=0.0), **trigger}))
        capture.snapshot("pre")
        capture.finish_during()
        capture.snapshot("post")
        capture.read_triggers()
        parts.append(TomographyPart(kind, recorded, capture))
    output = data_root / "mx" / "tomo.nx"
    write_tomography(output, mapping, parts, sample_name="rock")  # the DataManager's: nothing missing
    with h5py.File(output) as f:
        np.testing.assert_array_equal(f["entry/sample/rotation_angle"][()], [0.0] * 12 + list(positions))
        assert "capture_problems" not in f["entry"]
    assert validate_nexus(output).problems == ()


# -- the mapping ---------------------------------------------------------------------------------
MAPPING = """beamline: X
definition: NXmx
devices:
  omega: a/b/omega
  pcomp: a/b/omega_pcomp
axes:
  goniometer:
    omega: {attribute: omega/Position, unit: deg, type: rotation, vector: [-1, 0, 0], scan: true, triggers: pcomp}
"""


def test_a_triggered_axis_names_its_position_compare_device():
    mapping = parse_mapping(MAPPING, "good.yaml")
    assert [(axis.name, axis.triggers) for axis in mapping.triggered()] == [("omega", "a/b/omega_pcomp")]


@pytest.mark.parametrize("change, message", [
    (("triggers: pcomp", "triggers: pcmop"), r"bad.yaml:8: goniometer/omega: triggers 'pcmop' is not a device of "
                                             r"'devices:' \(known: omega, pcomp\)"),
    (("scan: true, ", ""), r"bad.yaml:8: goniometer/omega: triggers needs 'scan: true'"),
])
def test_a_triggers_mistake_names_the_line(change, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_mapping(MAPPING.replace(*change), "bad.yaml")
