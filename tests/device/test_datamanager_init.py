"""A DataManager server keeps its experiment through Init: the proposal, session and sample an
operator set are the ones the next runs are catalogued under, never ``unassigned``."""

from __future__ import annotations

import json

import tango

from tests.helpers.datamanager_server import datamanager_server


def test_the_experiment_set_before_init_is_the_experiment_after_it(tmp_path):
    with datamanager_server(tmp_path) as device:
        device.SetExperiment(json.dumps({"proposal": "in0001", "session": "s2", "sample": "ceo2"}))
        device.SetSample("lab6")
        path = device.CataloguePath
        device.Init()
        assert (device.Proposal, device.Session, device.Sample) == ("in0001", "s2", "lab6")
        assert device.CataloguePath == path and device.state() == tango.DevState.ON
        assert device.status().startswith("Experiment in0001/s2, sample lab6")
