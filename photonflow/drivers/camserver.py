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
