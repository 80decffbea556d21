"""The DataManager's core without Tango: an experiment, a structure run acquisition by acquisition
with roles and data-policy paths, every series catalogued (planned or not), nothing lost across
a restart, wrong-state calls refused with what to do first."""

from __future__ import annotations

from pathlib import Path

import pytest

from photonflow.datamanager.catalogue import Catalogue
from photonflow.datamanager.manager import DataManager, SeriesResult
from photonflow.errors import ConfigurationError, FilePathError, StateError

STRUCTURES = Path(__file__).resolve().parents[2] / "config" / "structures"


class Messages:
    def __init__(self):
        self.sent = []

    def __call__(self, message: dict) -> None:
        self.sent.append(message)


@pytest.fixture
def manager(tmp_path):
    messages = Messages()
    core = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue", publish=messages)
    core.messages = messages
    yield core
    core.close()


def finish(manager: DataManager, step: dict, series_id: int, written: int | None = None) -> None:
    frames = step["controller"]["frames"]
    manager.series_ended(SeriesResult(series_id, step["controller"]["file"], frames,
                                      frames if written is None else written, 0, "completed"))
    assert manager.wait_idle(10)


def test_a_structure_runs_acquisition_by_acquisition_with_roles_and_policy_paths(manager, tmp_path):
    manager.set_experiment("mx0001", "20261127", "fe_foil")
    total = manager.load_structure(str(STRUCTURES / "eff_energy_scan.yaml"))
    manager.begin_sequence()
    steps = []
    while (step := manager.next_acquisition()) is not None:
        steps.append(step)
        finish(manager, step, len(steps))
    assert len(steps) == total > 5
    roles = [step["role"] for step in steps]
    assert roles[0] == "dark" and {"monopos", "white", "data"} <= set(roles)
    first_file = Path(steps[0]["controller"]["file"])
    raw = tmp_path / "data" / "mx0001" / "demo" / "20261127" / "RAW_DATA" / "fe_foil"
    assert first_file.parent.parent == raw and first_file.name.endswith(".h5")
    catalogue = Catalogue(tmp_path / "catalogue", "mx0001")
    runs = catalogue.runs()
    assert [run.role for run in runs] == roles
    assert [run.node for run in runs] == [step["node"] for step in steps]
    assert [run.raw_file for run in runs] == [step["controller"]["file"] for step in steps]
    assert manager.counters.progress == 1.0 and manager.counters.last_run == runs[-1].run
    kinds = {message["msg_kind"] for message in manager.messages.sent}
    assert kinds == {"run_values_updated"}


def test_a_single_acquisition_gets_a_dataset_of_its_own_in_the_policy_folders(manager, tmp_path):
    with pytest.raises(StateError, match="SetExperiment"):
        manager.dataset_file("dark")
    manager.set_experiment("mx0001", "20261127", "fe_foil")
    raw = tmp_path / "data" / "mx0001" / "demo" / "20261127" / "RAW_DATA" / "fe_foil"
    first = Path(manager.dataset_file("dark"))
    assert first == raw / "fe_foil_0001_dark" / "0001_dark.h5"
    manager.set_role("dark")
    first.parent.mkdir(parents=True)
    first.write_bytes(b"")  # the Recorder wrote it
    manager.series_ended(SeriesResult(1, str(first), 3, 3, 0, "completed"))
    assert manager.wait_idle(10)
    (run,) = Catalogue(tmp_path / "catalogue", "mx0001").runs()
    assert (run.role, run.raw_file) == ("dark", str(first))
    # the next one never meets the first's files
    assert Path(manager.dataset_file("flat")) == raw / "fe_foil_0002_flat" / "0002_flat.h5"
    with pytest.raises(FilePathError):
        manager.dataset_file("../elsewhere")


def test_the_data_policy_names_the_acquisition_under_way_for_live_consumers(manager):
    assert manager.data_policy() == {}  # no experiment yet
    manager.set_experiment("mx0001", "20261127", "fe_foil")
    between = manager.data_policy()
    assert (between["proposal"], between["session"], between["sample"], between["beamline"]) == (
        "mx0001", "20261127", "fe_foil", "demo")
    assert between["dataset"] == between["role"] == ""
    manager.load_structure(str(STRUCTURES / "eff_energy_scan.yaml"))
    manager.begin_sequence()
    step = manager.next_acquisition()
    during = manager.data_policy()
    assert during["dataset"] == step["dataset"] == Path(step["controller"]["file"]).stem
    assert (during["role"], during["node"], during["data_policy"]) == (step["role"], step["node"], "ESRF")
    finish(manager, step, 1)
    assert manager.data_policy()["role"] == ""


def test_a_series_nobody_planned_is_catalogued_without_a_role(manager, tmp_path):
    manager.set_experiment("mx0002", "s1", "lysozyme")
    manager.series_ended(SeriesResult(9, str(tmp_path / "data" / "x.h5"), 100, 98, 2, "ALARM: 2 frames missing"))
    assert manager.wait_idle(10)
    (run,) = Catalogue(tmp_path / "catalogue", "mx0002").runs()
    assert (run.role, run.node, run.frames_written, run.missing_frames) == ("", "", 98, 2)
    assert run.end_reason == "ALARM: 2 frames missing" and run.sample == "lysozyme"


def test_a_role_set_outside_a_structure_is_the_role_of_the_series_after_it(manager, tmp_path):
    manager.set_experiment("mx0003", "s1", "lysozyme")
    with pytest.raises(ConfigurationError, match="give one of dark, flat"):
        manager.set_role("darks")
    manager.set_role("dark")
    assert manager.current_role == manager.data_policy()["role"] == "dark"
    manager.series_ended(SeriesResult(1, str(tmp_path / "data" / "d.h5"), 10, 10, 0, "completed"))
    manager.set_role("")
    manager.series_ended(SeriesResult(2, str(tmp_path / "data" / "x.h5"), 10, 10, 0, "completed"))
    assert manager.wait_idle(10)
    assert [(run.role, run.node) for run in Catalogue(tmp_path / "catalogue", "mx0003").runs()] == [
        ("dark", ""), ("", "")]


def test_runs_survive_a_restart_and_numbering_goes_on(tmp_path):
    first = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue")
    first.set_experiment("mx0003", "s1", "a")
    first.series_ended(SeriesResult(1, "/data/a.h5", 5, 5, 0, "completed"))
    assert first.wait_idle(10)
    first.close()
    second = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue")
    second.set_experiment("mx0003", "s1", "b")
    second.series_ended(SeriesResult(2, "/data/b.h5", 5, 5, 0, "completed"))
    assert second.wait_idle(10)
    second.close()
    runs = Catalogue(tmp_path / "catalogue", "mx0003").runs()
    assert [(run.run, run.sample) for run in runs] == [(1, "a"), (2, "b")]


def test_calls_in_the_wrong_order_say_what_to_do_first(manager):
    with pytest.raises(StateError, match="SetExperiment"):
        manager.load_structure(str(STRUCTURES / "eff_energy_scan.yaml"))
    manager.set_experiment("mx0004", "s1", "a")
    with pytest.raises(StateError, match="LoadStructure"):
        manager.next_acquisition()
    manager.load_structure(str(STRUCTURES / "eff_energy_scan.yaml"))
    manager.begin_sequence()
    manager.next_acquisition()
    with pytest.raises(StateError, match="has not ended yet"):
        manager.next_acquisition()


@pytest.mark.parametrize("proposal, error", [("../etc", FilePathError), ("", (ConfigurationError, FilePathError)),
                                             ("a/b", FilePathError)])
def test_names_that_would_leave_the_data_root_are_refused(manager, proposal, error):
    with pytest.raises(error):
        manager.set_experiment(proposal, "s1", "a")


def test_series_that_ended_while_it_was_down_are_catalogued_from_their_files(tmp_path):
    """A Recorder file in the experiment's RAW_DATA that no run names: catalogued from its own
    accounting when the experiment is set again."""
    from photonflow.acquisition.acquirer import Acquirer
    from photonflow.recording.recorder import Recorder, RecordingRequest
    from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor
    from photonflow.stream.transport import StreamSender
    from tests.helpers.recording import acquire_into

    folder = tmp_path / "data" / "mx0005" / "demo" / "s1" / "RAW_DATA" / "a" / "a_0001_x"
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(SimulatedCamera(SimulatedSensor(height=8, width=8, seed=1)), sender)
    acquirer.update_settings(frame_count=3, exposure=0.001, period=0.01)
    acquirer.set_series_id(4)
    try:
        raw = acquire_into(acquirer, Recorder(tmp_path / "data"), RecordingRequest(3, 4, acquirer.stream_endpoint,
                                                                                  str(folder / "x.h5")))
    finally:
        sender.close()
    manager = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue")
    try:
        manager.set_experiment("mx0005", "s1", "a")
        assert manager.wait_idle(10)
    finally:
        manager.close()
    (run,) = Catalogue(tmp_path / "catalogue", "mx0005").runs()
    assert (run.raw_file, run.series_id, run.frames_written, run.end_reason) == (str(raw), 4, 3, "completed")


def test_a_restart_resumes_the_structure_where_it_was(tmp_path):
    first = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue")
    first.set_experiment("mx0006", "s1", "a")
    first.load_structure(str(STRUCTURES / "eff_energy_scan.yaml"))
    first.begin_sequence()
    done = [first.next_acquisition() for _ in range(1)]
    finish(first, done[0], 1)
    interrupted = first.next_acquisition()  # its series never ends: the DataManager restarts
    first.close()
    second = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue")
    try:
        second.set_experiment("mx0006", "s1", "a")
        assert second.structure_run is not None and second.structure_run.state(done[0]["node"]) == "done"
        again = second.next_acquisition()
        assert again["node"] == interrupted["node"]  # taken again, not skipped
    finally:
        second.close()


def test_each_catalogued_run_is_exported_with_icats_fields(tmp_path):
    import json as json_module

    manager = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue")
    try:
        manager.set_experiment("mx0007", "s1", "lysozyme")
        raw = tmp_path / "data" / "r.h5"
        manager.series_ended(SeriesResult(1, str(raw), 5, 5, 0, "completed"))
        assert manager.wait_idle(10)
        manager.standardized(str(raw.with_suffix(".nxs")))  # the Standardizer's event, no file needed here
        assert manager.wait_idle(10)
    finally:
        manager.close()
    exported = json_module.loads((tmp_path / "catalogue" / "mx0007_icat" / "mx0007_r0001.icat.json").read_text())
    assert exported["beamlineID"] == "demo" and exported["proposal"] == "mx0007"
    assert exported["Sample_name"] == "lysozyme" and exported["location"] == str(tmp_path / "data")


def test_a_tomography_runs_with_a_clients_overrides_and_names_the_turn_of_its_projections(manager):
    manager.set_experiment("tm0001", "s1", "rock")
    manager.load_structure(str(STRUCTURES / "tomography.yaml"),
                           {"frames": {"data": 12}, "parameters": {"end_angle": 30.0}})
    manager.begin_sequence()
    steps = []
    while (step := manager.next_acquisition()) is not None:
        steps.append(step)
        finish(manager, step, len(steps))
    assert [(step["role"], step["controller"]["frames"]) for step in steps] == [("dark", 10), ("flat", 10), ("data", 12)]
    assert [step["rotation"] for step in steps] == [None, None, {"axis": "omega", "start": 0.0, "end": 30.0}]


def test_last_run_stays_the_last_catalogued_when_an_earlier_runs_file_is_attached_after_it(manager, tmp_path):
    """A sequencer waits for LastRun to move: a short series may be catalogued before the previous
    run's standardized file is written."""
    manager.set_experiment("mx0009", "s1", "a")
    for series_id in (1, 2):
        manager.series_ended(SeriesResult(series_id, str(tmp_path / f"series_{series_id}.h5"), 1, 1, 0, "completed"))
    assert manager.wait_idle(10)
    manager.standardized(str(tmp_path / "series_1.nxs"))
    assert manager.wait_idle(10)
    first, second = Catalogue(tmp_path / "catalogue", "mx0009").runs()
    assert first.nexus_file == str(tmp_path / "series_1.nxs")
    assert manager.counters.last_run == second.run


def test_a_structure_taken_again_for_the_sample_numbers_its_datasets_after_the_first(manager):
    """Each dataset's folder exists once the Recorder is armed into it: the same structure taken
    again for the same sample (a second tomography) numbers its datasets on, never into the files
    of the first."""
    manager.set_experiment("mx0008", "s1", "a")
    manager.load_structure(str(STRUCTURES / "tomography.yaml"))
    manager.begin_sequence()
    first = manager.next_acquisition()
    Path(first["controller"]["file"]).parent.mkdir(parents=True)  # as the Recorder's Arm makes it
    finish(manager, first, 1)
    manager.end_sequence()
    manager.load_structure(str(STRUCTURES / "tomography.yaml"))
    manager.begin_sequence()
    again = manager.next_acquisition()
    assert (first["node"], first["dataset"]) == ("tomo/darks", "0001_tomo_darks")
    assert (again["node"], again["dataset"]) == ("tomo/darks", "0002_tomo_darks")
    assert Path(again["controller"]["file"]).name == "0002_tomo_darks.h5"
