"""What a position-compare output (an IcePAP's or a PandABox's) is armed with: a train of pulses,
one each time the encoder crosses start + i × step. In the core so that the simulated device,
a real one's device and the published schema (docs/commands/) share one declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from photonflow.requests import Request, value

MAX_PULSES = 1_000_000  # what the CapturedPositions/CapturedTimes spectra hold


@dataclass(frozen=True)
class PositionCompareRequest(Request):
    """Arm: a pulse each time the motor's encoder crosses start, start + step, ... in the step's
    direction, count pulses of width seconds; the encoder position and the time of each pulse are
    captured."""

    command = "Arm"
    example = {"start": 0.0, "step": 0.1, "count": 100, "width": 0.001}

    start: float = value(doc="the position of the first pulse, in the motor's unit")
    step: float = value(doc="the distance between pulses, in the motor's unit; its sign is the scan's direction")
    count: int = value(minimum=1, maximum=MAX_PULSES, span=True, doc="how many pulses to send")
    width: float = value(positive=True, unit="seconds", doc="how long each pulse stays high")

    def check(self) -> None:
        if self.step == 0:
            self._refuse("'step' must not be 0: give the distance between pulses, signed in the scan's direction")

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        schema = super().json_schema()
        schema["properties"]["step"]["not"] = {"const": 0}  # what check() refuses, for a client validating
        return schema
