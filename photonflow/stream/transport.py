"""ZeroMQ transport of stream messages: a PUSH sender the detector side binds, a PULL
receiver the Recorder connects.

PUSH/PULL gives back-pressure instead of loss: when the Recorder falls behind, the
sender's queue fills and ``send`` waits, so no frame is silently dropped on the wire.
Both sides wait with a timeout and a stop flag, so Stop/Abort are never stuck in a send.
"""

from __future__ import annotations

import threading
from typing import Sequence

import zmq

DEFAULT_HIGH_WATER_MARK = 256


class SendInterrupted(Exception):
    """``send`` gave up because the caller asked to stop."""


class StreamSender:
    """Binds a PUSH socket; ``endpoint`` tells the actual address (a ``*`` port is resolved)."""

    def __init__(self, bind_address: str, high_water_mark: int = DEFAULT_HIGH_WATER_MARK):
        self._context = zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, high_water_mark)
        self._socket.setsockopt(zmq.LINGER, 2000)
        self._socket.bind(bind_address)
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._lock = threading.Lock()

    def send(self, parts: Sequence, stop: threading.Event | None = None, poll_ms: int = 100) -> None:
        """Send one multipart message, waiting while the receiver is full or absent.

        Raises SendInterrupted if ``stop`` is set while waiting.
        """
        with self._lock:
            while not self._socket.poll(poll_ms, zmq.POLLOUT):
                if stop is not None and stop.is_set():
                    raise SendInterrupted()
            self._socket.send_multipart(parts, copy=False)

    def close(self) -> None:
        self._socket.close()


class StreamReceiver:
    """Connects one PULL socket to one or several senders and hands out raw message parts.

    With several endpoints (multi-module detectors, DCU workers fed round-robin) ZeroMQ
    fair-queues between them, so one slow sender never starves the others.
    """

    def __init__(self, endpoints: str | Sequence[str], high_water_mark: int = DEFAULT_HIGH_WATER_MARK):
        self.endpoints = (endpoints,) if isinstance(endpoints, str) else tuple(endpoints)
        self._socket = zmq.Context.instance().socket(zmq.PULL)
        self._socket.setsockopt(zmq.RCVHWM, high_water_mark)
        self._socket.setsockopt(zmq.LINGER, 0)
        for endpoint in self.endpoints:
            self._socket.connect(endpoint)

    def receive(self, timeout_ms: int) -> list[zmq.Frame] | None:
        """The next message's parts (zero-copy frames), or None if none came in time."""
        try:  # under load a message is already queued: take it without a poll
            return self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass
        if not self._socket.poll(timeout_ms, zmq.POLLIN):
            return None
        return self._socket.recv_multipart(copy=False)

    def close(self) -> None:
        self._socket.close()
