"""What a camera is to photonflow: the settings of a series, the trigger modes, and the
capabilities a camera class declares by its bases (``FrameSource`` or ``SelfStreamingDetector``,
and ``Checkable``, ``Abortable``, ``Closable``, ``KeepsTime``, ``TakesClientTriggers``).

A port of its own, below the Acquirer: vendor cameras in ``acquisition/`` and the simulated ones
in ``simulators/`` both implement it, so a simulator never loads the acquisition logic it is
tested against.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

PLANCK_EV_ANGSTROM = 12398.419843320026  # h c in eV Å: photon energy = this / wavelength


# photonflow's trigger modes, the same words for every vendor (each camera offers some of them)
TRIGGER_MODES = {
    "internal": "the detector's own timing: a frame every period",
    "internal_enable": "the Acquirer triggers each frame a period apart, the exposure given with the trigger",
    "software": "the Acquirer sends a software trigger for each frame, a period apart",
    "external_start": "one external edge starts the series, then the detector's own timing",
    "external": "one frame per external edge, of the set exposure",
    "external_enable": "one frame per external gate, exposed for as long as the gate is open",
    "client": "one frame per SoftwareTrigger command of a client (a Sardana scan point), of the set exposure",
}


@dataclass(frozen=True)
class Rotation:
    """The axis a continuous scan turns during the series: where frame 0 starts and the move per
    frame. A detector that records it (a DECTRIS DCU's ``omega_start``/``omega_increment``) puts it
    in its own header; the others ignore it."""

    axis: str
    start: float
    increment: float


@dataclass(frozen=True)
class AcquisitionSettings:
    """What one series asks of the detector."""

    frame_count: int = 1
    exposure: float = 0.001  # seconds of counting per frame
    period: float = 0.002  # seconds from one frame's start to the next
    trigger_mode: str = "internal"
    rotation: Rotation | None = None  # the scan the series belongs to, if any


class SoftwareTrigger:
    """Sends a camera's software trigger once per period, never a burst to catch up after a
    late frame; says how long a wait for the frame may last before the next one is due."""

    def __init__(self, period: float, send: Callable[[], Any] | None, clock: Callable[[], float] = time.monotonic):
        self.period, self.send, self.clock = period, send, clock
        self.due = clock()

    def wait_time(self, longest: float) -> float:
        """Trigger if due (no-op without ``send``); then at most ``longest`` seconds of waiting."""
        if self.send is None:
            return longest
        now = self.clock()
        if now >= self.due:
            self.send()
            self.due = max(self.due + self.period, now)
        return max(0.001, min(longest, self.due - self.clock()))


class ClientTriggers:
    """The triggers a client sends one per frame (trigger mode ``client``), counted so that none
    is lost when one comes before the camera waits for it. A camera that ``TakesClientTriggers``
    is given the Acquirer's instance and calls ``wait`` before each frame."""

    def __init__(self):
        self._condition = threading.Condition()
        self._pending = 0

    def reset(self) -> None:
        with self._condition:
            self._pending = 0

    def fire(self) -> None:
        with self._condition:
            self._pending += 1
            self._condition.notify_all()

    def interrupt(self) -> None:
        """Wake a waiting camera (a Stop or Abort: it then sees its stop event)."""
        with self._condition:
            self._condition.notify_all()

    def wait(self, stop: threading.Event) -> bool:
        """Until a trigger came (True, it is used up) or ``stop`` is set (False)."""
        with self._condition:
            while self._pending == 0:
                if stop.is_set():
                    return False
                self._condition.wait(0.1)
            self._pending -= 1
            return True


class Camera(ABC):
    """What every camera is to the common Acquirer; a vendor class adds ``FrameSource`` or
    ``SelfStreamingDetector``, and the capabilities below that it has."""

    trigger_modes: tuple[str, ...]
    min_exposure: float

    @property
    def frame_shape(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def frame_dtype(self) -> str:
        raise NotImplementedError

    @abstractmethod
    def describe(self, settings: AcquisitionSettings) -> dict[str, Any]:
        """The STINS ``detector`` description, with NXdetector field names."""

    @abstractmethod
    def prepare(self, settings: AcquisitionSettings) -> None:
        """Configure (arm) the hardware for a series."""


class FrameSource(Camera):
    """A camera that hands each frame to the Acquirer, which sends it on a STINS stream."""

    frame_metadata: tuple[str, ...] = ()  # names of the values each frame carries of its own (a CBF header)

    @abstractmethod
    def frames(self, settings: AcquisitionSettings, stop: threading.Event) -> Iterator[tuple]:
        """Yield (frame_number, frame, UNIX timestamp) until done or ``stop`` is set.

        A camera with ``frame_metadata`` adds a fourth item, a dict of numbers by those names:
        the STINS ``metadata`` of that frame.
        """


class SelfStreamingDetector(Camera):
    """A detector whose control unit streams the frames itself (a DECTRIS DCU): the Acquirer
    triggers the series and follows its count; the Recorder reads ``stream_endpoint``."""

    stream_endpoint: str
    stream_protocol: str  # a protocol the Recorder decodes (dectris-v1, dectris-v2, ...)

    @abstractmethod
    def run_series(self, settings: AcquisitionSettings, stop: threading.Event,
                   progress: Callable[[int], None]) -> int | None:
        """Run the armed series to its end or ``stop``, telling ``progress`` the frames taken;
        a detector that counts them may also return how many it took."""


class Checkable(ABC):
    """A camera that can refuse settings before arming (its own limits, asked of the hardware)."""

    @abstractmethod
    def check(self, settings: AcquisitionSettings) -> None: ...


class Abortable(ABC):
    """A camera that can drop a series at once (a DCU armed, a driver waiting for a frame)."""

    @abstractmethod
    def abort(self) -> None: ...


class Closable(ABC):
    """A camera holding a connection or a library handle to let go when the device goes."""

    @abstractmethod
    def close(self) -> None: ...


class KeepsTime(ABC):
    """A camera that can tell whether its last series kept the requested frame rate (a simulator
    on a machine that may be too slow for it): the Acquirer ends a series that did not in ALARM."""

    @abstractmethod
    def timing_shortfall(self) -> str | None:
        """What the last series did not keep ("the simulated detector achieved 240 Hz of the 500 Hz
        requested"), or None."""


class FlagsItsData(ABC):
    """A camera that can see, in its own images, that the last series' data does not match what
    was written with it (a PILATUS image's -1/-2 pixels beside the pixel mask sent at the start):
    the Acquirer ends such a series in ALARM, saying why."""

    @abstractmethod
    def data_caveat(self) -> str | None:
        """What the last series' files say wrongly, and what to fix, or None."""


class ArmsAtStart(ABC):
    """A camera whose acquisition must run before the first external pulse comes (camserver's
    exposure command, SDK3's AcquisitionStart): in an external trigger mode the Acquirer arms it
    within ``Start``, before it reports RUNNING, so a scan moves its motor only once the detector
    listens; ``frames`` then follows the armed acquisition instead of starting one."""

    @abstractmethod
    def arm(self, settings: AcquisitionSettings) -> None: ...


class TakesClientTriggers:
    """A camera offering trigger mode ``client``: the Acquirer gives it its ``ClientTriggers``."""

    client_triggers: ClientTriggers | None = None

    def take_client_triggers(self, triggers: ClientTriggers) -> None:
        self.client_triggers = triggers


@dataclass(frozen=True)
class BeamConditions:
    """The beamline at one reading, in its devices' units; None: not followed, or not readable."""

    wavelength_angstrom: float | None = None
    distance_mm: float | None = None
    ring_fraction: float | None = None  # ring current / nominal current
    transmission: float | None = None
    shutter_open: bool | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)  # what could not be read, and why
    sample_position_mm: float | None = None  # the sample translation across the beam (a simulation's object)
    rotation_deg: float | None = None  # the sample rotation's angle

    @property
    def wavelength(self) -> float | None:
        """m"""
        return None if self.wavelength_angstrom is None else self.wavelength_angstrom * 1e-10

    @property
    def distance(self) -> float | None:
        """m"""
        return None if self.distance_mm is None else self.distance_mm / 1000.0

    @property
    def photon_energy(self) -> float | None:
        """eV"""
        return None if self.wavelength_angstrom is None else PLANCK_EV_ANGSTROM / self.wavelength_angstrom

    @property
    def intensity_scale(self) -> float:
        """The fraction of the nominal beam that reaches the sample; what is not known counts as full."""
        ring = 1.0 if self.ring_fraction is None else self.ring_fraction
        transmission = 1.0 if self.transmission is None else self.transmission
        return ring * transmission * (0.0 if self.shutter_open is False else 1.0)
