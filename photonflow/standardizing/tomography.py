"""A tomography as beamlines take one: darks with the shutter closed, flats with the sample moved
out of the beam, then projections while the sample turns; one NXtomo joins the three series.

The sequence drives the Controller and the beamline through two ports (plain-Python protocols),
so the logic is tested without Tango and the device only supplies the Tango side.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol

from photonflow.errors import ConfigurationError
from photonflow.standardizing.mapping import BeamlineMapping

NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


@dataclass(frozen=True)
class TomographyPlan:
    """What to acquire; every value is checked before anything moves."""

    projections: int = 90
    darks: int = 10
    flats: int = 10
    exposure: float = 0.005
    period: float = 0.01
    start_angle: float = 0.0  # deg
    end_angle: float = 180.0  # deg, reached at the last projection's end
    sample_out: float = 5.0  # where the sample translation goes for the flats (its unit, e.g. mm)
    sample_name: str = "sample"
    name: str = "tomo"  # the scan's folder and file names

    @classmethod
    def from_json(cls, text: str) -> TomographyPlan:
        try:
            given = json.loads(text or "{}")
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"the tomography plan is not valid JSON: {error}") from None
        if not isinstance(given, dict):
            raise ConfigurationError("the tomography plan must be a JSON object, e.g. {\"projections\": 90}")
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigurationError(f"unknown key(s) in the tomography plan: {', '.join(unknown)}; "
                                     f"known: {', '.join(known)}")
        values = {}
        for name, value in given.items():
            default = getattr(cls, name)
            if isinstance(default, str):
                if not isinstance(value, str):
                    raise ConfigurationError(f"{name} must be text, got {value!r}")
            elif isinstance(default, int):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ConfigurationError(f"{name} must be a whole number, got {value!r}")
            elif not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigurationError(f"{name} must be a finite number, got {value!r}")
            values[name] = value
        plan = cls(**values)
        plan.check()
        return plan

    def check(self) -> None:
        if self.projections < 1:
            raise ConfigurationError(f"projections must be at least 1, got {self.projections}")
        for name in ("darks", "flats"):
            if not 0 <= getattr(self, name) <= 100_000:
                raise ConfigurationError(f"{name} must be between 0 and 100000, got {getattr(self, name)}")
        if self.projections > 100_000:
            raise ConfigurationError(f"projections must be at most 100000, got {self.projections}")
        if self.exposure <= 0 or self.period < self.exposure:
            raise ConfigurationError(f"exposure must be > 0 and period >= exposure, got exposure {self.exposure} s, "
                                     f"period {self.period} s")
        if self.end_angle == self.start_angle:
            raise ConfigurationError("end_angle must differ from start_angle: the sample must turn")
        if not NAME.match(self.name):
            raise ConfigurationError(f"name must be 1-64 letters, digits, - or _, got {self.name!r}")

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
