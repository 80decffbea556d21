"""Devices whose worker stays busy until the test lets it go: a run that takes long to catalogue (a
slow file system, a busy catalogue) or a series long to standardize, without holding the interpreter."""

from __future__ import annotations

import threading
from pathlib import Path

from photonflow.devices.datamanager import PhotonflowDataManager
from photonflow.devices.standardizer import PhotonflowStandardizer

RELEASE = "release"  # the file, under the DataRoot, whose creation ends the busy spell


def hold(core, release: Path):
    """``core``'s worker (its ``_jobs`` queue) busy, and so not idle, until ``release`` exists."""
    def busy() -> None:
        pause = threading.Event()
        while not release.exists():
            pause.wait(0.05)

    core._idle.clear()
    core._jobs.put((busy, ()))
    return core


class HeldDataManager(PhotonflowDataManager):
    def create_core(self, listener):
        return hold(super().create_core(listener), Path(self.DataRoot) / RELEASE)


class HeldStandardizer(PhotonflowStandardizer):
    def create_core(self, listener):
        return hold(super().create_core(listener), Path(self.DataRoot) / RELEASE)
