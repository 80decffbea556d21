"""The catalogue never loses a run: two writers never share a number, a Recorder file is catalogued
once, and a catalogue that cannot be written (locked by another process past the timeout, read-only,
deleted, corrupt) keeps the run waiting on disk, says so in the State, and writes it when it can or
is begun again from the Recorder files. Real processes, real SQLite, real Recorder files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from photonflow import states
from photonflow.datamanager.catalogue import Catalogue, RunRecord
from photonflow.datamanager.manager import DataManager, SeriesResult
from photonflow.errors import ConfigurationError
from tests.helpers.held_catalogue import HeldCatalogue
from tests.helpers.recorder_files import record_series
from tests.helpers.standardizing import BeamlineReader, beamline_values, standardize
from tests.helpers.waiting import ManualClock, wait_until

TIMEOUT = 0.3  # seconds a write waits for the process holding the catalogue (the default is 30)
NOON = 1_796_472_000.0  # 2026-12-05 12:00:00 UTC


def series(tmp_path: Path, series_id: int) -> SeriesResult:
    return SeriesResult(series_id, str(tmp_path / f"series_{series_id}.h5"), 4, 4, 0, "completed")


def catalogued(directory: Path, proposal: str) -> list[tuple[int, str, str]]:
    """(run, raw file, role) of every run, read by a connection of its own."""
    with Catalogue(directory, proposal) as catalogue:
        return [(run.run, run.raw_file, run.role) for run in catalogue.runs()]


@pytest.fixture
def manager(tmp_path):
    core = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue", catalogue_timeout=TIMEOUT,
                       clock=ManualClock(NOON))
    yield core
    core.close()


WRITER = textwrap.dedent("""
    import sys
    from photonflow.datamanager.catalogue import Catalogue, RunRecord
    directory, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    catalogue = Catalogue(directory, "ma1234")
    print("ready", flush=True)
    sys.stdin.readline()
    for n in range(1, count + 1):
        catalogue.add_run(RunRecord(0, "ma1234", "s1", name, "id21", "", "", "", "", f"/data/{name}_{n}.h5", "",
                                    1, 1, 0, "completed", series_id=n))
    catalogue.close()
""")


def test_two_processes_adding_200_runs_each_get_400_distinct_numbers_none_overwritten(tmp_path):
    count = 200
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, str(count)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name in ("first", "second")]
    try:
        for writer in writers:
            assert writer.stdout.readline().strip() == "ready"
        for writer in writers:  # both start writing together
            writer.stdin.write("go\n")
            writer.stdin.flush()
        for writer in writers:
            _, err = writer.communicate(timeout=300)
            assert writer.returncode == 0, err
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.communicate()
    with Catalogue(tmp_path, "ma1234") as catalogue:
        runs = catalogue.runs()
    assert [run.run for run in runs] == list(range(1, 2 * count + 1))
    # every run as its writer wrote it: its sample, file and series id
    assert sorted((run.sample, run.raw_file, run.series_id) for run in runs) == sorted(
        (name, f"/data/{name}_{n}.h5", n) for name in ("first", "second") for n in range(1, count + 1))
    for name in ("first", "second"):  # each writer's runs numbered in the order it wrote them
        numbers = [run.run for run in runs if run.sample == name]
        assert [run.series_id for run in runs if run.sample == name] == list(range(1, count + 1))
        assert numbers == sorted(numbers)


def test_two_datamanagers_told_of_the_same_ten_series_catalogue_ten_runs(tmp_path):
    first, second = (DataManager(tmp_path / "data", "demo", tmp_path / "catalogue") for _ in range(2))
    try:
        for core in (first, second):
            core.set_experiment("mx0100", "s1", "a")
        for series_id in range(1, 11):
            first.series_ended(series(tmp_path, series_id))
            second.series_ended(series(tmp_path, series_id))
        assert first.wait_idle(60) and second.wait_idle(60)
        assert first.counters.last_run == second.counters.last_run == 10
    finally:
        first.close()
        second.close()
    assert catalogued(tmp_path / "catalogue", "mx0100") == [
        (n, str(tmp_path / f"series_{n}.h5"), "") for n in range(1, 11)]


def test_runs_wait_on_disk_while_another_process_holds_the_catalogue_then_are_written_in_order(manager, tmp_path):
    manager.set_experiment("mx0101", "s1", "a")
    manager.set_role("dark")
    held = HeldCatalogue(manager.catalogue.path)
    try:
        for series_id in (1, 2, 3):
            manager.series_ended(series(tmp_path, series_id))
        waiting_file = tmp_path / "catalogue" / "mx0101.waiting.jsonl"
        wait_until(lambda: "3 run(s) waiting to be catalogued" in manager.status, what=lambda: manager.status)
        assert manager.state == states.ALARM and "locked by another process" in manager.status
        lines = [json.loads(line) for line in waiting_file.read_text().splitlines()]
        assert [(line["raw_file"], line["role"]) for line in lines] == [
            (str(tmp_path / f"series_{n}.h5"), "dark") for n in (1, 2, 3)]
        manager.set_role("data")  # later news keeps the ALARM and its reason
        assert manager.state == states.ALARM
        assert manager.status.startswith("Series outside a structure: data from now on")
        assert "3 run(s) waiting to be catalogued" in manager.status
    finally:
        held.release()
    wait_until(lambda: manager.state == states.ON and not waiting_file.exists(), what=lambda: manager.status)
    assert catalogued(tmp_path / "catalogue", "mx0101") == [
        (n, str(tmp_path / f"series_{n}.h5"), "dark") for n in (1, 2, 3)]
    assert (manager.counters.runs, manager.counters.last_run) == (3, 3)
    assert manager.status == f"Run 3 catalogued (dark): {tmp_path / 'series_3.h5'}"


def test_a_waiting_runs_standardized_file_is_attached_once_the_run_is_catalogued(manager, tmp_path):
    """The Standardizer's event comes while the run waits: the file, complete on disk, follows the run."""
    manager.set_experiment("mx0109", "s1", "ceo2")
    (raw,) = record_series(tmp_path / "data", "demo", "mx0109", "s1", "ceo2", [7])
    with HeldCatalogue(manager.catalogue.path):
        manager.series_ended(SeriesResult(7, str(raw), 2, 2, 0, "completed"))
        wait_until(lambda: "1 run(s) waiting to be catalogued" in manager.status, what=lambda: manager.status)
        nexus, _ = standardize(raw, BeamlineReader(beamline_values()))
        manager.standardized(str(nexus))
        assert manager.wait_idle(30)
        assert manager.state == states.ALARM and "1 run(s) waiting to be catalogued" in manager.status
    wait_until(lambda: manager.state == states.ON, what=lambda: manager.status)
    with Catalogue(tmp_path / "catalogue", "mx0109") as catalogue:
        (run,) = catalogue.runs()
    assert (run.run, run.raw_file, run.nexus_file) == (1, str(raw), str(nexus))
    exported = json.loads((tmp_path / "catalogue" / "mx0109_icat" / "mx0109_r0001.icat.json").read_text())
    assert exported["files"] == [str(raw), str(nexus)]
    assert manager.status == f"Run 1: standardized file {nexus}"


def test_runs_left_waiting_by_a_stopped_datamanager_are_catalogued_by_the_next(tmp_path):
    first = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue", catalogue_timeout=TIMEOUT)
    first.set_experiment("mx0102", "s1", "a")
    held = HeldCatalogue(first.catalogue.path)
    try:
        first.series_ended(series(tmp_path, 1))
        wait_until(lambda: "1 run(s) waiting" in first.status, what=lambda: first.status)
        first.close()
    finally:
        held.release()
    second = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue", catalogue_timeout=TIMEOUT)
    try:
        wait_until(lambda: catalogued(tmp_path / "catalogue", "mx0102"), what="the waiting run catalogued")
    finally:
        second.close()
    assert catalogued(tmp_path / "catalogue", "mx0102") == [(1, str(tmp_path / "series_1.h5"), "")]
    assert not (tmp_path / "catalogue" / "mx0102.waiting.jsonl").exists()


@pytest.fixture
def recorded(manager, tmp_path):
    """Two series recorded in the experiment's folders and catalogued from their files."""
    files = record_series(tmp_path / "data", "demo", "mx0103", "s1", "a", [1, 2])
    manager.set_experiment("mx0103", "s1", "a")
    assert manager.wait_idle(30)
    assert [raw for _, raw, _ in catalogued(tmp_path / "catalogue", "mx0103")] == [str(raw) for raw in files]
    return files


def test_a_deleted_catalogue_is_noticed_and_rebuilt_from_the_recorder_files(manager, recorded, tmp_path):
    path = manager.catalogue.path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink()
    (third,) = record_series(tmp_path / "data", "demo", "mx0103", "s1", "a", [3])
    manager.set_role("data")
    manager.series_ended(SeriesResult(3, str(third), 2, 2, 0, "completed"))
    assert manager.wait_idle(30)
    assert catalogued(tmp_path / "catalogue", "mx0103") == [
        (1, str(recorded[0]), ""), (2, str(recorded[1]), ""), (3, str(third), "data")]
    assert manager.counters.runs == 3
    assert manager.state == states.ALARM
    assert f"the catalogue {path} was deleted; rebuilt 2 run(s) from the files" in manager.status
    with Catalogue(tmp_path / "catalogue", "mx0103") as catalogue:
        rebuilt = catalogue.run(2)
    assert (rebuilt.series_id, rebuilt.frames_written, rebuilt.end_reason, rebuilt.session, rebuilt.sample) == (
        2, 2, "completed", "s1", "a")
    manager.set_experiment("mx0103", "s1", "a")  # the operator saw it
    assert manager.state == states.ON


def test_a_corrupt_catalogue_is_set_aside_and_rebuilt_and_the_next_run_catalogued(manager, recorded, tmp_path):
    path = manager.catalogue.path
    inode = path.stat().st_ino
    with open(path, "r+b") as file:
        file.write(b"not a catalogue " * 16)
    (third,) = record_series(tmp_path / "data", "demo", "mx0103", "s1", "a", [3])
    manager.series_ended(SeriesResult(3, str(third), 2, 2, 0, "completed"))
    assert manager.wait_idle(30)
    aside = tmp_path / "catalogue" / "mx0103.sqlite.corrupt-20261205T120000Z"
    assert aside.stat().st_ino == inode  # the very file, renamed: never deleted nor copied
    assert path.stat().st_ino != inode
    assert catalogued(tmp_path / "catalogue", "mx0103") == [
        (1, str(recorded[0]), ""), (2, str(recorded[1]), ""), (3, str(third), "")]
    assert manager.state == states.ALARM and f"set aside as {aside}" in manager.status
    assert "rebuilt 2 run(s) from the files" in manager.status


def test_a_catalogue_found_corrupt_when_the_experiment_is_set_is_set_aside_and_rebuilt(manager, tmp_path):
    files = record_series(tmp_path / "data", "demo", "mx0104", "s1", "a", [1])
    (tmp_path / "catalogue").mkdir()
    (tmp_path / "catalogue" / "mx0104.sqlite").write_bytes(b"\x00" * 4096)
    manager.set_experiment("mx0104", "s1", "a")
    assert manager.wait_idle(30)
    assert catalogued(tmp_path / "catalogue", "mx0104") == [(1, str(files[0]), "")]
    aside = tmp_path / "catalogue" / "mx0104.sqlite.corrupt-20261205T120000Z"
    assert aside.read_bytes() == b"\x00" * 4096
    assert manager.state == states.ALARM and f"set aside as {aside}" in manager.status


def immutable(*paths: Path) -> bool:
    """``chattr +i`` (what stops root too, unlike chmod); False where the file system has no such flag."""
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True).returncode == 0


def mutable(*paths: Path) -> None:
    subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)


def test_a_read_only_catalogue_is_refused_by_set_experiment_and_the_experiment_kept(manager, tmp_path):
    manager.set_experiment("mx0105", "s1", "a")
    Catalogue(tmp_path / "catalogue", "mx0106").close()
    frozen = tmp_path / "catalogue" / "mx0106.sqlite"
    if not immutable(frozen):
        pytest.skip("chattr +i is not supported here (not root, or the file system has no immutable flag)")
    try:
        with pytest.raises(ConfigurationError, match=r"mx0106.sqlite is read-only .*chattr -i") as refused:
            manager.set_experiment("mx0106", "s1", "b")
    finally:
        mutable(frozen)
    assert refused.value.reason == "CatalogueReadOnly"
    assert (manager.proposal, manager.sample, manager.catalogue.proposal) == ("mx0105", "a", "mx0105")


def test_runs_wait_while_the_catalogue_is_read_only_and_are_written_once_it_is_writable(manager, tmp_path):
    manager.set_experiment("mx0107", "s1", "a")
    path = manager.catalogue.path
    frozen = [path, Path(f"{path}-wal")]
    if not immutable(*frozen):
        pytest.skip("chattr +i is not supported here (not root, or the file system has no immutable flag)")
    try:
        manager.series_ended(series(tmp_path, 1))
        wait_until(lambda: "1 run(s) waiting to be catalogued" in manager.status, what=lambda: manager.status)
        assert manager.state == states.ALARM and "read-only" in manager.status
        with pytest.raises(ConfigurationError, match="read-only"):
            manager.set_experiment("mx0107", "s1", "b")
        assert manager.sample == "a"
    finally:
        mutable(*frozen)
    wait_until(lambda: manager.state == states.ON, what=lambda: manager.status)
    assert catalogued(tmp_path / "catalogue", "mx0107") == [(1, str(tmp_path / "series_1.h5"), "")]


def test_the_waiting_queue_keeps_a_run_field_for_field(tmp_path):
    from photonflow.datamanager.waiting import WaitingRuns

    record = RunRecord(0, "mx0108", "s1", "a", "demo", "2026-12-05T12:00:00Z", "", "eff/dark", "dark",
                       "/data/x.h5", "", 3, 2, 1, "aborted", series_id=7, dataset="x")
    WaitingRuns(tmp_path, "mx0108").append(record)
    reread = WaitingRuns(tmp_path, "mx0108")
    assert reread.oldest == record and len(reread) == 1
    reread.catalogued(record)
    assert not reread.path.exists() and WaitingRuns(tmp_path, "mx0108").oldest is None
