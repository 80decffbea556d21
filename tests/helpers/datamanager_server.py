"""A DataManager server of its own for one test: a real process on loopback, following a Controller
nobody serves (series are told to it by files or commands), with no event bus."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import tango
from tango.test_context import DeviceTestContext

from photonflow.devices.datamanager import PhotonflowDataManager
from tests.helpers.devices import preserved_environment

DOWN_CONTROLLER = "tango://127.0.0.1:1/test/down/controller#dbase=no"  # a valid name; nothing serves it


@contextlib.contextmanager
def datamanager_server(tmp_path: Path, device_class: type = PhotonflowDataManager,
                       **properties) -> Iterator[tango.DeviceProxy]:
    """The server with its data root (made) and catalogues under ``tmp_path``; ``properties`` add to
    or replace those."""
    (tmp_path / "data").mkdir(exist_ok=True)
    given = {"Controller": DOWN_CONTROLLER, "DataRoot": str(tmp_path / "data"), "Beamline": "demo",
             "CatalogueDirectory": str(tmp_path / "catalogue"), **properties}
    with preserved_environment("PHOTONFLOW_EVENT_BUS"):
        os.environ.pop("PHOTONFLOW_EVENT_BUS", None)
        with DeviceTestContext(device_class, properties=given, host="127.0.0.1", process=True) as device:
            yield device
