"""Names checked whole before anything changes, and experiments whose names join alike kept apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from photonflow.datamanager.catalogue import Catalogue
from photonflow.datamanager.manager import DataManager, SeriesResult
from photonflow.datamanager.policy import MAX_NAME_LENGTH
from photonflow.errors import FilePathError

STRUCTURES = Path(__file__).resolve().parents[2] / "config" / "structures"


@pytest.fixture
def manager(tmp_path):
    core = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue")
    yield core
    core.close()


@pytest.mark.parametrize("field", ["proposal", "session", "sample"])
def test_a_name_ending_in_a_newline_is_refused_and_creates_nothing(manager, tmp_path, field):
    names = {"proposal": "mx1", "session": "s1", "sample": "a", field: "mx1\n"}
    with pytest.raises(FilePathError, match="characters other than"):
        manager.set_experiment(names["proposal"], names["session"], names["sample"])
    assert (manager.proposal, manager.session, manager.sample) == ("", "", "")
    assert not (tmp_path / "catalogue").exists() and not (tmp_path / "data").exists()


def test_a_refused_long_session_never_becomes_the_session_of_the_next_run(manager, tmp_path):
    manager.set_experiment("mx1", "s1", "a")
    with pytest.raises(FilePathError, match=f"at most {MAX_NAME_LENGTH}"):
        manager.set_experiment("mx1", "s" * 4000, "a")
    assert (manager.proposal, manager.session, manager.sample) == ("mx1", "s1", "a")
    manager.series_ended(SeriesResult(1, str(tmp_path / "data" / "x.h5"), 1, 1, 0, "completed"))
    assert manager.wait_idle(10)
    (run,) = Catalogue(tmp_path / "catalogue", "mx1").runs()
    assert (run.proposal, run.session, run.sample) == ("mx1", "s1", "a")


def test_a_name_of_the_longest_length_is_taken(manager):
    longest = "p" * MAX_NAME_LENGTH
    manager.set_experiment(longest, "s" * MAX_NAME_LENGTH, "a" * MAX_NAME_LENGTH)
    assert manager.catalogue is not None and manager.catalogue.path.name == f"{longest}.sqlite"


def test_experiments_whose_names_join_alike_never_resume_each_others_structure(tmp_path):
    first = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue")
    try:
        first.set_experiment("a_b", "c", "d")
        first.load_structure(str(STRUCTURES / "eff_energy_scan.yaml"))
        first.begin_sequence()
        step = first.next_acquisition()
        frames = step["controller"]["frames"]
        first.series_ended(SeriesResult(1, step["controller"]["file"], frames, frames, 0, "completed"))
        assert first.wait_idle(10)
        assert first.structure_run is not None and first.structure_run.state(step["node"]) == "done"
    finally:
        first.close()
    second = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue")
    try:
        second.set_experiment("a", "b_c", "d")
        assert second.structure_run is None  # nothing of (a_b, c, d) taken for its own
        second.set_experiment("a_b", "c", "d")
        assert second.structure_run is not None and second.structure_run.state(step["node"]) == "done"
        second.set_experiment("a", "b_c", "d")  # switching experiment in one server keeps them apart too
        assert second.structure_run is None
    finally:
        second.close()


def open_descriptors() -> list[str]:
    """What this process' file descriptors point at, one entry per descriptor (numbers aside: a
    catalogue opened again may take other ones). Files only: sockets and pipes come and go with
    other tests' threads still winding down in this process (a ZeroMQ or Tango reconnection)."""
    found = []
    for entry in Path("/proc/self/fd").iterdir():
        try:
            target = str(entry.readlink())
        except OSError:  # the descriptor listing the directory itself, closed meanwhile
            continue
        if not target.startswith(("socket:", "pipe:", "anon_inode:")):
            found.append(target)
    return sorted(target for target in found if not target.startswith("/proc/"))


def test_setting_the_experiment_again_and_again_leaves_no_file_open(manager):
    """Each SetExperiment once left the replaced catalogue's connection (database, -wal, -shm) open."""
    manager.set_experiment("mx1", "s1", "a")
    manager.set_experiment("mx2", "s1", "a")
    before = open_descriptors()
    for turn in range(300):
        manager.set_experiment(("mx1", "mx2", "mx3")[turn % 3], f"s{turn % 4}", f"a{turn % 5}")
    manager.set_experiment("mx2", "s1", "a")
    assert manager.wait_idle(10)
    assert open_descriptors() == before
