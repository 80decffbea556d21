"""The experiment outlives an Init or a restart: the next runs are catalogued under it, never under
``unassigned``; one whose catalogue cannot be written now is kept all the same (its runs wait), and
an unreadable record of it is said, never a crash. Real SQLite, real files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from photonflow import states
from photonflow.datamanager.catalogue import Catalogue
from photonflow.datamanager.manager import EXPERIMENT_FILE, DataManager, SeriesResult
from photonflow.errors import PhotonflowError
from tests.helpers.waiting import wait_until


def start(tmp_path: Path) -> DataManager:
    return DataManager(tmp_path / "data", "demo", tmp_path / "catalogue", catalogue_timeout=0.3)


def catalogued(tmp_path: Path, proposal: str) -> list[tuple[str, str, str]]:
    with Catalogue(tmp_path / "catalogue", proposal) as catalogue:
        return [(run.raw_file, run.session, run.sample) for run in catalogue.runs()]


def end_series(manager: DataManager, tmp_path: Path, series_id: int) -> str:
    raw = str(tmp_path / f"series_{series_id}.h5")
    manager.series_ended(SeriesResult(series_id, raw, 4, 4, 0, "completed"))
    assert manager.wait_idle(30)
    return raw


def test_a_restarted_datamanager_catalogues_the_next_run_under_the_experiment_set_before(tmp_path):
    first = start(tmp_path)
    first.set_experiment("mx0201", "s1", "ceo2")
    first.set_sample("lysozyme")
    before = end_series(first, tmp_path, 1)
    first.close()
    second = start(tmp_path)
    try:
        assert (second.proposal, second.session, second.sample) == ("mx0201", "s1", "lysozyme")
        assert second.catalogue is not None and second.counters.runs == 1
        after = end_series(second, tmp_path, 2)
    finally:
        second.close()
    assert catalogued(tmp_path, "mx0201") == [(before, "s1", "lysozyme"), (after, "s1", "lysozyme")]
    assert not (tmp_path / "catalogue" / "unassigned.sqlite").exists()


def test_a_refused_experiment_is_not_the_one_resumed(tmp_path):
    first = start(tmp_path)
    first.set_experiment("mx0202", "s1", "a")
    with pytest.raises(PhotonflowError, match="sample name"):
        first.set_experiment("mx0203", "s1", "bad\n")
    first.close()
    second = start(tmp_path)
    try:
        assert (second.proposal, second.sample) == ("mx0202", "a")
    finally:
        second.close()


@pytest.mark.parametrize("written, said", [
    ("{not json", "unreadable"),
    (json.dumps({"proposal": "mx1\n", "session": "s1", "sample": "a"}), "was not resumed"),
    (json.dumps({"proposal": "mx0204"}), "unreadable"),
])
def test_an_unreadable_or_invalid_experiment_record_is_an_alarm_and_runs_still_catalogued(tmp_path, written, said):
    (tmp_path / "catalogue").mkdir()
    (tmp_path / "catalogue" / EXPERIMENT_FILE).write_text(written)
    manager = start(tmp_path)
    try:
        assert manager.state == states.ALARM and said in manager.status and "SetExperiment" in manager.status
        assert manager.catalogue is None and manager.proposal == ""
        raw = end_series(manager, tmp_path, 1)  # as before any SetExperiment: a catalogue of its own
    finally:
        manager.close()
    assert catalogued(tmp_path, "unassigned") == [(raw, "default", "unknown")]
    assert not list((tmp_path / "catalogue").glob("mx1*"))


def immutable(*paths: Path) -> bool:
    return subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True).returncode == 0


def test_an_experiment_whose_catalogue_is_read_only_is_resumed_and_its_runs_wait_for_it(tmp_path):
    first = start(tmp_path)
    first.set_experiment("mx0205", "s1", "a")
    path = first.catalogue.path
    first.close()
    if not immutable(path):
        pytest.skip("chattr +i is not supported here (not root, or the file system has no immutable flag)")
    try:
        second = start(tmp_path)
        try:
            assert (second.proposal, second.session, second.sample) == ("mx0205", "s1", "a")
            assert second.state == states.ALARM and "read-only" in second.status
            raw = str(tmp_path / "series_1.h5")
            second.series_ended(SeriesResult(1, raw, 4, 4, 0, "completed"))
            wait_until(lambda: "1 run(s) waiting to be catalogued" in second.status, what=lambda: second.status)
            assert (tmp_path / "catalogue" / "mx0205.waiting.jsonl").exists()
        finally:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        wait_until(lambda: second.state == states.ON, what=lambda: second.status)
        second.close()
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    assert catalogued(tmp_path, "mx0205") == [(raw, "s1", "a")]
    assert not (tmp_path / "catalogue" / "unassigned.sqlite").exists()
