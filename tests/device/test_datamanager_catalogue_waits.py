"""A DataManager server whose catalogue another process holds past its CatalogueTimeout: the run
waits on disk, the device is ALARM saying how many runs wait and why, and the run is catalogued
once the other process lets the catalogue go."""

from __future__ import annotations

import json

import tango

from photonflow.datamanager.catalogue import Catalogue
from tests.helpers.datamanager_server import datamanager_server
from tests.helpers.held_catalogue import HeldCatalogue
from tests.helpers.recorder_files import record_series
from tests.helpers.waiting import wait_until

EXPERIMENT = {"proposal": "cw0001", "session": "s1", "sample": "ceo2"}


def test_a_run_waits_in_alarm_while_the_catalogue_is_held_and_is_catalogued_once_released(tmp_path):
    with datamanager_server(tmp_path, CatalogueTimeout=0.5) as device:
        device.SetExperiment(json.dumps(EXPERIMENT))
        with HeldCatalogue(device.CataloguePath):
            # a series that ended while the DataManager did not follow: found in the experiment's
            # folders when the sample is set again, and catalogued from its own accounting
            (raw,) = record_series(tmp_path / "data", "demo", "cw0001", "s1", "ceo2", [7])
            device.SetSample("ceo2")
            wait_until(lambda: device.state() == tango.DevState.ALARM, 60, what=device.status)
            status = device.status()
            assert "1 run(s) waiting to be catalogued" in status and "locked by another process" in status
            assert (device.Runs, device.LastRun) == (0, 0)
            waiting = (tmp_path / "catalogue" / "cw0001.waiting.jsonl").read_text().splitlines()
            assert [json.loads(line)["raw_file"] for line in waiting] == [str(raw)]
        wait_until(lambda: device.state() == tango.DevState.ON, 60, what=device.status)
        assert (device.Runs, device.LastRun) == (1, 1)
        assert device.status() == f"Run 1 catalogued (no role): {raw}"
    with Catalogue(tmp_path / "catalogue", "cw0001") as catalogue:
        (run,) = catalogue.runs()
    assert (run.run, run.raw_file, run.series_id, run.frames_written, run.sample) == (1, str(raw), 7, 2, "ceo2")
    assert not (tmp_path / "catalogue" / "cw0001.waiting.jsonl").exists()
