"""A photonflow Controller, its Acquirer and Recorder as the LImA face sees them (its PipelinePort),
in plain Python: the test moves the series along (frames taken, the series' end) and reads what
the face asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from photonflow import states
from photonflow.control.lima_face import DetectorInfo, LimaFace, PipelineReading
from photonflow.errors import StateError


class FakePipeline:
    def __init__(self, data_root: Path, offered: tuple[str, ...] = ("internal", "client", "external")):
        self.root = data_root
        self.offered = offered
        self.state, self.status = states.ON, "Ready: Configure the acquisition, then Start."
        self.series_id = 0
        self.last_file = ""
        self.acquired = self.written = self.saved = 0
        self.request: dict[str, Any] | None = None
        self.calls: list[Any] = []
        self.armed = False
        self.reachable = True

    # -- the port ---------------------------------------------------------------------------
    def read(self) -> PipelineReading:
        if not self.reachable:
            raise ConnectionError("API_DeviceNotExported: demo/photonflow/controller is not exported")
        return PipelineReading(self.state, self.status, self.series_id, self.last_file, self.acquired,
                               self.written, self.saved)

    def configure(self, request: dict[str, Any]) -> None:
        if self.state == states.RUNNING:
            raise StateError("cannot Configure while a series is running; Stop or Abort it first")
        self.calls.append(("configure", request))
        self.request = request

    def start(self) -> None:
        assert self.request is not None
        self.calls.append("start")
        self.series_id += 1
        self.state, self.status = states.RUNNING, f"Series {self.series_id} acquiring"
        self.last_file = self.request.get("file") or str(self.root / f"series_{self.series_id:05d}.h5")
        Path(self.last_file).parent.mkdir(parents=True, exist_ok=True)
        Path(self.last_file).touch()  # the Recorder creates the file when armed
        self.acquired = self.written = self.saved = 0
        self.armed = True

    def stop(self) -> None:
        self.calls.append("stop")

    def abort(self) -> None:
        self.calls.append("abort")
        self.end()

    def trigger(self) -> None:
        self.calls.append("trigger")

    def acquirer_armed(self) -> bool:
        return self.armed

    def offers(self, trigger_mode: str) -> bool:
        return trigger_mode in self.offered

    def detector(self) -> DetectorInfo:
        return DetectorInfo((4, 3), "uint16", "Simulator", "photonflow simulated detector")

    def data_root(self) -> str:
        return str(self.root)

    # -- what the test makes happen ------------------------------------------------------------
    def take(self, frames: int, saved: int | None = None) -> None:
        """``frames`` acquired and written, ``saved`` of them (all by default) visible in the file."""
        self.acquired = self.written = frames
        self.saved = frames if saved is None else saved

    def end(self, state: str = states.ON, status: str = "Last series: all accounted for") -> None:
        self.state, self.status = state, status
        self.armed = False


def face_on(pipeline: FakePipeline) -> LimaFace:
    """A face whose waits ask once: the fake answers at once, so a wait is a check."""
    face = LimaFace(pipeline, wait=lambda check, timeout: check(), wait_timeout=1.0)
    face.refresh()
    return face
