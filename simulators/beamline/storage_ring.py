"""The storage ring as the beamline sees it: a current decaying with the beam lifetime and
topped up to the nominal current every top-up period, or lost."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from photonflow.errors import ConfigurationError


class StorageRing:
    def __init__(
        self,
        nominal_current: float = 200.0,
        lifetime: float = 36000.0,
        topup_period: float = 120.0,
        energy: float = 3.0,
        mode: str = "USER",
        filling_mode: str = "uniform",
        clock: Callable[[], float] = time.monotonic,
    ):
        for name, value in (("nominal current", nominal_current), ("lifetime", lifetime),
                            ("top-up period", topup_period), ("energy", energy)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"the storage ring's {name} must be positive, got {value}")
        self.nominal_current = float(nominal_current)
        self.lifetime = float(lifetime)  # seconds, 1/e of the current
        self.topup_period = float(topup_period)
        self.energy = float(energy)  # GeV
        self.mode = mode
        self.filling_mode = filling_mode
        self._clock = clock
        self._lock = threading.Lock()
        self._filled_at = clock()  # the top-up cycle counts from here
        self._lost = False

    def _since_topup(self, now: float) -> float:
        return (now - self._filled_at) % self.topup_period

    @property
    def beam_lost(self) -> bool:
        return self._lost

    @property
    def current(self) -> float:
        """mA"""
        with self._lock:
            if self._lost:
                return 0.0
            return self.nominal_current * math.exp(-self._since_topup(self._clock()) / self.lifetime)

    @property
    def refill_countdown(self) -> float:
        """Seconds to the next top-up (0 while there is no beam)."""
        with self._lock:
            if self._lost:
                return 0.0
            return self.topup_period - self._since_topup(self._clock())

    @property
    def state(self) -> str:
        return "FAULT" if self._lost else "ON"

    @property
    def status(self) -> str:
        if self._lost:
            return "Beam lost: no stored current. RestoreBeam refills the ring."
        return (
            f"{self.mode} beam, {self.filling_mode} filling, {self.current:.2f} mA; "
            f"next top-up in {self.refill_countdown:.0f} s."
        )

    def beam_loss(self) -> None:
        with self._lock:
            self._lost = True

    def restore(self) -> None:
        """Refill to the nominal current; the top-up cycle starts again now."""
        with self._lock:
            self._lost = False
            self._filled_at = self._clock()
