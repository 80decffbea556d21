"""ZeroMQ transport of stream messages: a PUSH sender the detector side binds, a PULL
receiver the Recorder connects.

PUSH/PULL gives back-pressure instead of loss: when the Recorder falls behind, the
sender's queue fills and ``send`` waits, so no frame is silently dropped on the wire.
Both sides wait with a timeout and a stop flag, so Stop/Abort are never stuck in a send.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence

import zmq

DEFAULT_HIGH_WATER_MARK = 256
# Few bytes wait inside ZeroMQ on the receiving side: the Recorder's own queue, bounded in
# frames and bytes and visible as QueueDepth, is where frames wait for the disk. A receive
# buffer of 256 messages would let 4.6 GB of 2162x2068 uint32 frames pile up unseen. So once
# a series says how large its frames are (``fit_to_frames``), the buffer holds what fits in
# RECEIVE_BUFFER_BYTES, at least RECEIVE_HIGH_WATER_MARK messages. Few messages cost the
# small frames dearly: 16 of 256x256 uint16 (2 MB) made ZeroMQ's I/O thread stop and be
# woken again every 8 frames, ~20 % of the Recorder's throughput at 10 000 frames/s.
RECEIVE_HIGH_WATER_MARK = 16
RECEIVE_BUFFER_BYTES = 64_000_000
# Before the frame size is known: the most messages ZeroMQ may hold (its own default). It can
# only be lowered once connected (see fit_to_frames), so it starts high; the series' first
# message, read at once by an idle receiver, gives the size before many frames can come.
UNSIZED_HIGH_WATER_MARK = 1000


def receive_high_water_mark(frame_bytes: int) -> int:
    """The messages the receive buffer holds for frames of ``frame_bytes``."""
    fitting = RECEIVE_BUFFER_BYTES // max(frame_bytes, 1)
    return max(RECEIVE_HIGH_WATER_MARK, min(UNSIZED_HIGH_WATER_MARK, fitting))


class SendInterrupted(Exception):
    """``send`` gave up because the caller asked to stop."""


class ReceiverGone(Exception):
    """``send`` waited longer than the sender's timeout: nobody is taking the stream."""


DEFAULT_SEND_TIMEOUT = 30.0  # seconds a message may wait for a receiver with room


class StreamSender:
    """Binds a PUSH socket; ``endpoint`` tells the actual address (a ``*`` port is resolved)."""

    def __init__(
        self, bind_address: str, high_water_mark: int = DEFAULT_HIGH_WATER_MARK,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ):
        self.send_timeout = send_timeout
        self._context: zmq.Context = zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, high_water_mark)
        self._socket.setsockopt(zmq.LINGER, 2000)
        self._socket.bind(bind_address)
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._lock = threading.Lock()

    def send(self, parts: Sequence, stop: threading.Event | None = None, poll_ms: int = 100) -> None:
        """Send one multipart message, waiting while the receiver is full or absent.

        Raises SendInterrupted if ``stop`` is set while waiting, ReceiverGone once it waited
        ``send_timeout`` seconds (a Recorder killed or restarted mid-series takes nothing more).
        """
        with self._lock:
            if self._offer(parts):  # usually there is room: no poll, one system call less per frame
                return
            deadline = time.monotonic() + self.send_timeout
            while not self._socket.poll(poll_ms, zmq.POLLOUT):
                if stop is not None and stop.is_set():
                    raise SendInterrupted()
                if time.monotonic() > deadline:
                    raise ReceiverGone(
                        f"no receiver took the stream {self.endpoint} for {self.send_timeout:g} s"
                    )
            self._socket.send_multipart(parts, copy=False)

    def offer(self, parts: Sequence) -> bool:
        """Send at once if a receiver has room; False if none has (full, or none connected)."""
        with self._lock:
            return self._offer(parts)

    def _offer(self, parts: Sequence) -> bool:
        try:
            self._socket.send_multipart(parts, zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:  # full (ZeroMQ takes a message whole or not at all)
            return False

    def announce(self, parts: Sequence, stop: threading.Event | None = None) -> None:
        """A series' start or end: with one output, a message like any other."""
        self.send(parts, stop)

    def close(self) -> None:
        self._socket.close()


class StreamDistributor:
    """One PUSH socket per Recorder sharing the stream (``outputs`` of them), frames dealt out as a
    DECTRIS DCU's stream v2 deals them to several receivers: each data message to exactly one, the
    next in turn that has room, so a slow or dead Recorder gets fewer frames and stalls the others
    no longer than its own ZeroMQ buffer; a series' start and end to every one (``announce``), in
    order with its frames. ``endpoint`` names the outputs, comma-separated, in Recorder order.

    Why not one PUSH socket that several Recorders connect to: ZeroMQ would deal out the start and
    the end like any message, to one Recorder only."""

    def __init__(self, bind_address: str, outputs: int, high_water_mark: int = DEFAULT_HIGH_WATER_MARK,
                 send_timeout: float = DEFAULT_SEND_TIMEOUT):
        if outputs < 1:
            raise ValueError(f"a stream has at least one output, not {outputs}")
        self.send_timeout = send_timeout
        self._outputs = [StreamSender(bind_address, high_water_mark, send_timeout) for _ in range(outputs)]
        self.endpoints = [output.endpoint for output in self._outputs]
        self.endpoint = ",".join(self.endpoints)
        self._next = 0
        self._poller = zmq.Poller()
        for output in self._outputs:
            self._poller.register(output._socket, zmq.POLLOUT)

    def send(self, parts: Sequence, stop: threading.Event | None = None, poll_ms: int = 100) -> None:
        """One data message to one output: the next in turn with room, else the first to have
        room; SendInterrupted on ``stop``, ReceiverGone once none took it for ``send_timeout`` s."""
        deadline = None
        while True:
            count = len(self._outputs)
            for offset in range(count):
                index = (self._next + offset) % count
                if self._outputs[index].offer(parts):  # else full, or its Recorder is gone
                    self._next = (index + 1) % count
                    return
            if stop is not None and stop.is_set():
                raise SendInterrupted()
            deadline = deadline or time.monotonic() + self.send_timeout
            if time.monotonic() > deadline:
                raise ReceiverGone(f"no receiver took the stream {self.endpoint} for {self.send_timeout:g} s")
            self._poller.poll(poll_ms)

    def announce(self, parts: Sequence, stop: threading.Event | None = None) -> None:
        """A series' start or end to every output: each Recorder learns of the series and of its
        end. An output that takes nothing (its Recorder gone) is skipped once ``stop`` is set or
        its ``send_timeout`` passed; ReceiverGone only when no output took it."""
        gone = []
        for output in self._outputs:
            try:
                output.send(list(parts), stop)
            except ReceiverGone as error:
                gone.append(error)
            except SendInterrupted:
                gone.append(ReceiverGone(f"{output.endpoint}: given up"))
        if len(gone) == len(self._outputs):
            raise gone[0]

    def close(self) -> None:
        for output in self._outputs:
            output.close()


_WAKE_NUMBERS = itertools.count()  # one inproc name per receiver of this process


class StreamReceiver:
    """Connects one PULL socket to one or several senders and hands out raw message parts.

    With several endpoints (multi-module detectors, DCU workers fed round-robin) ZeroMQ
    fair-queues between them, so one slow sender never starves the others. ``wake``, from
    any thread, ends a ``receive`` that is waiting, so a finished series lets go of its
    inputs at once rather than at the end of the wait.
    """

    def __init__(self, endpoints: str | Sequence[str], high_water_mark: int = UNSIZED_HIGH_WATER_MARK):
        self.endpoints = (endpoints,) if isinstance(endpoints, str) else tuple(endpoints)
        context: zmq.Context = zmq.Context.instance()
        self._socket = context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.RCVHWM, high_water_mark)
        self._socket.setsockopt(zmq.LINGER, 0)
        for endpoint in self.endpoints:
            self._socket.connect(endpoint)
        # A socket pair only to interrupt the poll: ZeroMQ sockets have no other way.
        self._wake_in = context.socket(zmq.PAIR)
        self._wake_in.setsockopt(zmq.LINGER, 0)
        # a name of its own: id(self) is reused once a receiver is collected, and one never closed
        # still holds its name in the shared context (a later bind failed: "Address already in use")
        self._wake_in.bind(f"inproc://photonflow-receiver-wake-{next(_WAKE_NUMBERS)}")
        self._wake_out = context.socket(zmq.PAIR)
        self._wake_out.setsockopt(zmq.LINGER, 0)
        self._wake_out.connect(self._wake_in.getsockopt_string(zmq.LAST_ENDPOINT))
        self._wake_lock = threading.Lock()  # wake() may come from any thread
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._wake_in, zmq.POLLIN)

    def receive(self, timeout_ms: int) -> list[zmq.Frame] | None:
        """The next message's parts (zero-copy frames), or None if none came in time or on
        ``wake``; with ``timeout_ms`` 0, only a message already there."""
        try:  # under load a message is already queued: take it without a poll
            return self._take(zmq.NOBLOCK)
        except zmq.Again:
            if timeout_ms == 0:
                return None
        ready = dict(self._poller.poll(timeout_ms))
        if self._wake_in in ready:
            while self._wake_in.poll(0, zmq.POLLIN):
                self._wake_in.recv()
            return None
        if self._socket in ready:
            return self._take(0)
        return None

    def _take(self, flags: int) -> list[zmq.Frame]:
        """One whole message: ZeroMQ delivers its parts together, each frame saying whether more
        follow (``recv_multipart`` asks the socket instead, a call more per part: ~2 us a message)."""
        socket = self._socket
        parts = [socket.recv(flags, copy=False)]
        while parts[-1].more:
            parts.append(socket.recv(copy=False))
        return parts

    def fit_to_frames(self, frame_bytes: int) -> int:
        """Bound the receive buffer in bytes once the frame size is known (from the receiving
        thread: a ZeroMQ socket belongs to one thread); returns the messages it now holds.

        Only ever lowered: ZeroMQ applies a changed high-water mark to the connections already
        made, but a raised one can stall a connection that was full (libzmq's reader wakes the
        writer every half high-water mark of messages read, counted with the new mark).
        """
        messages = min(self.high_water_mark, receive_high_water_mark(frame_bytes))
        if messages != self.high_water_mark:
            self._socket.setsockopt(zmq.RCVHWM, messages)
        return messages

    @property
    def high_water_mark(self) -> int:
        """The messages ZeroMQ holds for this receiver (the socket's own setting)."""
        return self._socket.getsockopt(zmq.RCVHWM)

    def wake(self) -> None:
        with self._wake_lock:
            if not self._wake_out.closed:
                try:
                    self._wake_out.send(b"", zmq.NOBLOCK)
                except zmq.Again:  # a wake-up is already pending
                    pass

    def close(self) -> None:
        with self._wake_lock:
            self._wake_out.close()
        self._wake_in.close()
        self._socket.close()
