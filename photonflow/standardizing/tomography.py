"""A tomography as beamlines take one: darks with the shutter closed, flats with the sample moved
out of the beam, then projections while the sample turns; one NXtomo joins the three series.

The sequence drives the Controller and the beamline through two ports (plain-Python protocols),
so the logic is tested without Tango and the device only supplies the Tango side.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from photonflow.errors import ConfigurationError
from photonflow.requests import Request, value
from photonflow.standardizing.mapping import BeamlineMapping

NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


@dataclass(frozen=True)
class TomographyPlan(Request):
    """AcquireTomography: what to acquire; every value is checked before anything moves. Absent
    keys take their defaults."""

    command = "AcquireTomography"
    example = {"projections": 90, "darks": 10, "flats": 10, "exposure": 0.005, "period": 0.01, "end_angle": 180}

    projections: int = value(90, minimum=1, maximum=100_000, doc="frames while the sample turns")
    darks: int = value(10, minimum=0, maximum=100_000, doc="frames with the shutter closed")
    flats: int = value(10, minimum=0, maximum=100_000, doc="frames with the sample out of the beam")
    exposure: float = value(0.005, positive=True, unit="seconds", doc="how long each frame counts")
    period: float = value(0.01, unit="seconds", doc="from one frame's start to the next; at least the exposure")
    start_angle: float = value(0.0, unit="degrees", doc="the rotation at the first projection")
    end_angle: float = value(180.0, unit="degrees", doc="the rotation reached at the last projection's end")
    sample_out: float = value(5.0, doc="where the sample translation goes for the flats (its unit, e.g. mm)")
    sample_name: str = value("sample", doc="the sample's name in the NXtomo")
    name: str = value("tomo", pattern=NAME, mismatch="is not a name of 1-64 letters, digits, - or _",
                      doc="the scan's folder and file names")

    @classmethod
    def from_json(cls, text: str) -> TomographyPlan:
        return cls.parse(text or "{}")

    def check(self) -> None:
        """What the fields' own limits cannot say: the period holds the exposure, the sample turns."""
        if self.exposure <= 0 or self.period < self.exposure:
            raise ConfigurationError(f"exposure must be > 0 and period >= exposure, got exposure {self.exposure} s, "
                                     f"period {self.period} s")
        if self.end_angle == self.start_angle:
            raise ConfigurationError("end_angle must differ from start_angle: the sample must turn")

    @property
    def velocity(self) -> float:
        """Degrees per second that spread the rotation over the projections."""
        return abs(self.end_angle - self.start_angle) / (self.projections * self.period)


class Acquisition(Protocol):
    """The Controller: one series, returning its id and the Recorder's file; raises if it failed.
    ``on_first_frame`` is called once the first frame is taken (to start a rotation)."""

    def acquire(self, frames: int, exposure: float, period: float, file: str,
                on_first_frame: Callable[[], None] | None = None) -> tuple[int, str]: ...


class Beamline(Protocol):
    def set_shutter(self, open_: bool) -> None: ...

    def move(self, axis: str, position: float, velocity: float | None = None, wait: bool = True) -> None: ...

    def position(self, axis: str) -> float: ...

    def wait_still(self, axis: str) -> None: ...

    def restore(self) -> None:
        """Put back what the sequence changed (speeds)."""


@dataclass(frozen=True)
class Step:
    kind: str  # dark, flat, projection
    frames: int


def steps(plan: TomographyPlan) -> list[Step]:
    every = [Step("dark", plan.darks), Step("flat", plan.flats), Step("projection", plan.projections)]
    return [step for step in every if step.frames]


def tomography_axes(mapping: BeamlineMapping) -> tuple[str, str]:
    """The rotation the projections turn (the goniometer's scan rotation) and the translation that
    takes the sample out for the flats (the goniometer's first translation); refused if absent."""
    goniometer = mapping.axes_of("goniometer")
    rotations = [axis for axis in goniometer if axis.transformation_type == "rotation" and axis.capture.device]
    translations = [axis for axis in goniometer if axis.transformation_type == "translation" and axis.capture.device]
    if not rotations or not translations:
        raise ConfigurationError(f"{mapping.path}: a tomography needs a goniometer rotation and a translation read "
                                 "from Tango attributes (to turn the sample and move it out for the flats)")
    rotation = next((axis for axis in rotations if axis.scan), rotations[0])
    return rotation.name, translations[0].name
