"""DECTRIS EIGER2 and PILATUS4 through the SIMPLON API (1.8.0): the Acquirer's driver.

Why: a DECTRIS detector control unit (DCU) is driven over HTTP and streams its own frames
(stream v2, CBOR, or the legacy v1) on ZeroMQ. So this camera does not hand frames to the
Acquirer: it configures the DCU, arms, triggers and disarms it, and tells where the DCU's
stream is and in which protocol, for the Recorder to read it directly, compressed as sent.

The HTTP layer, ``SimplonClient``, is the vendor's interface (``photonflow.drivers.simplon``).
Nothing here imports Tango.

``BeamlineFollowingDectris`` is the same camera told, at each Prepare, the wavelength,
detector distance and beam centre the beamline has then (read through the beamline port,
``photonflow.acquisition.beamline``), so the DCU's own metadata say where the rings are.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from photonflow.acquisition.beamline import Beamline
from photonflow.camera import (
    Abortable,
    AcquisitionSettings,
    Checkable,
    Closable,
    Rotation,
    SelfStreamingDetector,
)
from photonflow.drivers.simplon import SimplonClient
from photonflow.errors import (
    ConfigurationError,
    DetectorError,
    PhotonflowError,
)

log = logging.getLogger(__name__)

# photonflow's trigger modes and SIMPLON's: internal series, internal enable (exposure per
# trigger), external series (one edge for them all, or one per image), external enable.
TRIGGER_MODES = {"internal": "ints", "internal_enable": "inte", "external_start": "exts", "external": "exts",
                 "external_enable": "exte"}
ONE_IMAGE_PER_TRIGGER = ("internal_enable", "external", "external_enable")
STREAM_PROTOCOLS = {"cbor": "dectris-v2", "legacy": "dectris-v1"}


ARM_TIMEOUT = 30.0  # seconds: arming prepares the whole series in the DCU


@dataclass(frozen=True)
class DectrisSettings:
    """What the beamline sets once (Tango properties), beside the per-series settings."""

    url: str
    stream_endpoint: str = ""  # empty: tcp://<DCU host>:31001 (v2) or :9999 (v1), the DCU's ports
    stream_format: str = "cbor"  # "cbor" (stream v2) or "legacy" (stream v1)
    header_detail: str = "basic"
    timeout: float = 5.0
    # the DCU's own file writer and monitor: "enabled", "disabled", or "" to leave them as they are
    filewriter_mode: str = ""
    monitor_mode: str = ""


class DectrisCamera(SelfStreamingDetector, Checkable, Abortable, Closable):
    """An EIGER2/PILATUS4 behind its DCU; the DCU streams the frames itself."""

    trigger_modes = tuple(TRIGGER_MODES)

    def __init__(self, settings: DectrisSettings, client: SimplonClient | None = None):
        if settings.stream_format not in STREAM_PROTOCOLS:
            raise ConfigurationError(
                f"stream format must be one of {', '.join(STREAM_PROTOCOLS)}, got {settings.stream_format!r}"
            )
        self.settings = settings
        self.client = client or SimplonClient(settings.url, settings.timeout)
        self.stream_protocol = STREAM_PROTOCOLS[settings.stream_format]
        default_port = 31001 if settings.stream_format == "cbor" else 9999
        self.stream_endpoint = settings.stream_endpoint or f"tcp://{self.client.host}:{default_port}"
        self._geometry: tuple[int, int] | None = None
        self._rotation_axis = ""  # the axis whose start/increment the DCU holds from the last scan
        self.min_exposure = 3e-6
        try:
            self.connect()
        except BaseException:
            self.client.close()
            raise

    def connect(self) -> None:
        """Initialise the DCU if it needs it and read what does not change: geometry, limits."""
        if self.client.status("detector", "state") in ("na", "error"):
            self.client.command("initialize", timeout=max(self.settings.timeout, 120.0))
        self._geometry = (self.client.get("detector", "y_pixels_in_detector"),
                          self.client.get("detector", "x_pixels_in_detector"))
        self.min_exposure = float(self.client.describe("detector", "count_time").get("min", self.min_exposure))
        self.client.set("stream", "mode", "enabled")
        self.client.set("stream", "format", self.settings.stream_format)
        if self.settings.stream_format == "legacy":
            self.client.set("stream", "header_detail", self.settings.header_detail)
        for subsystem, mode in (("filewriter", self.settings.filewriter_mode), ("monitor", self.settings.monitor_mode)):
            if mode:
                self.client.set(subsystem, "mode", mode)

    @property
    def frame_shape(self) -> tuple[int, int]:
        if self._geometry is None:  # connect() reads it, from __init__ on
            raise DetectorError("the DCU's frame size is not read yet: the detector is not connected")
        return self._geometry

    @property
    def frame_dtype(self) -> str:
        return f"uint{self.client.get('detector', 'bit_depth_image')}"

    def describe(self, settings: AcquisitionSettings) -> dict[str, Any]:
        """The detector as NXdetector names it, read back from the DCU."""
        get = self.client.get
        return {
            "vendor": "DECTRIS",
            "model": get("detector", "description"),
            "serial_number": get("detector", "detector_number"),
            "x_pixel_size": get("detector", "x_pixel_size"),
            "y_pixel_size": get("detector", "y_pixel_size"),
            "sensor_material": get("detector", "sensor_material"),
            "sensor_thickness": get("detector", "sensor_thickness"),
            "bit_depth_readout": get("detector", "bit_depth_readout"),
            "bit_depth_image": get("detector", "bit_depth_image"),  # the images' (v2's stream does not say it)
            "threshold_energy": get("detector", "threshold_energy"),
            "count_time": get("detector", "count_time"),
            "frame_time": get("detector", "frame_time"),
            "trigger_mode": settings.trigger_mode,
        }

    def check(self, settings: AcquisitionSettings) -> None:
        """The DCU's own limits of count_time and frame_time (SIMPLON min/max, which depend on the
        model), read without arming: the Controller asks at Configure."""
        for name, value in (("count_time", settings.exposure), ("frame_time", settings.period)):
            limits = self.client.describe("detector", name)
            low, high = limits.get("min"), limits.get("max")
            if low is not None and high is not None and not low <= value <= high:
                raise ConfigurationError(f"{name} {value} s is outside what the detector accepts: {low} to {high} s")

    def prepare(self, settings: AcquisitionSettings) -> None:
        """Write the series' settings, then arm: the DCU announces the series on its stream."""
        state = self.client.status("detector", "state")
        if state in ("ready", "acquire"):
            self.client.command("disarm")
        self.configure_series(settings)
        # arming prepares the whole series in the DCU: seconds on a large detector, well beyond the
        # usual request timeout
        self.client.command("arm", timeout=ARM_TIMEOUT)

    def configure_series(self, settings: AcquisitionSettings) -> None:
        """The detector config of one series, written while the DCU is disarmed (before ``arm``)."""
        set_value = self.client.set
        set_value("detector", "trigger_mode", TRIGGER_MODES[settings.trigger_mode])
        set_value("detector", "count_time", settings.exposure)
        set_value("detector", "frame_time", settings.period)
        # a series mode takes every image on one trigger; an enable mode one image per trigger (gate)
        per_trigger = settings.trigger_mode in ONE_IMAGE_PER_TRIGGER
        set_value("detector", "nimages", 1 if per_trigger else settings.frame_count)
        set_value("detector", "ntrigger", settings.frame_count if per_trigger else 1)
        self.write_rotation(settings.rotation)

    def write_rotation(self, rotation: Rotation | None) -> None:
        """``<axis>_start``/``<axis>_increment`` (SIMPLON's goniometer config: omega, phi, chi, kappa,
        two_theta), which the DCU puts in its stream header, as a real detector tells its scan. A
        series without a rotation sets the last scanned axis' increment to 0: a header must not
        tell a scan that no longer runs. A DCU without the axis' keys leaves its header as it is."""
        if rotation is None:
            if self._rotation_axis:
                self.client.set("detector", f"{self._rotation_axis}_increment", 0.0)
                self._rotation_axis = ""
            return
        for name, number in (("start", rotation.start), ("increment", rotation.increment)):
            try:
                self.client.set("detector", f"{rotation.axis}_{name}", number)
            except DetectorError as error:
                if "HTTP 404" not in str(error):
                    raise
                log.warning("the DCU has no %s_%s: its header will not tell the scan", rotation.axis, name)
                return
        self._rotation_axis = rotation.axis

    def run_series(self, settings: AcquisitionSettings, stop: threading.Event,
                   progress: Callable[[int], None]) -> int:
        """Trigger (internal modes) and follow the series until it ends; returns images taken.

        ``stop`` cancels it (the DCU ends the series after the current image); the count
        comes from the DCU's ``stream/status/images_sent`` where it has one.
        """
        trigger: threading.Thread | None = None
        failure: list[BaseException] = []
        if settings.trigger_mode.startswith("internal"):
            # ints: one trigger for the series; inte: one per image, its value the exposure, a period apart
            enable = settings.trigger_mode == "internal_enable"
            triggers, exposure = (settings.frame_count, settings.exposure) if enable else (1, None)
            trigger_seconds = settings.period * settings.frame_count / triggers

            def fire() -> None:
                # Its own connection: a trigger answers only when its images are taken,
                # and the status must be read meanwhile.
                with SimplonClient(self.client.url, self.settings.timeout, self.client.api_version) as client:
                    started = time.monotonic()
                    try:
                        for number in range(triggers):
                            if stop.wait(max(0.0, started + number * trigger_seconds - time.monotonic())):
                                return
                            client.command("trigger", exposure, timeout=trigger_seconds + self.settings.timeout + 10)
                    except PhotonflowError as error:
                        failure.append(error)

            trigger = threading.Thread(target=fire, name="dectris-trigger", daemon=True)
            trigger.start()
        def images_taken() -> int:
            try:
                return self.client.status("stream", "images_sent")
            except DetectorError as error:
                if "HTTP 404" not in str(error):
                    raise
            # A DCU without that status: count the series as taken once its trigger returned.
            done = trigger is not None and not trigger.is_alive() and not failure
            return settings.frame_count if done else 0

        try:
            while True:
                taken = images_taken()
                progress(taken)
                if failure:
                    raise failure[0]
                if taken >= settings.frame_count:
                    break
                if stop.wait(0.1):
                    break
        finally:
            self.client.command("disarm")  # ends the series (a cancelled one after its current image)
            if trigger is not None:
                trigger.join(self.settings.timeout)
        taken = images_taken()
        progress(taken)
        return taken

    def abort(self) -> None:
        self.client.command("abort")

    def close(self) -> None:
        self.client.close()


class BeamlineFollowingDectris(DectrisCamera):
    """At each Prepare, writes to the DCU's detector config the wavelength (``wavelength`` in Å,
    or ``photon_energy`` in eV where the DCU has no ``wavelength``), ``detector_distance`` (m) and
    ``beam_center_x``/``_y`` (pixels) the beamline has now, so that the DCU's metadata of the
    series (and the file the Recorder writes from them) hold them.

    A value is written only when it differs from the DCU's: on a real EIGER2 a new energy moves
    the threshold to half of it (and may retrim), which must not happen at every series. A
    beamline device that cannot be read leaves the DCU's value as it was, and the log says so;
    a value the DCU refuses (outside its limits) fails the Prepare with the DCU's own words.
    """

    def __init__(self, settings: DectrisSettings, beamline: Beamline, client: SimplonClient | None = None):
        self.beamline = beamline
        self._energy_parameter: str | None = None  # "wavelength" or "photon_energy", found at the first Prepare
        super().__init__(settings, client)

    def _energy_name(self) -> str:
        """``wavelength`` if this DCU's SIMPLON has it, else ``photon_energy``."""
        if self._energy_parameter is None:
            try:
                self.client.describe("detector", "wavelength")
                self._energy_parameter = "wavelength"
            except DetectorError as error:
                if "HTTP 404" not in str(error):
                    raise
                self._energy_parameter = "photon_energy"
        return self._energy_parameter

    def geometry(self) -> dict[str, float]:
        """What the beamline says now, as the DCU's detector config names it."""
        beam, values = self.beamline.conditions(), {}
        wavelength, energy = beam.wavelength_angstrom, beam.photon_energy
        if wavelength is not None and energy is not None:  # either both known or neither
            if self._energy_name() == "wavelength":
                values["wavelength"] = wavelength
            else:
                values["photon_energy"] = energy
        if beam.distance is not None:
            values["detector_distance"] = beam.distance
        centre = self.beamline.beam_centre
        if centre is not None:
            values["beam_center_x"], values["beam_center_y"] = float(centre[1]), float(centre[0])
        return values

    def configure_series(self, settings: AcquisitionSettings) -> None:
        for name, value in self.geometry().items():
            if not math.isclose(float(self.client.get("detector", name)), value, rel_tol=1e-6, abs_tol=1e-6):
                self.client.set("detector", name, value)
        super().configure_series(settings)
