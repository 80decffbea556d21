"""Fixtures of the unit tests."""

import pytest

from photonflow.stream.transport import StreamSender
from tests.helpers.controller import controller_rig


@pytest.fixture
def stream():
    """A real ZeroMQ stream on a free loopback port, as an Acquirer binds it."""
    sender = StreamSender("tcp://127.0.0.1:*")
    yield sender
    sender.close()


@pytest.fixture
def rig():
    """A Controller over fake peers: (controller, acquirer, recorder, events, clock)."""
    return controller_rig()
