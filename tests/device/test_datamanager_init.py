"""A DataManager server keeps its experiment through Init: the proposal, session and sample an
operator set are the ones the next runs are catalogued under, never ``unassigned``."""

from __future__ import annotations

import json
import os

import tango
from tango.test_context import DeviceTestContext

from photonflow.devices.datamanager import PhotonflowDataManager
from tests.helpers.devices import preserved_environment

DOWN_CONTROLLER = "tango://127.0.0.1:1/test/down/controller#dbase=no"  # a valid name; nothing serves it


def test_the_experiment_set_before_init_is_the_experiment_after_it(tmp_path):
    properties = {"Controller": DOWN_CONTROLLER, "DataRoot": str(tmp_path / "data"), "Beamline": "demo",
                  "CatalogueDirectory": str(tmp_path / "catalogue")}
    (tmp_path / "data").mkdir()
    with preserved_environment("PHOTONFLOW_EVENT_BUS"):
        os.environ.pop("PHOTONFLOW_EVENT_BUS", None)
        with DeviceTestContext(PhotonflowDataManager, properties=properties, host="127.0.0.1",
                               process=True) as device:
            device.SetExperiment(json.dumps({"proposal": "in0001", "session": "s2", "sample": "ceo2"}))
            device.SetSample("lab6")
            path = device.CataloguePath
            device.Init()
            assert (device.Proposal, device.Session, device.Sample) == ("in0001", "s2", "lab6")
            assert device.CataloguePath == path and device.state() == tango.DevState.ON
            assert device.status().startswith("Experiment in0001/s2, sample lab6")
