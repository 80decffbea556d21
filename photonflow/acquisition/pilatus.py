"""PILATUS3 through camserver, its TCP text protocol: the Acquirer's driver.

Why: a PILATUS3 writes each image as a CBF file on a disk its control computer shares;
camserver only takes commands. So this camera configures camserver, starts the exposure,
and reads every image file as soon as camserver has written it (fabio parses the CBF and
its miniCBF header), to hand the frames to the Acquirer, which puts them on the STINS stream.

``CamserverClient`` is the protocol: one command per line, replies ``<code> <OK|ERR>
<text>`` each ended by ``\\x18``. An ``ERR`` reply becomes ``DetectorError`` with
camserver's own text; a connection that fails, closes or times out becomes
``DetectorConnectionLost``. Nothing here imports Tango.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from photonflow.acquisition.acquirer import AcquisitionSettings, Closable, FrameSource
from photonflow.errors import ConfigurationError, DetectorConnectionLost, DetectorError

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class PilatusSettings:
    """What the beamline sets once (Tango properties)."""

    address: str  # camserver's host:port (41234 on a real one)
    model: str = "pilatus3_1m"
    image_directory: str = "/tmp"  # where camserver writes, as this computer sees it
    timeout: float = 5.0
    serial_number: str = ""


def parse_header(header: Any) -> dict[str, Any]:
    """A CBF's miniCBF header (fabio's PilatusHeader) in NXdetector names."""
    def value(key):
        try:
            return header[key]
        except (KeyError, TypeError):
            return None

    sensor, pixel, beam = value("sensor"), value("Pixel_size"), value("Beam_xy")
    wavelength = value("Wavelength")
    detector = value("Detector")  # "PILATUS3 100K, S/N 24-0111" (fabio drops the comma)
    model, _, serial = str(detector).partition("S/N") if detector else ("", "", "")
    described = {
        "description": detector,
        "model": model.strip(" ,") or None,
        "serial_number": serial.strip() or None,
        "sensor_material": sensor[0] if sensor else None,
        "sensor_thickness": sensor[1] if sensor else None,
        "x_pixel_size": pixel[0] if pixel else None,
        "y_pixel_size": pixel[1] if pixel else None,
        "count_time": value("Exposure_time"),
        "frame_time": value("Exposure_period"),
        "dead_time": value("Tau"),
        "saturation_value": value("Count_cutoff"),
        "threshold_energy": value("Threshold_setting"),
        "incident_wavelength": wavelength * 1e-10 if wavelength else None,
        "distance": value("Detector_distance"),
        "beam_center_x": beam[0] if beam else None,
        "beam_center_y": beam[1] if beam else None,
        "start_angle": value("Start_angle"),
        "angle_increment": value("Angle_increment"),
    }
    return {key: item for key, item in described.items() if item is not None}


# The numbers of each CBF header that go with its frame on the stream (STINS ``metadata``).
FRAME_METADATA = (
    "count_time", "frame_time", "dead_time", "saturation_value", "threshold_energy", "incident_wavelength",
    "distance", "beam_center_x", "beam_center_y", "start_angle", "angle_increment",
)


# photonflow's trigger modes and the camserver command that starts each
EXPOSE_COMMANDS = {"internal": "exposure", "external_start": "exttrigger", "external": "extmtrigger",
                   "external_enable": "extenable"}


class PilatusCamera(FrameSource, Closable):
    """A PILATUS3 behind camserver; images come as CBF files on a shared disk."""

    trigger_modes = tuple(EXPOSE_COMMANDS)
    min_exposure = 1e-7
    frame_metadata = FRAME_METADATA

    def __init__(self, settings: PilatusSettings, client: CamserverClient | None = None):
        if settings.model not in MODELS:
            raise ConfigurationError(f"model must be one of {', '.join(MODELS)}, got {settings.model!r}")
        self.settings = settings
        self.client = client or CamserverClient(settings.address, settings.timeout)
        self.version = self.client.command("version").text
        self.threshold = None
        self.mx: dict[str, Any] = {}  # what mxsettings last set: camserver has no read-back
        self.last_header: dict[str, Any] = {}
        self._series = 0

    @property
    def frame_shape(self) -> tuple[int, int]:
        columns, rows = MODELS[self.settings.model]
        return rows, columns

    @property
    def frame_dtype(self) -> str:
        return "int32"

    def describe(self, settings: AcquisitionSettings) -> dict[str, Any]:
        return {
            "vendor": "DECTRIS", "model": f"PILATUS3 {self.settings.model.split('_', 1)[1].upper()}",
            "serial_number": self.settings.serial_number, "x_pixel_size": PIXEL_SIZE, "y_pixel_size": PIXEL_SIZE,
            "sensor_material": "Si", "sensor_thickness": 1e-3, "bit_depth_readout": 20,  # 20-bit counters
            "count_time": settings.exposure,
            "frame_time": settings.period, "trigger_mode": settings.trigger_mode,
            "camserver_version": self.version,
            **({"threshold_energy": self.threshold} if self.threshold is not None else {}),
        }

    def set_threshold(self, energy: float, gain: str | None = None) -> str:
        """Trim the chips for ``energy`` (eV): camserver takes tens of seconds."""
        if not 2000 <= energy <= 40000:
            raise ConfigurationError(f"threshold {energy} eV is outside what a PILATUS3 accepts: 2000 to 40000 eV")
        reply = self.client.command(f"setthreshold {gain + ' ' if gain else ''}{energy:.0f}", timeout=60)
        self.threshold = energy
        return reply.text

    def mx_settings(self, **values: Any) -> None:
        """camserver's ``mxsettings``: Wavelength, Detector_distance, Beam_xy=(x, y), Start_angle..."""
        words = []
        for key, value in values.items():
            words.append(key)
            words += [str(v) for v in value] if isinstance(value, (tuple, list)) else [str(value)]
        self.client.command("mxsettings " + " ".join(words))
        self.mx.update(values)

    def prepare(self, settings: AcquisitionSettings) -> None:
        directory = Path(self.settings.image_directory)
        if not directory.is_dir():
            raise ConfigurationError(f"image directory {directory} does not exist here; check ImageDirectory")
        self.client.command(f"exptime {settings.exposure:.7f}")
        self.client.command(f"expperiod {settings.period:.7f}")
        self.client.command(f"nimages {settings.frame_count}")
        self.client.command(f"imgpath {directory}")

    def frames(self, settings: AcquisitionSettings, stop: threading.Event) -> Iterator[tuple]:
        """Start the exposure, then yield each image as soon as its CBF file is complete,
        with the numbers of its header (``FRAME_METADATA``)."""
        import fabio  # here: only this vendor needs it

        self._series += 1
        template = f"photonflow_{self._series:05d}_{int(time.time())}.cbf"
        self.client.command(f"{EXPOSE_COMMANDS[settings.trigger_mode]} {template}")
        names = image_names(template, settings.frame_count)
        directory = Path(self.settings.image_directory)
        finished: list = []
        killed = False
        for number, name in enumerate(names):
            path = directory / name
            while not path.exists():
                if stop.is_set() and not killed:
                    self.client.send("k")  # camserver answers "7 ERR kill" as the exposure's end
                    killed = True
                if finished or killed:
                    break
                finished += self._poll_end(0.01)
            if not path.exists():
                break
            image = fabio.open(str(path))
            self.last_header = header = parse_header(image.pilatus_headers)
            metadata = {name: float(header[name]) for name in FRAME_METADATA if name in header}
            frame = np.ascontiguousarray(image.data, dtype=np.int32)
            yield number, frame, header_time(image) or time.time(), metadata
        if not finished:  # camserver ends every exposure with a 7 reply, "7 ERR kill" after k: take it
            reply = self.client.read_reply(settings.period * 2 + self.settings.timeout)
            if reply.code == EXPOSURE_DONE and not reply.ok and not (killed and reply.text == "kill"):
                raise DetectorError(f"camserver ended the exposure with an error: {reply.text}")

    def _poll_end(self, wait: float) -> list:
        """The exposure's end reply if camserver sent it (an ERR mid-series, for example)."""
        try:
            reply = self.client.read_reply(wait)
        except DetectorConnectionLost as error:
            if "did not answer" in str(error):
                return []
            raise
        if not reply.ok:
            raise DetectorError(f"camserver: {reply.code} ERR {reply.text}")
        return [reply]

    def close(self) -> None:
        self.client.close()


def image_names(template: str, count: int) -> list[str]:
    """camserver's file names: the name itself for one image, ``<stem>_NNNNN.cbf`` for several."""
    if count == 1:
        return [template]
    stem = template.rsplit(".", 1)[0]
    return [f"{stem}_{n:05d}.cbf" for n in range(count)]


def header_time(image) -> float | None:
    """The image's date from its miniCBF header (second line), as a UNIX time."""
    contents = image.header.get("_array_data.header_contents", "")
    lines = contents.splitlines()
    if len(lines) > 1:
        try:
            return datetime.fromisoformat(lines[1].lstrip("# ").strip()).timestamp()
        except ValueError:
            return None
    return None
