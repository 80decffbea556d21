"""A DataManager device whose worker stays busy until the test lets it go: a run that takes long to
catalogue (a slow file system, a busy catalogue), without holding the interpreter."""

from __future__ import annotations

import threading
from pathlib import Path

from photonflow.devices.datamanager import PhotonflowDataManager

RELEASE = "release"  # the file, under the DataRoot, whose creation ends the busy spell


class HeldDataManager(PhotonflowDataManager):
    def create_core(self, listener):
        core = super().create_core(listener)
        release = Path(self.DataRoot) / RELEASE

        def busy() -> None:
            pause = threading.Event()
            while not release.exists():
                pause.wait(0.05)

        core._idle.clear()
        core._jobs.put((busy, ()))
        return core
