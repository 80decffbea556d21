"""One client waiting in the DataManager's or the Standardizer's WaitIdle never holds up another:
Tango serializes a device's commands and reads, so a wait under the device's monitor once kept every
client (the Standardizer reading the role of an NXmx among them) out for the whole wait."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import tango
from tango.test_context import DeviceTestContext

from tests.helpers.datamanager_server import DOWN_CONTROLLER, datamanager_server
from tests.helpers.devices import preserved_environment
from tests.helpers.held_devices import RELEASE, HeldDataManager, HeldStandardizer
from tests.helpers.paths import REPOSITORY
from tests.helpers.waiting import wait_until

EXPERIMENT = {"proposal": "wi0001", "session": "s1", "sample": "ceo2"}


@contextlib.contextmanager
def another_client_waiting_for_idle(device: tango.DeviceProxy, release: Path):
    """Another client's ``WaitIdle(60)``, received by the device, under way during the block; then
    the device's busy work is released (``release`` made) and the wait answered. Yields the waiting
    thread and the list that gets the answer."""
    waiter = tango.DeviceProxy(device.name())
    waiter.set_timeout_millis(120_000)
    answer: list = []
    waiting = threading.Thread(target=lambda: answer.append(waiter.WaitIdle(60.0)))
    waiting.start()
    try:
        wait_until(lambda: any("WaitIdle" in line for line in device.black_box(20)), 30, what="WaitIdle received")
        yield waiting, answer
    finally:
        release.touch()
        waiting.join(120)


def test_a_client_waiting_for_idle_leaves_the_device_to_the_others(tmp_path):
    with datamanager_server(tmp_path, HeldDataManager) as device:
        device.SetExperiment(json.dumps(EXPERIMENT))
        with another_client_waiting_for_idle(device, tmp_path / "data" / RELEASE) as (waiting, answer):
            device.SetRole("data")  # another client's command and reads, answered during the wait
            policy = json.loads(device.DataPolicy)
            assert waiting.is_alive() and answer == []  # the wait was still under way meanwhile
        # what the Standardizer reads for an NXmx begun meanwhile: the experiment and the role
        assert {key: policy[key] for key in (*EXPERIMENT, "role")} == {**EXPERIMENT, "role": "data"}
        assert answer == [True]


def test_a_client_waiting_for_the_standardizer_leaves_it_to_the_others(tmp_path):
    """A sequencer's WaitIdle on a Standardizer still writing a file: the panel's reads and
    another client's commands are answered meanwhile."""
    properties = {"Controller": DOWN_CONTROLLER, "DataRoot": str(tmp_path / "data"),
                  "MappingFile": str(REPOSITORY / "config" / "standard" / "mx.yaml"), "DevicePrefix": "demo/beamline",
                  "DataManager": "demo/photonflow/datamanager"}
    (tmp_path / "data").mkdir()
    with preserved_environment("PHOTONFLOW_EVENT_BUS"):
        os.environ.pop("PHOTONFLOW_EVENT_BUS", None)
        with DeviceTestContext(HeldStandardizer, properties=properties, host="127.0.0.1", process=True) as device:
            with another_client_waiting_for_idle(device, tmp_path / "data" / RELEASE) as (waiting, answer):
                definition = device.Definition  # a read answered during the wait
                with_nothing = device.WaitIdle(0.0)  # another client's command too: not idle yet
                assert waiting.is_alive() and answer == []
            assert (definition, with_nothing, answer) == ("NXmx", False, [True])
