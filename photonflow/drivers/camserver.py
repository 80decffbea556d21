"""camserver, the control program of a DECTRIS PILATUS3, and its TCP text protocol, as the
PILATUS user manual describes it and EPICS areaDetector's pilatusDetector driver uses it.

Why: a PILATUS3 takes commands on a TCP socket, one per line (``exptime 0.1``, ``nimages 10``,
``exposure image.cbf``, ``mxsettings Wavelength 0.8``...), and answers each with ``<code>
<OK|ERR> <text>`` ended by ``\\x18``; an exposure's end comes unasked, as a code 7 reply. An
``ERR`` reply becomes ``DetectorError`` with camserver's own text; a connection that fails,
closes or times out becomes ``DetectorConnectionLost``. The models' geometry and the names
camserver gives the image files are part of that interface. Nothing here imports Tango.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

import numpy as np

from photonflow.drivers.minicbf import BAD_PIXEL, GAP_PIXEL
from photonflow.errors import ConfigurationError, DetectorConnectionLost, DetectorError

END = b"\x18"
PIXEL_SIZE = 172e-6  # metres
# (columns, rows) of each PILATUS3 model
MODELS = {
    "pilatus3_100k": (487, 195),
    "pilatus3_300k": (487, 619),
    "pilatus3_1m": (981, 1043),
    "pilatus3_2m": (1475, 1679),
    "pilatus3_6m": (2463, 2527),
}
EXPOSURE_DONE = 7  # the reply code that ends an exposure
# A PILATUS3 is a grid of 487 x 195-pixel modules, 7 pixels apart across and 17 down (dxtbx's
# detector database says the same); camserver writes -1 in those gaps.
MODULE_SIZE = (487, 195)  # (columns, rows)
MODULE_GAP = (7, 17)  # (columns, rows) between neighbouring modules


def module_gaps(shape: tuple[int, int]) -> np.ndarray:
    """True at the pixels between the modules of a flat PILATUS image of ``shape`` (rows,
    columns); ConfigurationError for a size that is no grid of modules (a curved 12M, say)."""
    rows, columns = shape
    gaps = np.zeros(shape, dtype=bool)
    for axis, (size, module, gap) in enumerate(zip((columns, rows), MODULE_SIZE, MODULE_GAP, strict=True)):
        count, remainder = divmod(size + gap, module + gap)
        if count < 1 or remainder:
            raise ConfigurationError(f"a {columns} x {rows}-pixel image is no grid of PILATUS modules ({module} "
                                     f"pixels {'across' if axis == 0 else 'down'} and {gap} between)")
        for edge in range(1, count):
            start = edge * (module + gap) - gap
            if axis == 0:
                gaps[:, start:start + gap] = True
            else:
                gaps[start:start + gap, :] = True
    return gaps


def flagged_pixels(shape: tuple[int, int], bad_pixels: tuple[tuple[int, int], ...]) -> np.ndarray:
    """What camserver writes in place of counts: -1 in the module gaps, -2 at the bad pixels
    (row, column) of the detector's bad-pixel map, 0 where a pixel counts."""
    rows, columns = shape
    flags = np.where(module_gaps(shape), GAP_PIXEL, 0).astype(np.int32)
    for row, column in bad_pixels:
        if not (0 <= row < rows and 0 <= column < columns):
            raise ConfigurationError(f"bad pixel (row {row}, column {column}) is outside the {columns} x {rows}-pixel "
                                     "detector")
        flags[row, column] = BAD_PIXEL
    return flags


def pixel_positions(text: str) -> tuple[tuple[int, int], ...]:
    """Pixels written ``row,column row,column ...`` (a bad-pixel list) as (row, column) pairs."""
    pixels = []
    for entry in str(text).replace(";", " ").split():
        row, _, column = entry.partition(",")
        try:
            pixels.append((int(row), int(column)))
        except ValueError:
            raise ConfigurationError(f"a pixel is written 'row,column' (two integers), got {entry!r}") from None
    return tuple(pixels)


@dataclass(frozen=True)
class Reply:
    code: int
    ok: bool
    text: str


class CamserverClient:
    """One TCP connection to camserver (it serves one client at a time)."""

    def __init__(self, address: str, timeout: float = 5.0):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"the camserver address must be host:port, got {address!r}")
        self.address, self.timeout = address, timeout
        try:
            self._socket = socket.create_connection((host, int(port)), timeout)
        except OSError as error:
            raise DetectorConnectionLost(f"cannot reach camserver at {address}: {error.strerror or error}") from None
        self._buffer = b""
        self._lock = threading.Lock()  # one command and its reply at a time

    def _lost(self, what: str) -> DetectorConnectionLost:
        return DetectorConnectionLost(f"camserver at {self.address} {what}")

    def read_reply(self, timeout: float | None = None) -> Reply:
        """The next reply, whatever command it answers (an exposure's end comes unasked)."""
        self._socket.settimeout(timeout or self.timeout)
        while END not in self._buffer:
            try:
                chunk = self._socket.recv(65536)
            except TimeoutError:
                raise self._lost(f"did not answer within {timeout or self.timeout} s") from None
            except OSError as error:
                raise self._lost(f"dropped the connection ({error.strerror or error})") from None
            if not chunk:
                raise self._lost("closed the connection")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(END, 1)
        code, _, rest = raw.decode(errors="replace").strip().partition(" ")
        status, _, text = rest.partition(" ")
        if not code.isdigit() or status not in ("OK", "ERR"):
            raise DetectorError(f"camserver sent something that is not a reply: {raw[:200]!r}")
        return Reply(int(code), status == "OK", text.strip())

    def send(self, line: str) -> None:
        """Send a command whose reply comes later (``k`` during an exposure)."""
        with self._lock:
            try:
                self._socket.sendall(line.encode() + b"\n")
            except OSError as error:
                raise self._lost(f"dropped the connection ({error.strerror or error})") from None

    def command(self, line: str, timeout: float | None = None) -> Reply:
        """Send one command and return its reply; an ERR reply raises DetectorError."""
        with self._lock:
            try:
                self._socket.sendall(line.encode() + b"\n")
            except OSError as error:
                raise self._lost(f"dropped the connection ({error.strerror or error})") from None
            reply = self.read_reply(timeout)
        if not reply.ok:
            raise DetectorError(f"camserver refused '{line}': {reply.code} ERR {reply.text}")
        return reply

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> CamserverClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def image_names(template: str, count: int) -> list[str]:
    """camserver's file names: the name itself for one image, ``<stem>_NNNNN.cbf`` for several."""
    if count == 1:
        return [template]
    stem = template.rsplit(".", 1)[0]
    return [f"{stem}_{n:05d}.cbf" for n in range(count)]
