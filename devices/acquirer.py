"""The Acquirer device family's shared Tango interface.

Every vendor class derives from ``AcquirerDevice`` and only says how to build its camera
(``create_camera``); commands, states and the common attributes the Controller relies on
are defined once here, over ``photonflow.acquisition.acquirer.Acquirer``.
"""

from __future__ import annotations

import tango
from tango import AttrWriteType
from tango.server import Device, attribute, command, device_property

from photonflow import states
from photonflow.acquisition.acquirer import Acquirer, AcquirerListener, parse_settings
from photonflow.devices.common import EventPushingMixin, operator_errors
from photonflow.stream.transport import DEFAULT_SEND_TIMEOUT, StreamSender


class _DeviceListener(AcquirerListener):
    def __init__(self, device: AcquirerDevice):
        self.device = device

    def state_changed(self, state: str, status: str) -> None:
        self.device.publish_state(state, status)

    def counters_changed(self, frames_acquired: int) -> None:
        self.device.publish_value("FramesAcquired", frames_acquired)


class AcquirerDevice(EventPushingMixin, Device):
    """Drives one detector and puts its frames on a STINS stream."""

    event_attributes = ("FramesAcquired",)

    StreamBindAddress = device_property(
        dtype=str,
        default_value="tcp://127.0.0.1:*",
        doc="ZeroMQ address the frame stream binds to; a '*' port picks a free one",
    )
    EventInterval = device_property(
        dtype=float, default_value=0.1, doc="Minimum seconds between counter change events"
    )
    SendTimeout = device_property(
        dtype=float, default_value=DEFAULT_SEND_TIMEOUT,
        doc="Seconds a frame may wait for the Recorder to take it; then the series ends in ALARM",
    )

    def create_camera(self):
        """The vendor's camera object (see photonflow.acquisition.acquirer.Camera)."""
        raise NotImplementedError

    def init_device(self):
        super().init_device()
        self.enable_events()
        self.acquirer = None
        try:
            camera = self.create_camera()
            # A detector that streams its frames itself (a DECTRIS DCU) needs no sender of ours.
            sender = None if getattr(camera, "streams_itself", False) else StreamSender(
                self.StreamBindAddress, send_timeout=self.SendTimeout
            )
        except Exception as error:
            self.publish_state(states.FAULT, f"Cannot initialise: {error}. Fix the properties, then Init.")
            return
        self.acquirer = Acquirer(camera, sender, _DeviceListener(self), counter_interval=self.EventInterval)
        self.publish_state(self.acquirer.state, self.acquirer.status)

    def delete_device(self):
        if self.acquirer is not None:
            self.acquirer.abort()
            self.acquirer.wait(5)
            if self.acquirer.sender is not None:
                self.acquirer.sender.close()
            close_camera = getattr(self.acquirer.camera, "close", None)  # a connection to the detector
            if close_camera is not None:
                close_camera()
            self.acquirer = None

    def _core(self) -> Acquirer:
        if self.acquirer is None:
            tango.Except.throw_exception("NotInitialised", self.get_status(), "AcquirerDevice")
        return self.acquirer

    # -- settings -----------------------------------------------------------------------
    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="s", format="%.6f",
               min_value=0, max_value=3600, doc="Counting time of each frame")
    def Exposure(self):
        return self._core().settings.exposure

    @Exposure.write
    @operator_errors
    def Exposure(self, value):
        self._core().update_settings(exposure=value)

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="s", format="%.6f",
               min_value=0, max_value=86400, doc="Time from one frame's start to the next")
    def Period(self):
        return self._core().settings.period

    @Period.write
    @operator_errors
    def Period(self, value):
        self._core().update_settings(period=value)

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, min_value=1, max_value=2**31 - 1,
               doc="Frames in the next series")
    def FrameCount(self):
        return self._core().settings.frame_count

    @FrameCount.write
    @operator_errors
    def FrameCount(self, value):
        self._core().update_settings(frame_count=int(value))

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, doc="How frames are triggered (e.g. internal)")
    def TriggerMode(self):
        return self._core().settings.trigger_mode

    @TriggerMode.write
    @operator_errors
    def TriggerMode(self, value):
        self._core().update_settings(trigger_mode=value)

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, doc="Series id the next series carries on the stream")
    def SeriesId(self):
        return self._core().series_id

    @SeriesId.write
    @operator_errors
    def SeriesId(self, value):
        self._core().set_series_id(int(value))

    # -- readings -----------------------------------------------------------------------
    @attribute(dtype=int, doc="Frames acquired in the current or last series")
    def FramesAcquired(self):
        return self._core().frames_acquired

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
             doc_in='JSON {"frames", "exposure", "period", "trigger_mode"}: refused as Prepare would, '
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
