"""The DataManager device with its job engine down: it starts anyway (the engine is connected on
first use), and reading Jobs answers at once with the reason and what to do, the State ALARM."""

from __future__ import annotations

import socket

import pytest
import tango

from tests.helpers.datamanager_server import datamanager_server


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_jobs_of_an_engine_that_does_not_answer_are_a_clear_error_and_an_alarm(tmp_path):
    engine = f"tcp://127.0.0.1:{closed_port()}"
    with datamanager_server(tmp_path, JobEngine=engine) as device:
        assert device.state() == tango.DevState.ON
        with pytest.raises(tango.DevFailed) as refused:
            _ = device.Jobs
        error = refused.value.args[0]
        assert error.reason == "JobEngineLost"
        assert engine in error.desc and "start it again" in error.desc
        assert device.state() == tango.DevState.ALARM and error.desc in device.status()
