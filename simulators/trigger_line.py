"""A simulated trigger cable: the pulses a position-compare (or any pulse generator) sends, as
the detectors cabled to it receive them.

Why: at a beamline the motion controller's position-compare output is a TTL line into the
detector's external-trigger input; in the simulation the generator and the detectors live in
different processes, so the line is a real socket. The generator's output binds a ZeroMQ PUB
socket (one output may feed several inputs, as a split cable does); each detector's input
connects a SUB socket to the same address, before or after the generator starts.

A pulse carries the time its edge happened (``time``, UNIX seconds: the hardware time, which a
late delivery does not change), its width and, from a position-compare, the encoder position
latched at the edge.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

import zmq

log = logging.getLogger(__name__)

RECEIVE_POLL_MS = 50  # how often an input's thread checks whether it was closed


@dataclass(frozen=True)
class Pulse:
    index: int  # 0-based, since the generator was armed
    time: float  # UNIX seconds of the rising edge
    width: float  # seconds the line stays high (a gate's exposure)
    position: float | None = None  # encoder position latched at the edge, if the generator has one

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, message: bytes) -> Pulse:
        fields = json.loads(message)
        position = fields.get("position")
        return cls(int(fields["index"]), float(fields["time"]), float(fields["width"]),
                   None if position is None else float(position))


def _ensure_ipc_folder(address: str) -> None:
    if address.startswith("ipc://"):
        folder = os.path.dirname(address[len("ipc://"):])
        if folder:
            os.makedirs(folder, exist_ok=True)


class TriggerLineOutput:
    """The generator's end of the cable."""

    def __init__(self, address: str, context: zmq.Context | None = None):
        self.address = address
        _ensure_ipc_folder(address)
        self._socket = (context or zmq.Context.instance()).socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(address)
        self._lock = threading.Lock()

    def send(self, pulse: Pulse) -> None:
        with self._lock:
            self._socket.send(pulse.encode())

    def close(self) -> None:
        with self._lock:
            self._socket.close()


class TriggerLineInput:
    """A detector's end of the cable: ``on_pulse(pulse)`` is called, on this input's own
    thread, for each pulse in the order sent. A malformed message is counted and logged."""

    def __init__(self, address: str, on_pulse: Callable[[Pulse], None], context: zmq.Context | None = None):
        self.address = address
        self.malformed = 0
        self._on_pulse = on_pulse
        _ensure_ipc_folder(address)
        self._socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(address)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name=f"trigger-input {address}", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._closed.is_set():
            if not poller.poll(RECEIVE_POLL_MS):
                continue
            message = self._socket.recv()
            try:
                pulse = Pulse.decode(message)
            except (ValueError, KeyError, TypeError) as error:
                self.malformed += 1
                log.warning("trigger input %s: malformed pulse %r ignored (%s)", self.address, message[:80], error)
                continue
            self._on_pulse(pulse)
        self._socket.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(1.0)
