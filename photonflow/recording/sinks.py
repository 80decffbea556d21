"""Frame sinks: what else happens to a frame once the Recorder has accepted it.

The Recorder calls every sink from its writing thread, for every message it accepts, so a
sink must be cheap and must never wait on the network: a slow live view or a stalled
processing worker may lose frames, the data file never does. A sink also never raises
into the Recorder; its own failures are counted and logged.

- ``LivePreview`` keeps a small, rate-limited picture of the latest frame for the operator.
- ``StreamFanOut`` re-publishes accepted frames in STINS on a second ZeroMQ socket, for
  processing workers (PUSH) or viewers (PUB).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import zmq

from photonflow.errors import ConfigurationError
from photonflow.stream.stins import (
    DATA,
    END_REASONS,
    SERIES_START,
    DataMessage,
    SeriesEnd,
    SeriesStart,
    StinsEncoder,
    utc_now_iso,
)
from photonflow.throttle import Throttle

log = logging.getLogger(__name__)


@runtime_checkable
class FrameSink(Protocol):
    """Called by the Recorder's writing thread; every call returns at once and never raises."""

    def series_started(self, start: SeriesStart) -> None: ...

    def frame_written(self, message: DataMessage) -> None: ...

    def series_ended(self, end: SeriesEnd | None, end_reason: str) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Live preview

PREVIEW_DTYPE = np.dtype(np.float32)
"""One type for every detector pixel type, so the Tango image attribute has a single declared
type (DevFloat). Block sums of integer counts are exact up to 2**24 (a uint16 frame binned
by up to 16x16 stays exact), never wrap around as uint32 would on an Eiger's 0xFFFFFFFF
bad-pixel marker, and take half the bytes of int64/float64 on the event channel."""


def decimation_factor(shape: tuple[int, int], max_pixels: int) -> int:
    """The smallest integer binning that brings the preview within ``max_pixels`` (1: no binning).

    Partial blocks at the bottom and right edges count as preview pixels, so the result is
    exactly ``ceil(rows/f) x ceil(columns/f)``. A small frame is never upscaled.
    """
    if max_pixels < 1:
        raise ConfigurationError(f"max_pixels must be >= 1, got {max_pixels}")
    rows, columns = shape
    factor = max(1, math.isqrt(rows * columns // max_pixels))  # a lower bound: f*f >= pixels/max
    while -(-rows // factor) * -(-columns // factor) > max_pixels:
        factor += 1
    return factor


def block_sum(frame: np.ndarray, factor: int) -> np.ndarray:
    """Bin ``frame`` by summing ``factor x factor`` blocks, into a new float32 array.

    Summing keeps the counts: the preview's total equals the frame's and a one-pixel Bragg
    peak or hot pixel always shows, where striding would hide (factor**2 - 1) of every
    factor**2 pixels. Blocks at the bottom and right edges may be partial (fewer pixels).
    Done as ``2 * factor`` strided vector additions, several times faster than a
    reshape-and-sum (about 0.6 ms for a 1065 x 1030 frame).
    """
    if factor == 1:
        return frame.astype(PREVIEW_DTYPE)  # always a copy: never alias the received buffer
    columns = frame[:, 0::factor].astype(PREVIEW_DTYPE)
    for offset in range(1, factor):
        part = frame[:, offset::factor]
        columns[:, : part.shape[1]] += part
    preview = columns[0::factor].copy()
    for offset in range(1, factor):
        part = columns[offset::factor]
        preview[: part.shape[0]] += part
    return preview


def frame_pixels(message: DataMessage) -> np.ndarray:
    """The frame's pixels as a 2-D array, decompressing a ``bslz4`` frame."""
    if message.encoding == "raw":
        return message.to_array()
    if message.encoding == "bslz4":
        from photonflow.stream.bslz4 import decompress  # imported only when a compressed frame comes

        return decompress(message.payload, message.shape, message.dtype)
    raise ValueError(f"no preview for frames encoded as {message.encoding!r}")


class LivePreview:
    """The latest frame, binned to at most ``max_pixels``, at most ``max_rate_hz`` times a second.

    A frame that comes before the rate allows costs one clock reading: it is not decoded,
    only remembered, so the last frame of a series can still be shown at ``series_ended``
    if the rate allows then. ``on_preview(image, frame_number)`` runs in the Recorder's
    writing thread and must be quick (pushing a Tango change event is).
    """

    def __init__(
        self,
        max_rate_hz: float = 5.0,
        max_pixels: int = 512 * 512,
        clock: Callable[[], float] = time.monotonic,
        on_preview: Callable[[np.ndarray, int], None] | None = None,
    ):
        if not max_rate_hz > 0:
            raise ConfigurationError(f"max_rate_hz must be > 0, got {max_rate_hz}")
        if max_pixels < 1:
            raise ConfigurationError(f"max_pixels must be >= 1, got {max_pixels}")
        self.max_rate_hz = max_rate_hz
        self.max_pixels = max_pixels
        self._throttle = Throttle(1.0 / max_rate_hz, clock)
        self._on_preview = on_preview
        self._latest: np.ndarray | None = None
        self._pending: DataMessage | None = None  # newest frame not shown because of the rate
        self._factors: dict[tuple[int, int], int] = {}
        self.latest_frame_number = -1
        self.previews_made = 0
        self.preview_errors = 0
        self.last_error = ""

    @property
    def latest(self) -> np.ndarray | None:
        """The last preview image (float32 block sums), or None before the first one."""
        return self._latest

    def series_started(self, start: SeriesStart) -> None:
        self._pending = None
        if start.shape is not None:  # the Recorder tells its sinks once it knows what a frame is
            self.factor_for(start.shape)  # decide the binning before the first frame

    def frame_written(self, message: DataMessage) -> None:
        if not self._throttle.ready():
            self._pending = message
            return
        self._pending = None
        self._show(message)

    def series_ended(self, end: SeriesEnd | None, end_reason: str) -> None:
        """Show the series' last frame if it was skipped and the rate allows it now."""
        pending, self._pending = self._pending, None
        if pending is not None and self._throttle.ready():
            self._show(pending)

    def close(self) -> None:
        self._pending = None

    def factor_for(self, shape: tuple[int, int]) -> int:
        factor = self._factors.get(shape)
        if factor is None:
            factor = decimation_factor(shape, self.max_pixels)
            self._factors = {shape: factor}  # one detector, one shape: keep only the current one
        return factor

    def _show(self, message: DataMessage) -> None:
        try:
            preview = block_sum(frame_pixels(message), self.factor_for(message.shape))
        except Exception as error:  # noqa: BLE001 - a preview must never fail a recording
            self._failed(f"no preview of frame {message.frame_number}: {error}")
            return
        self._latest = preview
        self.latest_frame_number = message.frame_number
        self.previews_made += 1
        if self._on_preview is not None:
            try:
                self._on_preview(preview, message.frame_number)
            except Exception as error:  # noqa: BLE001 - the device's event push: a preview must never fail a recording
                self._failed(f"publishing the preview of frame {message.frame_number} failed: {error}")

    def _failed(self, reason: str) -> None:
        self.preview_errors += 1
        self.last_error = reason
        log.warning("live preview: %s", reason)  # at most max_rate_hz times a second


# ---------------------------------------------------------------------------------------------
# Fan-out

FAN_OUT_MODES = ("push", "pub")


class StinsRelayEncoder(StinsEncoder):
    """Re-encodes received messages as this sender's own: its own ``message_id`` sequence,
    the frame payload passed on as the very buffer received (any encoding), never copied.

    Stands in for ``StinsEncoder.series_start(encoding=...)`` and a ``data_payload`` method
    that ``stins.py`` does not have yet; field names and order are those of ``StinsEncoder``.
    """

    def series_start_of(self, start: SeriesStart) -> list[bytes]:
        return [
            self._header(
                SERIES_START,
                start.series_id,
                frame_count=start.frame_count,
                shape=list(start.shape or ()),  # the Recorder tells its sinks once it knows
                dtype=start.dtype,
                encoding=start.encoding,
                detector=start.detector,
                start_time=start.start_time,
                **({"file": start.file} if start.file else {}),  # where the Recorder writes them
            )
        ]

    def data_of(self, message: DataMessage) -> list[Any]:
        header = self._header(
            DATA,
            message.series_id,
            frame_number=message.frame_number,
            shape=list(message.shape),
            dtype=message.dtype,
            encoding=message.encoding,
            timestamp=message.timestamp,
        )
        return [header, message.payload]


class StreamFanOut:
    """Re-publishes accepted frames in STINS on a second socket this sink binds.

    ``mode="push"`` deals frames to processing workers (PULL); ``mode="pub"`` serves viewers
    (SUB). Sends never wait: in push mode a frame is dropped, and counted in
    ``frames_dropped``, when no worker is connected or every worker's queue is full; in pub
    mode ZeroMQ itself drops for a slow subscriber without telling, so only sends are
    counted. ``every=n`` forwards frames whose number is a multiple of n; series_start and
    series_end always go (if the outlet takes them; else ``series_messages_dropped``).
    ``message_id`` counts dropped messages too, so a gap tells a consumer it lost some.

    Each queued frame holds on to its received buffer until sent, so ``high_water_mark``
    bounds the memory a slow consumer can pin (per consumer), not only the latency.
    Counters cover the sink's lifetime; the series_end it sends reports in ``frames_sent``
    the frames it forwarded in that series, and keeps the original frame numbers.
    """

    def __init__(
        self,
        mode: str = "push",
        every: int = 1,
        bind_address: str = "tcp://127.0.0.1:*",
        high_water_mark: int = 16,
        context: zmq.Context | None = None,
    ):
        if mode not in FAN_OUT_MODES:
            raise ConfigurationError(f"fan-out mode must be one of {', '.join(FAN_OUT_MODES)}, got {mode!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigurationError(f"'every' must be an integer >= 1, got {every!r}")
        self.mode = mode
        self.every = every
        self._encoder = StinsRelayEncoder()
        context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = context.socket(zmq.PUSH if mode == "push" else zmq.PUB)
        try:
            self._socket.setsockopt(zmq.SNDHWM, high_water_mark)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.bind(bind_address)
        except zmq.ZMQError as error:
            self._socket.close(linger=0)
            raise ConfigurationError(f"cannot bind the fan-out to {bind_address}: {error}") from None
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.frames_forwarded = 0
        self.frames_dropped = 0
        self.series_messages_dropped = 0
        self.last_error = ""
        self._series_id: int | None = None
        self._series_frames = 0  # frames the Recorder accepted in this series
        self._series_forwarded = 0

    def outlet_ready(self, timeout_ms: int = 0) -> bool:
        """Would a message be taken now? Push: a worker is connected with room. Pub: always."""
        return self._socket is not None and bool(self._socket.poll(timeout_ms, zmq.POLLOUT))

    def _send(self, socket: zmq.Socket, parts: list) -> bool:
        try:
            socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:  # no worker, or all full: drop rather than stall the Recorder
            return False
        except zmq.ZMQError as error:
            self.last_error = f"fan-out send failed: {error}"
            log.warning("%s", self.last_error)
            return False

    def series_started(self, start: SeriesStart) -> None:
        socket = self._socket
        if socket is None:
            return
        self._series_id = start.series_id
        self._series_frames = self._series_forwarded = 0
        if not self._send(socket, self._encoder.series_start_of(start)):
            self.series_messages_dropped += 1

    def frame_written(self, message: DataMessage) -> None:
        self._series_frames += 1
        socket = self._socket
        if message.frame_number % self.every or socket is None:
            return
        if self._send(socket, self._encoder.data_of(message)):
            self.frames_forwarded += 1
            self._series_forwarded += 1
        else:
            self.frames_dropped += 1

    def series_ended(self, end: SeriesEnd | None, end_reason: str) -> None:
        """Close the series for consumers, even when the Recorder was stopped without a series_end."""
        series_id = end.series_id if end is not None else self._series_id
        self._series_id = None
        socket = self._socket
        if socket is None or series_id is None:
            return
        parts = self._encoder.series_end(
            series_id,
            frames_acquired=end.frames_acquired if end is not None else self._series_frames,
            frames_sent=self._series_forwarded,
            end_reason=end_reason if end_reason in END_REASONS else "failed",
            end_time=end.end_time if end is not None else utc_now_iso(),
        )
        if not self._send(socket, parts):
            self.series_messages_dropped += 1

    def close(self) -> None:
        """Close the socket at once; frames still queued for consumers are discarded."""
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.close(linger=0)
