"""Recorder files where the data policy puts them: short series acquired from a simulated camera and
written by the real Recorder, each with its own accounting (what a DataManager rebuilds a catalogue
from)."""

from __future__ import annotations

from pathlib import Path

from photonflow.acquisition.acquirer import Acquirer
from photonflow.datamanager.policy import DataPolicy
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor
from photonflow.stream.transport import StreamSender
from tests.helpers.recording import acquire_into


def record_series(data_root: Path, beamline: str, proposal: str, session: str, sample: str,
                  series_ids: list[int], frames: int = 2) -> list[Path]:
    """One Recorder file per series id, in dataset ``<sample>_000<id>_x`` of the experiment."""
    policy = DataPolicy(data_root, beamline)
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(SimulatedCamera(SimulatedSensor(height=8, width=8, seed=1)), sender)
    recorder = Recorder(data_root)
    files = []
    try:
        for series_id in series_ids:
            acquirer.update_settings(frame_count=frames, exposure=0.001, period=0.01)
            acquirer.set_series_id(series_id)
            folder = policy.raw_dataset(proposal, session, sample, f"{series_id:04d}_x")
            files.append(acquire_into(acquirer, recorder, RecordingRequest(
                frames, series_id, acquirer.stream_endpoint, str(folder / f"x{series_id}.h5"))))
    finally:
        sender.close()
    return files
