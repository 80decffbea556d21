"""Running one series from an Acquirer into a Recorder, as the Controller would, for vendor tests."""

from __future__ import annotations

from pathlib import Path

from photonflow.acquisition.acquirer import Acquirer
from photonflow.recording.recorder import Recorder, RecordingRequest


def acquire_into(acquirer: Acquirer, recorder: Recorder, request: RecordingRequest,
                 stop_after: int | None = None) -> Path:
    """Arm the Recorder, prepare and start the Acquirer (Stop after ``stop_after`` frames), wait for both."""
    path = recorder.arm(request)
    acquirer.prepare()
    acquirer.start()
    if stop_after is not None:
        while acquirer.frames_acquired < stop_after:
            acquirer.wait(0.01)
        acquirer.stop()
    assert acquirer.wait(30) and recorder.wait(30)
    return path
