"""A trigger-line output for tests that knows when the detectors' inputs have joined it.

Why: a ZeroMQ PUB drops what it sends before a SUB has joined, so a test sending pulses must
know the detector's input is listening. This output speaks the same wire as the generator's
``TriggerLineOutput`` (PUB/SUB, one pulse a message) but binds an XPUB socket, which receives
each input's subscription: ``wait_for_inputs(n)`` returns once n inputs listen.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import h5py
import numpy as np
import zmq

from photonflow.acquisition.acquirer import Acquirer
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.trigger_line import Pulse
from photonflow.stream.transport import StreamSender
from tests.helpers.waiting import wait_until


class WatchedTriggerLine:
    def __init__(self, address: str):
        self.address = address
        if address.startswith("ipc://"):
            os.makedirs(os.path.dirname(address[len("ipc://"):]), exist_ok=True)
        self._socket = zmq.Context.instance().socket(zmq.XPUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.XPUB_VERBOSE, 1)  # every input's subscription, not only the first
        self._socket.bind(address)
        self.inputs = 0

    def wait_for_inputs(self, count: int = 1, timeout: float = 10.0) -> None:
        """Until ``count`` inputs have subscribed since this line was made."""
        deadline = time.monotonic() + timeout
        while self.inputs < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._socket.poll(int(remaining * 1000)):
                raise AssertionError(f"{self.inputs} of {count} trigger inputs joined {self.address}")
            if self._socket.recv()[:1] == b"\x01":
                self.inputs += 1

    def send(self, pulse: Pulse) -> None:
        self._socket.send(pulse.encode())

    def send_pulses(self, times, width: float = 0.0, step: float = 0.1) -> list[Pulse]:
        """Pulse i at ``times[i]``, latched at position i * step; the pulses sent."""
        pulses = [Pulse(index, time, width, position=index * step) for index, time in enumerate(times)]
        for pulse in pulses:
            self.send(pulse)
        return pulses

    def close(self) -> None:
        self._socket.close()


def pulse_fewer_than_asked(line: WatchedTriggerLine, acquirer, times, width: float = 0.0) -> list[Pulse]:
    """Send a pulse at each of ``times`` to a running series that asked for more frames: a frame
    comes for each pulse, none without one (the series waits), and Stop ends it with those taken.
    Returns the pulses sent."""
    pulses = line.send_pulses(times, width)
    wait_until(lambda: acquirer.frames_acquired >= len(pulses), 30, what=f"a frame for each of {len(pulses)} pulses")
    assert not acquirer.wait(0.3) and acquirer.frames_acquired == len(pulses), acquirer.status  # no pulse, no frame
    acquirer.stop()
    assert acquirer.wait(30)
    assert f"{len(pulses)} of {acquirer.settings.frame_count} frames acquired" in acquirer.status
    return pulses


def assert_recorded_frames_are_the_pulses(path, pulses, expected_frame, offset: float = 0.0, atol: float = 1e-5):
    """The Recorder's file holds a frame per pulse, pixel for pixel the simulator's, each stamped
    with its pulse's time (+ ``offset``: the exposure, for a detector stamping the exposure's end)."""
    with h5py.File(path, "r") as f:
        assert f["entry/data/data"].shape[0] == len(pulses)
        for n in range(len(pulses)):
            np.testing.assert_array_equal(f["entry/data/data"][n], expected_frame(n))
        np.testing.assert_allclose(f["entry/accounting/timestamp"][: len(pulses)],
                                   [p.time + offset for p in pulses], rtol=0, atol=atol)


def start_recorded_series(acquirer, recorder, trigger_mode: str, exposure: float, period: float, frames: int = 5):
    """Arm the Recorder for ``frames`` frames of ``acquirer``'s stream, prepare and start the
    series; the file's path."""
    acquirer.update_settings(frame_count=frames, exposure=exposure, period=period, trigger_mode=trigger_mode)
    path = recorder.arm(RecordingRequest(frames, 1, acquirer.stream_endpoint, "pulses.h5", acquirer.stream_protocol))
    acquirer.prepare()
    acquirer.start()
    return path


@contextmanager
def acquirer_and_recorder(folder, camera, streams: bool = True):
    """An Acquirer over ``camera`` (sending on a stream of its own unless the detector streams
    itself) and a Recorder writing under ``folder``; the stream and the camera let go after."""
    sender = StreamSender("tcp://127.0.0.1:*") if streams else None
    try:
        yield Acquirer(camera, sender), Recorder(folder)
    finally:
        if sender is not None:
            sender.close()
        camera.close()


def pulsed_series(controller, acquirer, line: WatchedTriggerLine, spacing: float, width: float = 0.0,
                  lead: float = 0.5, timeout: float = 120, **settings) -> tuple[str, list[Pulse]]:
    """A series through the real servers on the trigger line: Configure and Start it through the
    Controller (Tango proxies), and once the Acquirer runs send one pulse per frame, the first
    dated ``lead`` seconds ahead (a generator armed before the motor reaches the start), then
    ``spacing`` apart. Returns the Controller's final state and the pulses sent."""
    import json

    from tests.helpers.devices import wait_for_state

    wait_for_state(controller, "ON", "ALARM")
    controller.Configure(json.dumps(settings))
    controller.Start()
    wait_for_state(acquirer, "RUNNING")
    first = time.time() + lead
    pulses = line.send_pulses([first + n * spacing for n in range(settings["frames"])], width)
    wait_until(lambda: str(controller.state()) != "RUNNING", timeout, what="the series' end")
    return str(controller.state()), pulses


@contextmanager
def deployment_on_a_trigger_line(text: str, var_dir, environment: dict[str, str], variable: str):
    """A deployment (``running_deployment``) whose simulated camera is cabled, through the
    environment variable ``variable``, to a trigger line the test drives: yields (suite, line)."""
    from tests.helpers.devices import running_deployment

    line = WatchedTriggerLine(f"ipc://{var_dir}/run/omega.trigger")
    try:
        with running_deployment(text, var_dir, {**environment, variable: line.address}) as suite:
            yield suite, line
    finally:
        line.close()
