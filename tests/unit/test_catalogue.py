"""The run catalogue: SQLite per proposal, runs and DAMNIT-style variables, its version, two
processes writing at once, and the ICAT records."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import types
from dataclasses import replace

import numpy as np
import pytest

from photonflow.datamanager.catalogue import Catalogue, RunRecord, iso_utc, send_to_icat
from photonflow.errors import ConfigurationError, FilePathError


def record(run: int, **changes) -> RunRecord:
    base = RunRecord(
        run=run, proposal="ma1234", session="20261201", sample="fe_foil", beamline="id21",
        start="2026-12-01T10:00:00.000Z", end="2026-12-01T10:00:05.000Z",
        node=f"eff/energy[{run}]/data", role="data",
        raw_file=f"/data/ma1234/id21/20261201/RAW_DATA/fe_foil/fe_foil_{run:04d}/scan_{run:04d}.h5",
        nexus_file=f"/data/ma1234/id21/20261201/RAW_DATA/fe_foil/fe_foil_{run:04d}/scan_{run:04d}.nxs",
        frames_requested=10, frames_written=10, missing_frames=0, end_reason="completed",
        series_id=100 + run, dataset=f"eff_energy{run:03d}_data",
    )
    return replace(base, **changes)


@pytest.fixture
def catalogue(tmp_path):
    with Catalogue(tmp_path / "catalogue", "ma1234", clock=lambda: 1_800_000_000.0) as opened:
        yield opened


def test_a_recorded_run_reads_back_field_for_field(catalogue):
    catalogue.record_run(record(1))
    assert catalogue.run(1) == record(1)
    assert catalogue.runs() == [record(1)]
    assert catalogue.run(2) is None
    assert catalogue.path.name == "ma1234.sqlite"


def test_the_catalogue_is_sqlite_in_wal_mode_with_runs_and_run_variables(catalogue):
    db = sqlite3.connect(catalogue.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        assert {"runs", "run_variables", "meta", "runs_table"} <= tables
    finally:
        db.close()


def test_a_new_run_is_numbered_after_the_last_and_a_recorder_file_is_catalogued_once(catalogue):
    assert catalogue.add_run(record(0)) == 1
    catalogue.record_run(record(5))
    assert catalogue.add_run(record(0, raw_file="/data/b.h5")) == 6
    assert catalogue.add_run(record(0, raw_file="/data/b.h5", sample="other")) == 6  # the same file: its run back
    assert [(run.run, run.raw_file, run.sample) for run in catalogue.runs()] == [
        (1, record(0).raw_file, "fe_foil"), (5, record(5).raw_file, "fe_foil"), (6, "/data/b.h5", "fe_foil")]


def test_recording_a_run_again_updates_it_and_keeps_the_operators_comment(catalogue):
    catalogue.record_run(record(1, frames_written=7, missing_frames=3, end_reason="aborted"))
    catalogue.set_comment(1, "beam dump at frame 7")
    version = catalogue.version()
    catalogue.record_run(record(1, frames_written=7, missing_frames=3, end_reason="aborted"))
    assert catalogue.version() == version  # the same record again changes nothing
    catalogue.record_run(record(1))
    assert catalogue.runs() == [record(1, comment="beam dump at frame 7")]
    assert catalogue.version() == version + 1


def test_a_comment_is_stored_and_an_unknown_run_refused(catalogue):
    catalogue.record_run(record(3))
    catalogue.set_comment(3, "sample drifted")
    assert catalogue.run(3).comment == "sample drifted"
    with pytest.raises(ConfigurationError) as caught:
        catalogue.set_comment(4, "no such run")
    assert caught.value.reason == "UnknownRun"


def test_a_record_for_another_proposal_or_with_wrong_types_is_refused(catalogue):
    with pytest.raises(ConfigurationError, match="belongs to proposal 'other'"):
        catalogue.record_run(record(1, proposal="other"))
    with pytest.raises(ConfigurationError, match="frames_written must be a whole number"):
        catalogue.record_run(record(1, frames_written="10"))
    assert catalogue.runs() == []


def test_variables_are_stored_by_type_and_pivoted_into_the_run_table(catalogue):
    for run in (1, 2):
        catalogue.record_run(record(run))
    catalogue.set_variable(1, "mean_intensity", np.float32(12.5), attributes={"units": "counts"})
    catalogue.set_variable(1, "hot_pixels", 3)
    catalogue.set_variable(1, "label", "edge")
    catalogue.set_variable(1, "profile", np.arange(4.0))
    catalogue.set_variable(2, "mean_intensity", np.array([[1.0, 2.0], [3.0, 6.0]]), summary="mean")
    catalogue.set_variable(2, "hot_pixels", None, error="ZeroDivisionError: division by zero")

    first = catalogue.variables(1)
    assert first["mean_intensity"] == 12.5 and first["hot_pixels"] == 3 and first["label"] == "edge"
    np.testing.assert_array_equal(first["profile"], [0.0, 1.0, 2.0, 3.0])
    details = catalogue.variable_records(2)
    assert details["mean_intensity"]["value"] == 3.0
    assert details["mean_intensity"]["summary_type"] == "mean"
    assert details["mean_intensity"]["attributes"] == {"shape": [2, 2], "dtype": "float64"}
    assert details["hot_pixels"]["error"] == "ZeroDivisionError: division by zero"
    assert details["hot_pixels"]["timestamp"] == 1_800_000_000.0
    assert catalogue.variable_records(1)["mean_intensity"]["attributes"] == {"units": "counts"}

    table = catalogue.table()
    assert [(row["run"], row["role"], row["mean_intensity"], row["hot_pixels"], row["label"]) for row in table] == [
        (1, "data", 12.5, 3, "edge"), (2, "data", 3.0, None, None)]
    np.testing.assert_array_equal(table[0]["profile"], np.arange(4.0))
    assert table[1]["profile"] is None


def test_the_runs_table_view_gives_one_row_per_run_with_a_column_per_variable(catalogue):
    for run in (1, 2):
        catalogue.record_run(record(run))
    catalogue.set_variable(1, "mean_intensity", 10.0)
    catalogue.set_variable(2, "mean_intensity", 20.0)
    catalogue.set_variable(2, "ring_current", 199.5)
    db = sqlite3.connect(catalogue.path)
    try:
        rows = db.execute("SELECT run, sample, mean_intensity, ring_current FROM runs_table ORDER BY run").fetchall()
    finally:
        db.close()
    assert rows == [(1, "fe_foil", 10.0, None), (2, "fe_foil", 20.0, 199.5)]


def test_a_variable_that_cannot_be_stored_is_refused_with_what_to_return(catalogue):
    with pytest.raises(ConfigurationError, match="cannot store a dict") as caught:
        catalogue.set_variable(1, "bad", {"a": 1})
    assert caught.value.reason == "UnsupportedVariableType"
    with pytest.raises(ConfigurationError, match="not a Python identifier"):
        catalogue.set_variable(1, "x; DROP TABLE runs", 1.0)
    with pytest.raises(ConfigurationError, match="column of the runs table"):
        catalogue.set_variable(1, "sample", 1.0)


def test_the_version_grows_on_every_change(catalogue):
    versions = [catalogue.version()]
    catalogue.record_run(record(1))
    versions.append(catalogue.version())
    catalogue.set_variable(1, "mean_intensity", 1.0)
    versions.append(catalogue.version())
    catalogue.set_variable(1, "mean_intensity", 2.0)
    versions.append(catalogue.version())
    catalogue.set_comment(1, "ok")
    versions.append(catalogue.version())
    assert versions == [0, 1, 2, 3, 4]


def test_another_process_sees_the_version_and_the_values(catalogue):
    catalogue.record_run(record(1))
    with Catalogue(catalogue.directory, "ma1234") as other:
        other.set_variable(1, "ring_current", 200.0)
        assert other.version() == catalogue.version() == 2
    assert catalogue.variables(1) == {"ring_current": 200.0}


WRITER = textwrap.dedent("""
    import sys
    from photonflow.datamanager.catalogue import Catalogue
    directory, count = sys.argv[1], int(sys.argv[2])
    catalogue = Catalogue(directory, "ma1234")
    print("ready", flush=True)
    sys.stdin.readline()
    for run in range(1, count + 1):
        catalogue.set_variable(run, "mean_intensity", run * 1.5)
        catalogue.set_variable(run, "label", f"run {run}")
    catalogue.close()
    print("written", flush=True)
""")


def test_a_variables_process_writes_while_the_datamanager_records_runs(catalogue):
    count = 40
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(catalogue.directory), str(count)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        writer.stdin.write("go\n")
        writer.stdin.flush()
        for run in range(1, count + 1):
            catalogue.record_run(record(run))
        out, err = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
    assert writer.returncode == 0, err
    assert out.strip() == "written"
    table = catalogue.table()
    assert [(row["run"], row["mean_intensity"], row["label"]) for row in table] == [
        (run, run * 1.5, f"run {run}") for run in range(1, count + 1)]
    assert catalogue.version() == 3 * count


def test_the_icat_dataset_names_the_run_in_icat_fields(catalogue):
    catalogue.record_run(record(2, comment="edge"))
    assert catalogue.icat_dataset(2) == {
        "beamlineID": "id21", "proposal": "ma1234", "datasetName": "eff_energy002_data",
        "location": "/data/ma1234/id21/20261201/RAW_DATA/fe_foil/fe_foil_0002",
        "Sample_name": "fe_foil", "startDate": "2026-12-01T10:00:00.000Z", "endDate": "2026-12-01T10:00:05.000Z",
        "role": "data", "node": "eff/energy[2]/data", "session": "20261201", "run": 2,
        "files": ["/data/ma1234/id21/20261201/RAW_DATA/fe_foil/fe_foil_0002/scan_0002.h5",
                  "/data/ma1234/id21/20261201/RAW_DATA/fe_foil/fe_foil_0002/scan_0002.nxs"],
        "frames_requested": 10, "frames_written": 10, "missing_frames": 0, "end_reason": "completed",
        "comment": "edge",
    }
    with pytest.raises(ConfigurationError, match="run 9 is not in the catalogue"):
        catalogue.icat_dataset(9)


def test_a_run_without_a_dataset_name_is_named_after_its_sample_and_number(catalogue):
    catalogue.record_run(record(7, dataset="", node="", role=""))
    dataset = catalogue.icat_dataset(7)
    assert (dataset["datasetName"], dataset["role"], dataset["node"]) == ("fe_foil_0007", "", "")


def test_the_icat_export_is_one_json_file_per_dataset(catalogue, tmp_path):
    catalogue.record_run(record(2))
    path = catalogue.export_icat(2, tmp_path / "icat")
    assert path == tmp_path / "icat" / "ma1234_r0002.icat.json"
    assert json.loads(path.read_text()) == catalogue.icat_dataset(2)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ma1234_r0002.icat.json"]


def test_sending_to_icat_without_configuration_or_without_pyicat_plus_says_what_to_do(monkeypatch):
    dataset = {"beamlineID": "id21", "proposal": "ma1234", "datasetName": "d", "location": "/data/x",
               "Sample_name": "s", "startDate": "a", "endDate": "b"}
    with pytest.raises(ConfigurationError, match="ICAT is not configured"):
        send_to_icat(dataset, {})
    monkeypatch.setitem(sys.modules, "pyicat_plus", None)
    monkeypatch.setitem(sys.modules, "pyicat_plus.client", None)
    monkeypatch.setitem(sys.modules, "pyicat_plus.client.main", None)
    with pytest.raises(ConfigurationError, match="pyicat-plus") as caught:
        send_to_icat(dataset, {"metadata_urls": ["broker:61613"]})
    assert caught.value.reason == "MissingPackage"


def test_sending_to_icat_hands_pyicat_plus_the_dataset(monkeypatch):
    calls = []

    class IcatClient:
        def __init__(self, **options):
            calls.append(("client", options))

        def store_dataset(self, **fields):
            calls.append(("store", fields))

        def disconnect(self):
            calls.append(("disconnect", {}))

    main = types.ModuleType("pyicat_plus.client.main")
    main.IcatClient = IcatClient
    monkeypatch.setitem(sys.modules, "pyicat_plus", types.ModuleType("pyicat_plus"))
    monkeypatch.setitem(sys.modules, "pyicat_plus.client", types.ModuleType("pyicat_plus.client"))
    monkeypatch.setitem(sys.modules, "pyicat_plus.client.main", main)
    send_to_icat({"beamlineID": "id21", "proposal": "ma1234", "datasetName": "d", "location": "/data/x",
                  "Sample_name": "s", "startDate": "2026-12-01T10:00:00.000Z", "endDate": "", "role": "data"},
                 {"metadata_urls": ["broker:61613"]})
    assert calls == [
        ("client", {"metadata_urls": ["broker:61613"]}),
        ("store", {"beamline": "id21", "proposal": "ma1234", "dataset": "d", "path": "/data/x",
                   "metadata": {"Sample_name": "s", "startDate": "2026-12-01T10:00:00.000Z"}}),
        ("disconnect", {}),
    ]


def test_times_are_iso_8601_utc_with_a_z():
    assert iso_utc(1_800_000_000.25) == "2027-01-15T08:00:00.250Z"


def test_a_proposal_name_that_would_leave_the_directory_is_refused(tmp_path):
    with pytest.raises(FilePathError) as caught:
        Catalogue(tmp_path, "../elsewhere")
    assert caught.value.reason == "FileOutsideDataRoot"
