"""PILATUS3 through camserver, its TCP text protocol: the Acquirer's driver.

Why: a PILATUS3 writes each image as a CBF file on a disk its control computer shares;
camserver only takes commands. So this camera configures camserver, starts the exposure,
and reads every image file as soon as camserver has written it (fabio parses the CBF and
its miniCBF header), to hand the frames to the Acquirer, which puts them on the STINS stream.

camserver's protocol (``CamserverClient``) and the CBF header (``parse_header``) are the
vendor's interfaces, in ``photonflow.drivers.camserver`` and ``photonflow.drivers.minicbf``.
Nothing here imports Tango.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from photonflow.acquisition.beamline import Beamline
from photonflow.camera import AcquisitionSettings, ArmsAtStart, Closable, FlagsItsData, FrameSource, Rotation
from photonflow.drivers.camserver import (
    EXPOSURE_DONE,
    MODELS,
    PIXEL_SIZE,
    CamserverClient,
    flagged_pixels,
    image_names,
)
from photonflow.drivers.minicbf import GONIOMETER_AND_BEAM, header_time, parse_header, pixel_mask
from photonflow.errors import ConfigurationError, DetectorConnectionLost, DetectorError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PilatusSettings:
    """What the beamline sets once (Tango properties)."""

    address: str  # camserver's host:port (41234 on a real one)
    model: str = "pilatus3_1m"
    image_directory: str = "/tmp"  # where camserver writes, as this computer sees it
    timeout: float = 5.0
    serial_number: str = ""
    # (row, column) of the pixels the detector's bad-pixel map excludes (camserver writes -2 there)
    bad_pixels: tuple[tuple[int, int], ...] = ()


# The numbers of each CBF header that go with its frame on the stream (STINS ``metadata``).
FRAME_METADATA = (
    "count_time", "frame_time", "dead_time", "saturation_value", "threshold_energy", "incident_wavelength",
    "distance", "beam_center_x", "beam_center_y", "start_angle", "angle_increment", "underload_value",
    "omega_start", "omega_increment", *GONIOMETER_AND_BEAM.values(),
)


# photonflow's trigger modes and the camserver command that starts each
EXPOSE_COMMANDS = {"internal": "exposure", "external_start": "exttrigger", "external": "extmtrigger",
                   "external_enable": "extenable"}


class PilatusCamera(FrameSource, ArmsAtStart, Closable, FlagsItsData):
    """A PILATUS3 behind camserver; images come as CBF files on a shared disk."""

    trigger_modes = tuple(EXPOSE_COMMANDS)
    min_exposure = 1e-7
    frame_metadata = FRAME_METADATA

    def __init__(self, settings: PilatusSettings, client: CamserverClient | None = None):
        if settings.model not in MODELS:
            raise ConfigurationError(f"model must be one of {', '.join(MODELS)}, got {settings.model!r}")
        self.settings = settings
        self.pixel_mask = self._pixel_mask()
        self.client = client or CamserverClient(settings.address, settings.timeout)
        self.version = self.client.command("version").text
        self.threshold: float | None = None  # eV, once set
        self.mx: dict[str, Any] = {}  # what mxsettings last set: camserver has no read-back
        self.last_header: dict[str, Any] = {}
        self._series = 0
        self._armed: str | None = None  # the template of an exposure armed by ``arm``, not yet followed
        self._rotation_told = False  # camserver's Angle_increment is a scan's
        self._mask_caveat: str | None = None  # the last series' images flagged pixels the mask does not

    @property
    def frame_shape(self) -> tuple[int, int]:
        columns, rows = MODELS[self.settings.model]
        return rows, columns

    @property
    def frame_dtype(self) -> str:
        return "int32"

    def _pixel_mask(self) -> np.ndarray:
        """The NeXus pixel_mask of every image: the model's module gaps (-1 in the images) and the
        configured bad-pixel map (-2), as camserver marks them."""
        try:
            return pixel_mask(flagged_pixels(self.frame_shape, self.settings.bad_pixels))
        except ConfigurationError as error:
            raise ConfigurationError(f"{error}: check BadPixels (row,column) for the {self.settings.model}") from None

    def _check_pixel_mask(self, frame: np.ndarray, path: Path) -> None:
        """Say when the image's -1/-2 pixels are not the mask the file was given (the detector's
        bad-pixel map changed, or BadPixels is not its map)."""
        seen = pixel_mask(frame)
        differ = np.argwhere(seen != self.pixel_mask)
        if differ.size:
            self._mask_caveat = (
                f"{path.name} flags {len(differ)} pixels (-1 gap, -2 bad) otherwise than the pixel mask written "
                f"with the series (module gaps and BadPixels), first at (row, column) "
                f"{[tuple(p) for p in differ[:5].tolist()]}: set BadPixels to the detector's bad-pixel map")
            log.warning("%s", self._mask_caveat)

    def data_caveat(self) -> str | None:
        return self._mask_caveat

    def describe(self, settings: AcquisitionSettings) -> dict[str, Any]:
        return {
            "vendor": "DECTRIS", "model": f"PILATUS3 {self.settings.model.split('_', 1)[1].upper()}",
            "serial_number": self.settings.serial_number, "x_pixel_size": PIXEL_SIZE, "y_pixel_size": PIXEL_SIZE,
            "sensor_material": "Si", "sensor_thickness": 1e-3, "bit_depth_readout": 20,  # 20-bit counters
            "count_time": settings.exposure,
            "frame_time": settings.period, "trigger_mode": settings.trigger_mode,
            "camserver_version": self.version,
            "pixel_mask": self.pixel_mask.tolist(),  # plain numbers: the stream's start message is JSON
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
        self._write_rotation(settings.rotation)

    def _write_rotation(self, rotation: Rotation | None) -> None:
        """The scan's Start_angle and Angle_increment (``mxsettings``: every CBF header), as a
        beamline tells camserver its oscillation. A series without a rotation after one sets
        Angle_increment to 0: a header must not tell a scan that no longer runs."""
        if rotation is None:
            if self._rotation_told:
                self.mx_settings(Angle_increment="0.0000")
                self._rotation_told = False
            return
        self.mx_settings(Start_angle=f"{rotation.start:.4f}", Angle_increment=f"{rotation.increment:.4f}")
        self._rotation_told = True

    def arm(self, settings: AcquisitionSettings) -> None:
        """camserver waits for the external edges once it has answered the exposure command."""
        self._armed = self._expose(settings)

    def _expose(self, settings: AcquisitionSettings) -> str:
        """Start camserver's exposure (of the trigger mode's kind); returns its images' template."""
        self._series += 1
        template = f"photonflow_{self._series:05d}_{int(time.time())}.cbf"
        self.client.command(f"{EXPOSE_COMMANDS[settings.trigger_mode]} {template}")
        return template

    def frames(self, settings: AcquisitionSettings, stop: threading.Event) -> Iterator[tuple]:
        """Start the exposure, then yield each image as soon as its CBF file is complete,
        with the numbers of its header (``FRAME_METADATA``)."""
        import fabio  # here: only this vendor needs it

        template, self._armed = self._armed, None
        self._mask_caveat = None
        if template is None:
            template = self._expose(settings)
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
            if number == 0:
                self._check_pixel_mask(frame, path)
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


class BeamlineFollowingPilatus(PilatusCamera):
    """At each Prepare, tells camserver (``mxsettings``, hence every CBF header) the wavelength
    and detector distance the beamline has now, and the beam centre; a beamline device that
    cannot be read leaves camserver's value as it was (and the log says so)."""

    def __init__(self, settings: PilatusSettings, beamline: Beamline, client: CamserverClient | None = None):
        super().__init__(settings, client)
        self.beamline = beamline

    def prepare(self, settings: AcquisitionSettings) -> None:
        beam = self.beamline.conditions()
        values: dict[str, str | tuple[str, str]] = {}  # mxsettings' names
        if beam.wavelength_angstrom is not None:
            values["Wavelength"] = f"{beam.wavelength_angstrom:.5f}"
        if beam.distance is not None:
            values["Detector_distance"] = f"{beam.distance:.5f}"
        centre = self.beamline.beam_centre
        if centre is not None:
            values["Beam_xy"] = (f"{centre[1]:.2f}", f"{centre[0]:.2f}")
        if values:
            self.mx_settings(**values)
        super().prepare(settings)
