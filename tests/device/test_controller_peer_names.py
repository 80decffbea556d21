"""The Controller device's start-up: a peer name Tango cannot resolve is a wrong property, said in
the Status with the property and the name, while a peer that is only down (not started yet) is
not: the Controller starts before its peers and says which one it cannot reach."""

from __future__ import annotations

import pytest
import tango
from tango.test_context import DeviceTestContext

from photonflow.devices.controller import PhotonflowController

DOWN_ACQUIRER = "tango://127.0.0.1:1/test/down/acquirer#dbase=no"  # a valid name; nothing serves it
DOWN_RECORDER = "tango://127.0.0.1:1/test/down/recorder#dbase=no"
MALFORMED = "tango://127.0.0.1:1/test/recorder#dbase=no"  # two fields, not domain/family/member


def controller(acquirer: str, recorder: str, **more) -> DeviceTestContext:
    properties = {"Acquirer": acquirer, "Recorder": recorder, "PeerStartupWait": 0.2, "PeerTimeout": 0.5, **more}
    return DeviceTestContext(PhotonflowController, properties=properties, host="127.0.0.1", process=True)


def test_a_malformed_peer_name_is_a_fault_naming_the_property_and_the_name():
    with controller(DOWN_ACQUIRER, MALFORMED) as device:
        assert device.state() == tango.DevState.FAULT
        status = device.status()
        assert "property Recorder" in status and MALFORMED in status and "Fix the properties, then Init" in status
        with pytest.raises(tango.DevFailed) as refused:
            device.Configure('{"frames": 1, "exposure": 0.1, "period": 0.1}')
        assert refused.value.args[0].reason == "NotInitialised"
        assert device.SeriesId == 0 and device.LastFile == ""


def test_a_peer_that_is_only_down_lets_the_controller_start_and_says_which():
    with controller(DOWN_ACQUIRER, DOWN_RECORDER) as device:
        status = device.status()  # ready at once: its peers' news comes later, by events
        assert device.state() == tango.DevState.FAULT
        assert "The acquirer is unreachable" in status and "property" not in status
        assert device.Configuration == ""  # the core is there: its attributes answer
        assert device.SeriesId == 0 and device.Progress == 0.0


def test_a_malformed_scan_axis_is_a_fault_naming_the_property():
    with controller(DOWN_ACQUIRER, DOWN_RECORDER, ScanAxes=["omega test/down/omega"]) as device:
        assert device.state() == tango.DevState.FAULT
        status = device.status()
        assert "property ScanAxes: 'omega test/down/omega' must be '<axis> <motor device> <position-compare " \
               "device>'" in status and "Fix the properties, then Init" in status
