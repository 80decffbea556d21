"""The Acquirer device family's shared Tango interface.

Every vendor class derives from ``AcquirerDevice`` and only says how to build its camera
(``create_camera``); commands, states and the common attributes the Controller relies on
are defined once here, over ``photonflow.acquisition.acquirer.Acquirer``.
"""

from __future__ import annotations

import dataclasses
import json

from tango import AttrWriteType
from tango.server import attribute, command, device_property

from photonflow.acquisition.acquirer import Acquirer, parse_rotation, parse_settings
from photonflow.acquisition.beamline import Beamline
from photonflow.camera import SelfStreamingDetector
from photonflow.devices.base import PhotonflowDevice, counter
from photonflow.devices.common import operator_errors
from photonflow.errors import ConfigurationError
from photonflow.stream.transport import DEFAULT_SEND_TIMEOUT, StreamDistributor, StreamSender


def simulation_trigger_input() -> device_property:
    """The property of an Acquirer whose camera is simulated in its own process (SimulatedCamera,
    Andor SDK3, Tucsen TUCam): the trigger line cabled to the simulated camera's trigger input."""
    return device_property(
        dtype=str, default_value="",
        doc="Address of the trigger line cabled to the simulated camera's external-trigger input "
            "(ipc://${PHOTONFLOW_VAR}/run/<line>.trigger); empty: no cable, no external trigger",
    )


class AcquirerDevice(PhotonflowDevice):
    """Drives one detector and puts its frames on a STINS stream."""

    StreamBindAddress = device_property(
        dtype=str,
        default_value="tcp://127.0.0.1:*",
        doc="ZeroMQ address the frame stream binds to; a '*' port picks a free one",
    )
    EventInterval = device_property(
        dtype=float, default_value=0.1, doc="Minimum seconds between counter change events"
    )
    StreamOutputs = device_property(
        dtype=int, default_value=1,
        doc="Recorders sharing the frame stream: as many outputs (each on a free port of StreamBindAddress), "
            "each frame to one of them, the series' start and end to all",
    )
    SendTimeout = device_property(
        dtype=float, default_value=DEFAULT_SEND_TIMEOUT,
        doc="Seconds a frame may wait for the Recorder to take it; then the series ends in ALARM",
    )

    followed_beamline: Beamline | None = None  # the beamline port the camera reads, if it follows one
    # the settings a panel shows, pushed when written (a Controller's Configure writes them too)
    extra_events = ("Exposure", "Period", "FrameCount", "TriggerMode")

    def create_camera(self):
        """The vendor's camera: a class declaring its capabilities (photonflow.camera)."""
        raise NotImplementedError

    def follow(self, beamline: Beamline) -> Beamline:
        """Remember the beamline port given to the camera: what its last reading could not use
        ends the series in ALARM, named in the status."""
        self.followed_beamline = beamline
        return beamline

    def capture_problems(self) -> tuple[str, ...]:
        beamline = self.followed_beamline
        return beamline.problems if beamline is not None else ()

    def create_core(self, listener) -> Acquirer:
        camera = self.create_camera()
        # A detector that streams its frames itself (a DECTRIS DCU) needs no sender of ours.
        if self.StreamOutputs < 1:
            raise ConfigurationError(f"property StreamOutputs must be at least 1, got {self.StreamOutputs}")
        if isinstance(camera, SelfStreamingDetector):
            sender = None
        elif self.StreamOutputs > 1:
            sender = StreamDistributor(self.StreamBindAddress, self.StreamOutputs, send_timeout=self.SendTimeout)
        else:
            sender = StreamSender(self.StreamBindAddress, send_timeout=self.SendTimeout)
        return Acquirer(camera, sender, listener, counter_interval=self.EventInterval,
                        capture_problems=self.capture_problems)

    # -- settings -----------------------------------------------------------------------
    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="s", format="%.6f",
               min_value=0, max_value=3600, doc="Counting time of each frame")
    def Exposure(self):
        return self._core().settings.exposure

    @Exposure.write
    @operator_errors
    def Exposure(self, value):
        self._update_settings('Exposure', exposure=value)

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="s", format="%.6f",
               min_value=0, max_value=86400, doc="Time from one frame's start to the next")
    def Period(self):
        return self._core().settings.period

    @Period.write
    @operator_errors
    def Period(self, value):
        self._update_settings('Period', period=value)

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, min_value=1, max_value=2**31 - 1,
               doc="Frames in the next series")
    def FrameCount(self):
        return self._core().settings.frame_count

    @FrameCount.write
    @operator_errors
    def FrameCount(self, value):
        self._update_settings('FrameCount', frame_count=int(value))

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, doc="How frames are triggered (e.g. internal)")
    def TriggerMode(self):
        return self._core().settings.trigger_mode

    @TriggerMode.write
    @operator_errors
    def TriggerMode(self, value):
        self._update_settings('TriggerMode', trigger_mode=value)

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, doc="Series id the next series carries on the stream")
    def SeriesId(self):
        return self._core().series_id

    @SeriesId.write
    @operator_errors
    def SeriesId(self, value):
        self._core().set_series_id(int(value))

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE,
               doc='The axis a continuous scan turns during the series, JSON {"axis", "start", "increment"}; '
                   "empty: no scan. A DECTRIS detector puts it in its header")
    def Rotation(self):
        rotation = self._core().settings.rotation
        return json.dumps(dataclasses.asdict(rotation)) if rotation else ""

    @Rotation.write
    @operator_errors
    def Rotation(self, value):
        self._core().update_settings(rotation=parse_rotation(value))

    def _update_settings(self, name: str, **change) -> None:
        core = self._core()
        core.update_settings(**change)
        self.publish_value(name, getattr(core.settings, next(iter(change))))

    # -- readings -----------------------------------------------------------------------
    FramesAcquired = counter("frames_acquired", int, "Frames acquired in the current or last series")

    @attribute(dtype=(int,), max_dim_x=2, doc="Frame shape: rows, columns")
    def FrameShape(self):
        return list(self._core().camera.frame_shape)

    @attribute(dtype=str, doc="Pixel type of the frames (numpy name, little-endian)")
    def FrameType(self):
        return self._core().camera.frame_dtype

    @attribute(dtype=str, doc="ZeroMQ endpoint the Recorder connects to for the frames")
    def StreamEndpoint(self):
        return self._core().stream_endpoint

    @attribute(dtype=str, doc="Protocol of that stream (stins, dectris-v1, dectris-v2, maxiv)")
    def StreamProtocol(self):
        return self._core().stream_protocol

    # -- commands -----------------------------------------------------------------------
    @command(dtype_in=str,
             doc_in='JSON {"frames", "exposure", "period", "trigger_mode", "rotation"}: refused as Prepare would, '
             "nothing changed")
    @operator_errors
    def CheckSettings(self, text):
        self._core().check_settings(**parse_settings(text))

    @command(doc_in="Validate the settings and arm the detector (-> STANDBY)")
    @operator_errors
    def Prepare(self):
        self._core().prepare()

    @command(doc_in="Start the prepared series (-> RUNNING)")
    @operator_errors
    def Start(self):
        self._core().start()

    @command(doc_in="Trigger one frame of the series (trigger mode client: a Sardana scan's point)")
    @operator_errors
    def SoftwareTrigger(self):
        self._core().software_trigger()

    @command(doc_in="End the series after the current frame")
    @operator_errors
    def Stop(self):
        self._core().stop()

    @command(doc_in="End the series at once")
    @operator_errors
    def Abort(self):
        self._core().abort()
