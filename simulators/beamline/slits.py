"""A pair of slit blade pairs, driven as gap and offset per direction (mm)."""

from __future__ import annotations

import time
from collections.abc import Callable

from photonflow.simulators.beamline.motor import Motor

AXES = ("horizontal_gap", "horizontal_offset", "vertical_gap", "vertical_offset")


class Slits:
    def __init__(
        self,
        horizontal_gap: float = 1.0,
        vertical_gap: float = 1.0,
        horizontal_offset: float = 0.0,
        vertical_offset: float = 0.0,
        max_gap: float = 10.0,
        max_offset: float = 5.0,
        velocity: float = 0.5,
        acceleration: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        def axis(name, position, low, high):
            return Motor(name, position, velocity, acceleration, low, high, "mm", clock)

        self.axes = {
            "horizontal_gap": axis("horizontal gap", horizontal_gap, 0.0, max_gap),
            "horizontal_offset": axis("horizontal offset", horizontal_offset, -max_offset, max_offset),
            "vertical_gap": axis("vertical gap", vertical_gap, 0.0, max_gap),
            "vertical_offset": axis("vertical offset", vertical_offset, -max_offset, max_offset),
        }

    def __getitem__(self, axis: str) -> Motor:
        return self.axes[axis]

    def move(self, axis: str, target: float) -> float:
        return self.axes[axis].move_to(target)

    @property
    def moving(self) -> bool:
        return any(motor.moving for motor in self.axes.values())

    @property
    def state(self) -> str:
        return "MOVING" if self.moving else "ON"

    @property
    def status(self) -> str:
        h, v = self.axes["horizontal_gap"].position, self.axes["vertical_gap"].position
        return f"{'Moving; ' if self.moving else ''}gap {h:.3f} x {v:.3f} mm (h x v)."

    def stop(self) -> None:
        for motor in self.axes.values():
            motor.stop()
