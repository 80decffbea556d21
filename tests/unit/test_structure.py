"""Data structure descriptions (the ESRF Data Manager's sequence / paramSet / acquisition / scan),
their runs through a sequence, and the data policy's paths."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from photonflow.datamanager.policy import DataPolicy
from photonflow.datamanager.structure import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    StructureRun,
    load_structure,
    parse_structure,
)
from photonflow.errors import ConfigurationError, FilePathError, StateError

CONFIG = Path(__file__).resolve().parents[2] / "config" / "structures"
ENERGIES = [7.0, 7.05, 7.1, 7.15, 7.2]
PER_ENERGY = [("monopos", "monopos"), ("white_before", "white"), ("data", "data"), ("white_after", "white")]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "structure.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_eff_example_expands_to_darks_then_four_acquisitions_per_energy():
    structure = load_structure(CONFIG / "eff_energy_scan.yaml")
    expected = [("eff/dark_for_white", "dark"), ("eff/dark_for_data", "dark")]
    expected += [(f"eff/energy[{index}]/{name}", role) for index in range(5) for name, role in PER_ENERGY]
    assert [(node.path, node.role) for node in structure.nodes] == expected


def test_every_eff_energy_point_carries_its_energy_merged_with_the_experiment_parameters():
    nodes = {node.path: node for node in load_structure(CONFIG / "eff_energy_scan.yaml").nodes}
    for index, energy in enumerate(ENERGIES):
        for name, _ in PER_ENERGY:
            node = nodes[f"eff/energy[{index}]/{name}"]
            assert node.parameters["energy"] == pytest.approx(energy)
            assert node.beamline["mono/Energy"] == pytest.approx(energy)
            assert node.parameters["user"] == "toto"
            assert node.parameters["edge"] == "Fe K (simulated)"
    white = nodes["eff/energy[2]/white_before"]
    assert white.name == "white_before"
    assert white.controller == {"frames": 10, "exposure": 0.002, "period": 0.005}
    assert white.beamline == {"mono/Energy": pytest.approx(7.1), "shutter": "open", "samx": 5.0}
    assert nodes["eff/energy[2]/data"].beamline["samx"] == 0.0
    assert nodes["eff/energy[0]/monopos"].controller["frames"] == 1
    assert nodes["eff/energy[0]/monopos"].beamline["shutter"] == "closed"
    dark = nodes["eff/dark_for_white"]
    assert "energy" not in dark.parameters and "mono/Energy" not in dark.beamline
    assert dark.beamline == {"shutter": "closed", "samx": 0.0}
    assert white.dataset == "eff_energy002_white_before"


def test_the_eff_example_stays_small_enough_for_a_demo_under_a_minute():
    for node in load_structure(CONFIG / "eff_energy_scan.yaml").nodes:
        assert node.controller["frames"] <= 10
        assert node.controller["exposure"] == 0.002
        assert node.controller["period"] == 0.005


def test_the_tomography_example_is_darks_flats_then_projections():
    structure = load_structure(CONFIG / "tomography.yaml")
    assert [(node.path, node.role, node.controller["frames"]) for node in structure.nodes] == [
        ("tomo/darks", "dark", 10), ("tomo/flats", "flat", 10), ("tomo/projections", "data", 90)]
    darks, flats, projections = structure.nodes
    assert darks.beamline["shutter"] == "closed"
    assert flats.beamline == {"shutter": "open", "samx": 20.0, "omega": 0.0}
    assert projections.parameters["rotation"] == "continuous"
    assert projections.parameters["end_angle"] == 180.0
    assert projections.rotation == {"axis": "omega", "start": 0.0, "end": 180.0}  # the sequencer turns omega
    assert darks.rotation is None and flats.rotation is None


def test_a_clients_overrides_change_frames_by_role_parameters_and_a_beamline_value():
    overrides = {"frames": {"data": 30, "dark": 4}, "parameters": {"exposure": 0.004, "end_angle": 90},
                 "beamline": {"sample": {"out": 6.0}}}
    structure = load_structure(CONFIG / "tomography.yaml", overrides=overrides)
    darks, flats, projections = structure.nodes
    assert [node.controller["frames"] for node in structure.nodes] == [4, 10, 30]
    assert {node.controller["exposure"] for node in structure.nodes} == {0.004}
    assert flats.beamline["samx"] == 6.0 and darks.beamline["samx"] == 0.0
    assert projections.rotation == {"axis": "omega", "start": 0.0, "end": 90.0}
    assert structure.overrides == overrides


def test_a_saved_run_resumes_with_the_overrides_it_was_loaded_with():
    structure = load_structure(CONFIG / "tomography.yaml", overrides={"frames": {"data": 12}})
    run = StructureRun(structure, "tm0001", "s1", "rock")
    restored = StructureRun.from_json(run.to_json())
    assert restored.nodes[-1].controller["frames"] == 12


@pytest.mark.parametrize(("overrides", "words"), [
    ({"frames": {"dak": 4}}, ["overrides:3:", "frames: unknown role 'dak'"]),
    ({"frames": {"data": 0}}, ["overrides:3:", "frames: data: expected a whole number of frames"]),
    ({"parameters": {"exposure": -1}}, ["overrides:3:", "exposure: must be more than 0 s"]),
    ({"parameters": {"period": 0.001}}, ["tomography.yaml:", "period 0.001 s is shorter than exposure"]),
    ({"parameters": {"end_angle": 0.0}}, ["overrides:3:", "end_angle must differ from start_angle"]),
    ({"beamline": {"sample": {"away": 1.0}}}, ["overrides:4:", "sample: 'away' is not one of in, out"]),
    ({"beamline": {"shutter": {"open": 1}}}, ["overrides:3:", "'shutter' has no table of values", "known: sample"]),
    ({"colour": "red"}, ["overrides:2:", "unknown key 'colour'"]),
])
def test_bad_overrides_are_refused_saying_which_and_why(overrides, words):
    with pytest.raises(ConfigurationError) as caught:
        load_structure(CONFIG / "tomography.yaml", overrides=overrides)
    for word in words:
        assert word in str(caught.value)


def test_a_continuous_rotation_needs_its_axis_and_both_angles(tmp_path):
    text = """
        name: t
        beamline:
          start_angle: omega
        sequence:
          - paramSet: {frames: 2, exposure: 0.1, period: 0.1, start_angle: 0}
          - acquisition: {name: p, role: data, parameters: {rotation: continuous}}
    """
    with pytest.raises(ConfigurationError, match=r"structure.yaml:7: acquisition 'p': rotation: continuous needs "
                                                 "end_angle"):
        load_structure(write(tmp_path, text))
    with pytest.raises(ConfigurationError, match=r"needs 'start_angle: <motor>' under beamline:"):
        load_structure(write(tmp_path, text.replace("start_angle: omega", "energy: mono/Energy")))
    with pytest.raises(ConfigurationError, match=r"'spin' is not a rotation photonflow knows"):
        load_structure(write(tmp_path, text.replace("continuous", "spin")))


def test_a_scan_takes_a_list_of_values_and_nested_scans_repeat_inside(tmp_path):
    structure = load_structure(write(tmp_path, """
        name: grid
        roles: [i0]
        sequence:
          - paramSet: {frames: 2, exposure: 0.001, period: 0.002}
          - scan:
              name: y
              parameter: y
              values: [1.5, 2.5]
              sequence:
                - scan:
                    name: x
                    parameter: x
                    range: {start: 0, stop: 1, points: 3}
                    sequence:
                      - acquisition: {name: spot, role: i0}
                - paramSet: {frames: 5}
                - acquisition: {name: after, role: reference}
    """))
    assert [(node.path, node.parameters.get("x"), node.parameters["y"], node.controller["frames"])
            for node in structure.nodes] == [
        ("grid/y[0]/x[0]/spot", 0.0, 1.5, 2), ("grid/y[0]/x[1]/spot", 0.5, 1.5, 2), ("grid/y[0]/x[2]/spot", 1.0, 1.5, 2),
        ("grid/y[0]/after", None, 1.5, 5),
        ("grid/y[1]/x[0]/spot", 0.0, 2.5, 2), ("grid/y[1]/x[1]/spot", 0.5, 2.5, 2), ("grid/y[1]/x[2]/spot", 1.0, 2.5, 2),
        ("grid/y[1]/after", None, 2.5, 5),
    ]
    assert "i0" in structure.roles


HEADER = """\
name: bad
beamline:
  shutter: {setting: shutter, values: [open, closed]}
sequence:
  - paramSet: {frames: 2, exposure: 0.001, period: 0.002}
"""


@pytest.mark.parametrize(("body", "line", "words"), [
    ("  - acqusition: {name: a, role: dark}\n", 6, ["unknown item 'acqusition'"]),
    ("  - acquisition: {name: a, role: darkish}\n", 6, ["role", "unknown role 'darkish'"]),
    ("  - scan:\n      name: e\n      parameter: energy\n      sequence:\n        - acquisition: {name: a, role: data}\n",
     6, ["scan 'e'", "values"]),
    ("  - acquisition:\n      name: a\n      role: data\n      frames: ten\n", 9, ["frames", "whole number", "ten"]),
    ("  - acquisition:\n      name: a\n      role: data\n      frames: 2.5\n", 9, ["frames", "whole number"]),
    ("  - acquisition: {name: a, role: data, exposure: fast}\n", 6, ["exposure", "expected a number", "fast"]),
    ("  - acquisition: {name: a, role: data, shuter: open}\n", 6, ["unknown key 'shuter'"]),
    ("  - acquisition: {name: a, role: data, shutter: ajar}\n", 6, ["shutter", "'ajar' is not one of open, closed"]),
    ("  - acquisition: {name: a, role: data, period: 0.0005}\n", 6, ["period 0.0005 s is shorter than exposure"]),
    ("  - acquisition: {name: a, role: data}\n  - acquisition: {name: a, role: dark}\n", 7, ["'a' is used twice"]),
    ("  - acquisition: {name: 'a/b', role: data}\n", 6, ["name", "'a/b' is not a name"]),
    ("  - scan: {name: e, parameter: energy, range: {start: 1, stop: 2, step: -1}, sequence: [{acquisition: {name: a, role: data}}]}\n",
     6, ["step", "does not go from 1.0 to 2.0"]),
    ("  - acquisition: {name: a, role: data\n", 7, ["not valid YAML"]),
    ("  - acquisition: {name: a}\n", 6, ["missing 'role'"]),
    ("  - scan: {name: e, parameter: energy, values: [1], sequence: [{acquisition: {name: a, role: data, frames: 0}}]}\n",
     6, ["frames", "whole number", "'0'"]),
    ("  - paramSet: {energy: [1, 2]}\n  - acquisition: {name: a, role: data}\n", 6, ["energy", "single value"]),
    ("sequences: []\n", 6, ["unknown key 'sequences'"]),
])
def test_a_bad_structure_is_refused_naming_file_line_and_key(tmp_path, body, line, words):
    path = write(tmp_path, HEADER + body)
    with pytest.raises(ConfigurationError) as caught:
        load_structure(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}:"), message
    for word in words:
        assert word in message
    assert caught.value.reason == "InvalidConfiguration"


def test_a_file_may_describe_its_extra_roles(tmp_path):
    structure = load_structure(write(tmp_path, """
        name: xrf
        roles: {i0: incoming flux monitor, dead_time: detector dead-time calibration}
        sequence:
          - acquisition: {name: monitor, role: i0, frames: 1, exposure: 0.1, period: 0.1}
          - acquisition: {name: calibration, role: dead_time, frames: 1, exposure: 0.1, period: 0.1}
    """))
    assert [(node.path, node.role) for node in structure.nodes] == [("xrf/monitor", "i0"), ("xrf/calibration", "dead_time")]
    assert structure.roles[-2:] == ("i0", "dead_time")


def test_an_acquisition_without_frames_says_where_to_set_them(tmp_path):
    path = write(tmp_path, "name: bad\nsequence:\n  - acquisition: {name: a, role: data, exposure: 0.1, period: 0.2}\n")
    with pytest.raises(ConfigurationError, match=r"structure.yaml:3: acquisition 'a': frames is not set"):
        load_structure(path)


def test_a_missing_file_and_an_empty_file_are_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read the structure file"):
        load_structure(tmp_path / "absent.yaml")
    with pytest.raises(ConfigurationError, match="the structure file is empty"):
        parse_structure("", "empty.yaml")


def eff_run() -> StructureRun:
    return StructureRun(load_structure(CONFIG / "eff_energy_scan.yaml"), "ma1234", "20261201", "fe_foil")


def test_a_structure_run_hands_out_acquisitions_in_order_and_tracks_their_states():
    run = eff_run()
    assert run.progress == 0.0
    first = run.next_acquisition()
    assert first.path == "eff/dark_for_white"
    assert run.state(first.path) == RUNNING
    assert run.current == first
    with pytest.raises(StateError, match="eff/dark_for_white is still running"):
        run.next_acquisition()
    run.finish(first.path, ok=True, run=1)
    assert run.state(first.path) == DONE and run.run_of(first.path) == 1
    second = run.next_acquisition()
    run.finish(second.path, ok=False)
    assert run.state(second.path) == FAILED
    with pytest.raises(StateError, match="not running"):
        run.finish(second.path, ok=True)
    assert run.next_acquisition().path == "eff/energy[0]/monopos"
    assert run.progress == pytest.approx(1 / 22)


def test_a_failed_acquisition_is_retried_when_asked():
    run = eff_run()
    node = run.next_acquisition()
    run.finish(node.path, ok=False)
    run.retry(node.path)
    assert run.state(node.path) == PENDING
    assert run.next_acquisition().path == node.path


def test_a_structure_run_resumes_from_its_saved_state_after_a_restart():
    before = eff_run()
    for number in range(1, 8):
        before.finish(before.next_acquisition().path, ok=True, run=number)
    interrupted = before.next_acquisition()
    saved = json.dumps(before.to_dict())

    after = StructureRun.from_json(saved)  # loads the structure file again, as a restarted DataManager does
    assert (after.proposal, after.session, after.sample) == ("ma1234", "20261201", "fe_foil")
    assert after.current.path == interrupted.path == "eff/energy[1]/white_before"
    assert after.run_of("eff/energy[1]/monopos") == 7
    assert after.progress == pytest.approx(7 / 22)
    after.finish(interrupted.path, ok=True, run=8)
    assert after.next_acquisition().path == "eff/energy[1]/data"
    assert [after.state(node.path) for node in after.nodes][:9] == [DONE] * 8 + [RUNNING]


def test_a_saved_run_is_refused_when_the_structure_changed(tmp_path):
    saved = eff_run().to_dict()
    other = parse_structure("name: eff\nsequence:\n  - acquisition: {name: a, role: data, frames: 1, exposure: 1, period: 1}\n")
    with pytest.raises(ConfigurationError, match="changed since this run was saved"):
        StructureRun.from_dict(saved, other)
    with pytest.raises(ConfigurationError, match="incomplete or damaged"):
        StructureRun.from_dict({"proposal": "x"})


def test_a_whole_structure_runs_to_the_end():
    run = eff_run()
    seen = []
    while (node := run.next_acquisition()) is not None:
        seen.append(node.role)
        run.finish(node.path, ok=True, run=len(seen))
    assert run.progress == 1.0 and run.finished
    assert seen == ["dark", "dark"] + ["monopos", "white", "data", "white"] * 5


def test_the_data_policy_lays_datasets_out_as_esrf_does(tmp_path):
    policy = DataPolicy(tmp_path, "id21")
    assert policy.raw_dataset("ma1234", "20261201", "fe_foil", "eff_energy002_data") == (
        tmp_path / "ma1234" / "id21" / "20261201" / "RAW_DATA" / "fe_foil" / "fe_foil_eff_energy002_data")
    assert policy.processed_dataset("ma1234", "20261201", "fe_foil", "0001") == (
        tmp_path / "ma1234" / "id21" / "20261201" / "PROCESSED_DATA" / "fe_foil" / "fe_foil_0001")


@pytest.mark.parametrize(("names", "reason"), [
    (("..", "s", "x", "d"), "FileOutsideDataRoot"),
    (("p", ".", "x", "d"), "FileOutsideDataRoot"),
    (("p", "s", "a/../../..", "d"), "FileOutsideDataRoot"),
    (("p", "s", "x", "/etc"), "FileOutsideDataRoot"),
    (("p", "s", "", "d"), "InvalidFilePath"),
    (("p", "s", "x", "bad name"), "InvalidFilePath"),
])
def test_the_data_policy_refuses_names_that_would_leave_their_directory(tmp_path, names, reason):
    with pytest.raises(FilePathError) as caught:
        DataPolicy(tmp_path, "id21").raw_dataset(*names)
    assert caught.value.reason == reason


def test_the_data_policy_refuses_a_link_under_the_root_that_points_outside(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "ma1234").mkdir(parents=True)
    outside.mkdir()
    (root / "ma1234" / "id21").symlink_to(outside)
    with pytest.raises(FilePathError) as caught:
        DataPolicy(root, "id21").raw_dataset("ma1234", "s1", "x", "d")
    assert caught.value.reason == "FileOutsideDataRoot"


def test_a_structure_run_refuses_a_sample_name_the_policy_refuses():
    with pytest.raises(FilePathError):
        StructureRun(load_structure(CONFIG / "tomography.yaml"), "ma1234", "s1", "../x")
