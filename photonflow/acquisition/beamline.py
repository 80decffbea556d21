"""Following the beamline: what a detector reads of it at each Prepare, for every camera alike.

Why: a detector's metadata (and a simulated detector's frames) must say the wavelength,
distance and beam the beamline had when the series was taken. Every camera that follows the
beamline reads it through this one port: the Tango layer gives a ``read(device, attribute)``
callable (``TangoReader``), this module decides which devices are read and what their readings
mean, and the camera turns the conditions into its own settings (the DCU's config, camserver's
``mxsettings``, a simulation's photons).

A device that cannot be read, gives no usable number, or does not answer within ``timeout_s``
(a beamline server that hangs) never stops a detector from arming: every device is read at once,
each in its own thread, and Prepare waits for them at most ``timeout_s`` in all. The log says what
was missing, ``problems`` keeps it for the series' status, and that quantity is None in the
conditions, so the camera keeps its own value (the DCU's, camserver's) or its default (a
simulation's). Nothing here imports Tango.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

from photonflow.camera import BeamConditions
from photonflow.errors import ConfigurationError

log = logging.getLogger(__name__)

Reader = Callable[[str, str], Any]  # read(device, attribute) -> value; a state by its name (OPEN)
DEFAULT_READ_TIMEOUT = 1.5  # s: a Prepare waits this long at most for the whole beamline


@dataclass(frozen=True)
class BeamlineNames:
    """Tango names of the beamline devices a detector follows; an empty name is not followed."""

    ring: str = ""  # Current and NominalCurrent, mA
    monochromator: str = ""  # Wavelength, Å
    shutter: str = ""  # State: OPEN lets the beam through
    attenuator: str = ""  # Transmission, 0 to 1
    distance_motor: str = ""  # Position, mm: the sample-detector distance
    sample_motor: str = ""  # Position, mm: the sample translation across the beam (a simulated camera's object)
    rotation_motor: str = ""  # Position, deg: the sample rotation


class Beamline:
    """The beamline a detector follows: its devices, read through ``read`` at each Prepare, and
    the beam centre on the detector (a setting of the beamline's, not read from a device).

    ``unread`` ends the warning for a value that cannot be used, saying what the detector does
    instead ("the DCU keeps its value", "using the simulation's default"). ``timeout_s`` bounds
    one reading of the whole beamline; a read still hanging from an earlier reading is not
    started again (no thread piles up behind a stopped server) and counts as not answered.
    """

    def __init__(self, names: BeamlineNames, read: Reader, beam_centre: tuple[float, float] | None = None,
                 unread: str = "the detector keeps its value", timeout_s: float = DEFAULT_READ_TIMEOUT):
        if not timeout_s > 0:
            raise ConfigurationError(f"the beamline read timeout is a positive number of seconds, got {timeout_s!r}")
        self.names = names
        self.beam_centre = beam_centre  # (row, column) pixels
        self.timeout_s = timeout_s
        self.problems: tuple[str, ...] = ()  # what the last reading could not use, and why
        self._read = read
        self._unread = unread
        self._pending: dict[tuple[str, str], Future] = {}  # reads that have not answered yet
        self._pending_lock = threading.Lock()
        self._readings: dict[tuple[str, str], Future] = {}  # this reading's, by (device, attribute)
        self._reading = threading.Lock()  # one reading at a time: its futures and notes are its own

    @property
    def followed(self) -> bool:
        """Whether there is anything to tell the detector at Prepare."""
        names = self.names
        return self.beam_centre is not None or any(
            (names.ring, names.monochromator, names.shutter, names.attenuator, names.distance_motor,
             names.sample_motor, names.rotation_motor))

    def _wanted(self) -> list[tuple[str, str]]:
        """Every (device, attribute) a reading needs."""
        names = self.names
        wanted = [(names.monochromator, "Wavelength"), (names.distance_motor, "Position"),
                  (names.ring, "Current"), (names.ring, "NominalCurrent"), (names.attenuator, "Transmission"),
                  (names.shutter, "State"), (names.sample_motor, "Position"), (names.rotation_motor, "Position")]
        return [(device, attribute) for device, attribute in wanted if device]

    def _start_read(self, key: tuple[str, str]) -> Future:
        """The read of ``key`` in a daemon thread (a hung one must not hold the process at exit);
        the one still running from an earlier reading if there is one."""
        with self._pending_lock:
            future = self._pending.get(key)
            if future is not None:
                return future
            future = self._pending[key] = Future()

        def read() -> None:
            try:
                future.set_result(self._read(*key))
            except Exception as error:  # noqa: BLE001 - handed to the reading, which notes it
                future.set_exception(error)
            finally:
                with self._pending_lock:
                    self._pending.pop(key, None)

        threading.Thread(target=read, name=f"read-{key[0]}/{key[1]}", daemon=True).start()
        return future

    def _read_all(self) -> None:
        keys = dict.fromkeys(self._wanted())
        self._readings = {key: self._start_read(key) for key in keys}
        wait(self._readings.values(), timeout=self.timeout_s)

    def _value(self, device: str, attribute: str, notes: list[str]) -> Any:
        future = self._readings.get((device, attribute))
        if future is None:  # not read ahead: read now (a caller outside ``conditions``)
            future = self._start_read((device, attribute))
            wait([future], timeout=self.timeout_s)
        if not future.done():
            return self._skip(f"{device}/{attribute} did not answer within {self.timeout_s:g} s", notes)
        error = future.exception()
        if error is not None:  # a beamline device that is down must not stop the detector from arming
            return self._skip(f"cannot read {device}/{attribute} ({error})", notes)
        return future.result()

    def _skip(self, why: str, notes: list[str]) -> None:
        note = f"{why}; {self._unread}"
        log.warning(note)
        notes.append(note)
        return None

    def _number(self, device: str, attribute: str, notes: list[str], positive: bool = True) -> float | None:
        value = self._value(device, attribute, notes)
        if value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or (positive and number <= 0):
            kind = "a positive number" if positive else "a number"
            self._skip(f"{device}/{attribute} is {value}, not {kind}", notes)
            return None
        return number

    def conditions(self) -> BeamConditions:
        """The beamline now: each device named is read once, all at the same time, within
        ``timeout_s``; what cannot be used is None, and said in ``problems``."""
        with self._reading:
            return self._conditions()

    def _conditions(self) -> BeamConditions:
        names = self.names
        notes: list[str] = []  # what could not be read, for the status
        self._read_all()
        wavelength = self._number(names.monochromator, "Wavelength", notes) if names.monochromator else None
        distance = self._number(names.distance_motor, "Position", notes) if names.distance_motor else None
        ring_fraction = None
        if names.ring:
            current = self._number(names.ring, "Current", notes, positive=False)
            nominal = self._number(names.ring, "NominalCurrent", notes) if current is not None else None
            if current is not None and nominal is not None:
                ring_fraction = max(current, 0.0) / nominal
        transmission = None
        if names.attenuator:
            transmission = self._number(names.attenuator, "Transmission", notes, positive=False)
            if transmission is not None:
                transmission = min(max(transmission, 0.0), 1.0)
        shutter_open = None
        if names.shutter:
            state = self._value(names.shutter, "State", notes)
            if state is not None:
                shutter_open = str(state) == "OPEN"
        sample = rotation = None
        if names.sample_motor:
            sample = self._number(names.sample_motor, "Position", notes, positive=False)
        if names.rotation_motor:
            rotation = self._number(names.rotation_motor, "Position", notes, positive=False)
        self.problems = tuple(notes)
        return BeamConditions(wavelength, distance, ring_fraction, transmission, shutter_open, tuple(notes),
                              sample, rotation)


def parse_beam_centre(text: str) -> tuple[float, float] | None:
    """``"row,col"`` in pixels; empty: None (the detector's own, or near the middle)."""
    if not text.strip():
        return None
    try:
        row, column = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigurationError(f"BeamCentre is 'row,column' in pixels, e.g. '500.5,515.0', got {text!r}") from None
    return row, column
