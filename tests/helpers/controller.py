"""Plain-Python peers of the Controller core (an Acquirer and a Recorder keeping the calls they
get) and the steps of a series driven through them."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

from photonflow import states
from photonflow.acquisition.acquirer import validate_settings
from photonflow.camera import AcquisitionSettings
from photonflow.control.controller import ACQUIRER, RECORDER, AcquisitionRequest, Controller
from photonflow.errors import FilePathError
from tests.helpers.fakes import EventLog
from tests.helpers.waiting import ManualClock


class FakeAcquirer:
    """The Acquirer as the Controller sees it (an AcquirerPort: tests/unit/ports.py)."""

    def __init__(self):
        self.current_state = states.ON
        self.calls = []
        self.acquired = 0
        self.fail_prepare = None
        self.started = threading.Event()

    def state(self) -> str:
        return self.current_state

    def status(self) -> str:
        return f"the fake {type(self).__name__} is {self.current_state}"

    def check_settings(self, request: AcquisitionRequest) -> None:
        """The real check, against a camera of the simulator's limits."""
        settings = AcquisitionSettings(request.frames, request.exposure, request.period, request.trigger_mode)
        validate_settings(settings, SimpleNamespace(min_exposure=1e-6, trigger_modes=("internal", "software")))

    def configure(self, request: AcquisitionRequest, series_id: int) -> None:
        self.calls.append(("configure", request.frames, series_id))

    def prepare(self) -> None:
        if self.fail_prepare:
            raise RuntimeError(self.fail_prepare)
        self.calls.append("prepare")
        self.current_state = states.STANDBY

    def start(self) -> None:
        self.calls.append("start")
        self.current_state = states.RUNNING
        self.started.set()

    def stop(self) -> None:
        self.calls.append("stop")

    def abort(self) -> None:
        self.calls.append("abort")
        self.current_state = states.ON

    def stream_endpoint(self) -> str:
        return "tcp://127.0.0.1:5000"

    def stream_protocol(self) -> str:
        return "stins"

    def frames_acquired(self) -> int:
        return self.acquired


class FakeRecorder:
    """The Recorder as the Controller sees it (a RecorderPort: tests/unit/ports.py)."""

    def __init__(self):
        self.current_state = states.ON
        self.calls = []
        self.numbers = {"frames_received": 0, "frames_written": 0, "missing_frames": 0}
        self.blissdata_scan = True
        self.file = ""

    def state(self) -> str:
        return self.current_state

    def status(self) -> str:
        return f"the fake {type(self).__name__} is {self.current_state}"

    def last_file(self) -> str:
        return self.file

    def check_file(self, file: str) -> str:
        if file.startswith("/"):
            raise FilePathError(f"{file} is outside the data root")
        return "/data/" + file

    def arm(self, frames: int, series_id: int, endpoint: str, file: str | None, protocol: str,
            blissdata_scan: bool = True) -> str:
        self.calls.append(("arm", frames, series_id, endpoint, file, protocol))
        self.blissdata_scan = blissdata_scan
        self.current_state = states.RUNNING
        return "/data/" + (file or "auto.h5")

    def stop(self) -> None:
        self.calls.append("stop")
        self.current_state = states.ON

    def abort(self) -> None:
        self.calls.append("abort")
        self.current_state = states.ON

    def counters(self) -> dict[str, int]:
        return dict(self.numbers)


def controller_rig():
    """A Controller over fake peers, both ON, on a clock the test moves; work runs at once."""
    acquirer, recorder, events, clock = FakeAcquirer(), FakeRecorder(), EventLog(), ManualClock()
    controller = Controller(
        acquirer, recorder, events, finish_timeout=5, clock=clock, run_in_background=lambda work: work()
    )
    controller.peer_state_changed(ACQUIRER, states.ON, "idle")
    controller.peer_state_changed(RECORDER, states.ON, "idle")
    return controller, acquirer, recorder, events, clock


def start_series(controller, acquirer, frames=10):
    controller.configure(json.dumps({"frames": frames, "exposure": 0.001, "period": 0.002, "file": "a.h5"}))
    controller.start()
    assert acquirer.started.wait(5)


def finish_series(controller, acquirer, recorder, acquired, received, written, missing=0):
    acquirer.acquired = acquired
    acquirer.current_state = states.ON
    controller.peer_state_changed(ACQUIRER, states.ON)
    recorder.numbers = {"frames_received": received, "frames_written": written, "missing_frames": missing}
    recorder.current_state = states.ON
    controller.peer_state_changed(RECORDER, states.ON)
