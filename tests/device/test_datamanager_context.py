"""The DataManager server never runs a context's code itself: ReloadContext on a context that
calls os._exit(7) while loading answers a DevFailed saying so, and the server goes on answering;
Reprocess refuses run numbers that are not the catalogue's with a reason to act on."""

from __future__ import annotations

import json

import pytest
import tango

from tests.helpers.datamanager_server import datamanager_server

EXPERIMENT = {"proposal": "ctx0001", "session": "s1", "sample": "ceo2"}


def refusal(call) -> tango.DevError:
    with pytest.raises(tango.DevFailed) as refused:
        call()
    return refused.value.args[0]


def test_a_context_exiting_while_loading_is_a_clear_error_and_the_server_goes_on(tmp_path):
    context = tmp_path / "context.py"
    context.write_text("import os\nos._exit(7)\n")
    with datamanager_server(tmp_path, ContextFile=str(context), VariablesTimeout=30.0) as device:
        device.set_timeout_millis(60_000)
        error = refusal(device.ReloadContext)
        assert error.reason == "ContextProcessFailed"
        assert error.desc == f"runner exited with code 7 while loading {context}"
        assert device.state() == tango.DevState.ON  # the server answers, unharmed
        context.write_text("from photonflow.datamanager.context import Variable\n\n"
                           "@Variable(title='Two')\ndef two(run):\n    return 2\n")
        assert list(device.ReloadContext()) == ["two"]

        assert refusal(lambda: device.Reprocess([1])).reason == "NotAllowedInThisState"  # no experiment yet
        device.SetExperiment(json.dumps(EXPERIMENT))
        negative = refusal(lambda: device.Reprocess([2, -1]))
        assert negative.reason == "InvalidArgument" and "run numbers start at 1" in negative.desc
        unknown = refusal(lambda: device.Reprocess([4]))
        assert unknown.reason == "UnknownRun" and "run(s) 4 not in the catalogue of ctx0001" in unknown.desc
        assert device.Reprocess([0]) == 0  # every run of the proposal: none yet
        assert device.VariablesStatus == "idle, 0 waiting"
