"""DECTRIS stream series for the Standardizer's tests: a start, frames and an end, in stream v1 or
v2, recorded by a real Recorder from a real ZeroMQ stream, as a DCU would send them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from photonflow import states
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.stream import dectris
from photonflow.stream.transport import StreamSender

SERIES = 5
# What a DCU's header says of an EIGER2 (photonflow's names, see photonflow.stream.dectris); no
# frame_time: frames sent at once arrive faster than any frame time a DCU would state
DETECTOR = {"description": "Dectris EIGER2 Si 4M", "serial_number": "E-32-0123", "count_time": 0.01,
            "x_pixel_size": 75e-6, "y_pixel_size": 75e-6, "sensor_material": "Si",
            "sensor_thickness": 450e-6, "beam_center_x": 6.5, "beam_center_y": 5.0, "incident_energy": 12400.0,
            "incident_wavelength": 1.0e-10, "saturation_value": 65534}


def record_dectris(root: Path, name: str, protocol: str, start: list, frames: list[np.ndarray]) -> Path:
    """The Recorder's file ``root/name`` of one series: ``start`` (encoded parts), then ``frames``
    (raw, in their own dtype) and the end, in ``protocol`` (dectris-v1 or dectris-v2)."""
    encode_image, encode_end = ((dectris.encode_image_v2, dectris.encode_end_v2) if protocol == "dectris-v2"
                                else (dectris.encode_image_v1, dectris.encode_end_v1))
    sender = StreamSender("tcp://127.0.0.1:*")
    try:
        recorder = Recorder(root)
        path = recorder.arm(RecordingRequest(len(frames), SERIES, sender.endpoint, name, protocol=protocol))
        sender.send(start)
        for number, frame in enumerate(frames):
            sender.send(encode_image(SERIES, number, frame, encoding="raw"))
        sender.send(encode_end(SERIES))
        assert recorder.wait(10)
        assert recorder.state == states.ON, recorder.status
        return path
    finally:
        sender.close()
