"""A trigger-line output for tests that knows when the detectors' inputs have joined it.

Why: a ZeroMQ PUB drops what it sends before a SUB has joined, so a test sending pulses must
know the detector's input is listening. This output speaks the same wire as the generator's
``TriggerLineOutput`` (PUB/SUB, one pulse a message) but binds an XPUB socket, which receives
each input's subscription: ``wait_for_inputs(n)`` returns once n inputs listen.
"""

from __future__ import annotations

import os
import time

import zmq

from photonflow.simulators.trigger_line import Pulse


class WatchedTriggerLine:
    def __init__(self, address: str):
        self.address = address
        if address.startswith("ipc://"):
            os.makedirs(os.path.dirname(address[len("ipc://"):]), exist_ok=True)
        self._socket = zmq.Context.instance().socket(zmq.XPUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.XPUB_VERBOSE, 1)  # every input's subscription, not only the first
        self._socket.bind(address)
        self.inputs = 0

    def wait_for_inputs(self, count: int = 1, timeout: float = 10.0) -> None:
        """Until ``count`` inputs have subscribed since this line was made."""
        deadline = time.monotonic() + timeout
        while self.inputs < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._socket.poll(int(remaining * 1000)):
                raise AssertionError(f"{self.inputs} of {count} trigger inputs joined {self.address}")
            if self._socket.recv()[:1] == b"\x01":
                self.inputs += 1

    def send(self, pulse: Pulse) -> None:
        self._socket.send(pulse.encode())

    def send_pulses(self, times, width: float = 0.0, step: float = 0.1) -> list[Pulse]:
        """Pulse i at ``times[i]``, latched at position i * step; the pulses sent."""
        pulses = [Pulse(index, time, width, position=index * step) for index, time in enumerate(times)]
        for pulse in pulses:
            self.send(pulse)
        return pulses

    def close(self) -> None:
        self._socket.close()
