"""The Recorder device: a thin Tango face on ``photonflow.recording.recorder.Recorder``."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
from tango import AttrWriteType
from tango.server import attribute, command, device_property

from photonflow.devices.base import PhotonflowDevice, counter
from photonflow.devices.common import TangoReader, operator_errors
from photonflow.publishing import blissdata_scan
from photonflow.publishing.blissdata_sink import BlissdataSink
from photonflow.recording.config import (
    DEFAULT_END_TIMEOUT,
    DEFAULT_MAX_FRAMES,
    DEFAULT_QUEUE_MEGABYTES,
    RecorderConfig,
)
from photonflow.recording.paths import DEFAULT_FILE_TEMPLATE
from photonflow.recording.recorder import Recorder
from photonflow.recording.request import parse_recording_request
from photonflow.recording.sinks import FAN_OUT_MODES, LivePreview, StreamFanOut


def _json_attribute(reader: TangoReader, device: str, attribute: str) -> dict:
    return json.loads(reader(device, attribute) or "{}")


class PhotonflowRecorder(PhotonflowDevice):
    """Writes a STINS frame stream into HDF5/NeXus files under a data root."""

    extra_events = ("CurrentFile", "LastFile", "Preview", "PreviewFrameNumber")

    DataRoot = device_property(dtype=str, mandatory=True, doc="Mandatory. Directory every data file must be under")
    DefaultFilePathTemplate = device_property(
        dtype=str, default_value=DEFAULT_FILE_TEMPLATE,
        doc="FilePathTemplate at start-up: the file name used when Arm gives none; "
        "fields {series_id} and {start} (a datetime)",
    )
    EventInterval = device_property(dtype=float, default_value=0.1, doc="Minimum seconds between counter events")
    QueueFrames = device_property(
        dtype=int, default_value=256,
        doc="Messages the queue between receiving and writing holds; when full, the sender waits",
    )
    QueueMegabytes = device_property(
        dtype=int, default_value=DEFAULT_QUEUE_MEGABYTES,
        doc="Megabytes (10**6 bytes) of frames that queue holds at most, whatever the frame size; "
        "the Recorder's memory for frames waiting for the disk",
    )

    PreviewMaxRate = device_property(dtype=float, default_value=5.0, doc="Live previews per second, at most")
    PreviewMaxPixels = device_property(
        dtype=int, default_value=512 * 512, doc="Pixels in the live preview; frames are binned (summed) to fit"
    )
    FanOutAddress = device_property(
        dtype=str, default_value="",
        doc="ZeroMQ address of a second STINS output of the frames (e.g. tcp://0.0.0.0:*); empty: none",
    )
    FanOutMode = device_property(
        dtype=str, default_value="pub", doc="push: deal frames to processing workers; pub: serve viewers"
    )
    DefaultFramesPerFile = device_property(
        dtype=int, default_value=0, doc="FramesPerFile at start-up (0: the whole series in one file)"
    )
    Compression = device_property(
        dtype=str, default_value="none",
        doc="Compress frames that arrive raw: none or bslz4 (bitshuffle+LZ4, read through hdf5plugin)",
    )
    CompressionWorkers = device_property(dtype=int, default_value=0, doc="Compression threads (0: one per core)")
    FanOutEvery = device_property(dtype=int, default_value=1, doc="Forward every n-th frame")
    MaxFramesPerSeries = device_property(
        dtype=int, default_value=DEFAULT_MAX_FRAMES,
        doc="Largest series Arm accepts; the Recorder keeps 17 bytes per armed frame, so this bounds its memory",
    )
    Blissdata = device_property(
        dtype=str, default_value="${PHOTONFLOW_EVENT_BUS}",
        doc="Redis URL (with ReJSON and RediSearch) on which every series is published as a blissdata 2 "
        "scan, frames by reference to the file; default: blissdata's database (0) on the server of the event "
        "bus PHOTONFLOW_EVENT_BUS when it is a redis:// URL; empty: none",
    )
    DataManager = device_property(
        dtype=str, default_value="",
        doc="The DataManager whose DataPolicy (proposal, session, sample, dataset, role) each blissdata scan "
        "carries; empty: the scans carry no data policy",
    )
    SeriesEndTimeout = device_property(
        dtype=float, default_value=DEFAULT_END_TIMEOUT,
        doc="Seconds to wait for series_end once every armed frame arrived; then the file is closed "
        "with end_reason completed_without_end",
    )

    def create_core(self, listener) -> Recorder:
        self.fan_out = None
        self.preview = LivePreview(self.PreviewMaxRate, self.PreviewMaxPixels, on_preview=self._publish_preview)
        sinks = [self.preview]
        if self.FanOutAddress:
            if self.FanOutMode not in FAN_OUT_MODES:
                raise ValueError(f"FanOutMode must be one of {', '.join(FAN_OUT_MODES)}, got {self.FanOutMode!r}")
            self.fan_out = StreamFanOut(self.FanOutMode, self.FanOutEvery, self.FanOutAddress)
            sinks.append(self.fan_out)
        self.blissdata = None
        url = blissdata_scan.url_from_property(self.Blissdata)
        if url:
            # the DataManager's data policy, read by the publisher at each series start (its thread)
            context = partial(_json_attribute, TangoReader(timeout_s=1.0), self.DataManager, "DataPolicy")
            self.blissdata = BlissdataSink(url, beamline=self.get_name().split("/")[0], session=self.get_name(),
                                           context=context if self.DataManager else None,
                                           live_results_of=self.get_name())
            sinks.append(self.blissdata)
        config = RecorderConfig(
            self.DataRoot, self.DefaultFilePathTemplate, frames_per_file=self.DefaultFramesPerFile,
            compression=self.Compression, compression_workers=self.CompressionWorkers,
            queue_frames=self.QueueFrames, queue_megabytes=self.QueueMegabytes,
            max_frames=self.MaxFramesPerSeries, end_timeout=self.SeriesEndTimeout,
            counter_interval=self.EventInterval, journal_name=self.get_name().replace("/", "_"),
        )
        recorder = Recorder(config, listener, sinks=sinks)
        if self.blissdata is not None:
            self.blissdata.attach(recorder)
        return recorder

    def release_core(self, recorder: Recorder) -> None:
        recorder.abort()
        recorder.wait(5)
        if self.fan_out is not None:
            self.fan_out.close()
        if self.blissdata is not None:
            self.blissdata.close()

    def state_published(self) -> None:
        if self.core is None:  # a state the Recorder announces while it is being built
            return
        self.publish_value("CurrentFile", self.core.current_file)
        self.publish_value("LastFile", self.core.last_file)

    def _publish_preview(self, image: np.ndarray, frame_number: int) -> None:
        self.publish_value("Preview", image)
        self.publish_value("PreviewFrameNumber", frame_number)

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, doc="File name pattern when none is given")
    def FilePathTemplate(self):
        return self._core().file_template

    @FilePathTemplate.write
    @operator_errors
    def FilePathTemplate(self, value):
        self._core().set_file_template(value)

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, min_value=0,
               doc="Frames per data file; the master file's virtual dataset spans them (0: one file)")
    def FramesPerFile(self):
        return self._core().frames_per_file

    @FramesPerFile.write
    @operator_errors
    def FramesPerFile(self, value):
        self._core().set_frames_per_file(int(value))

    @attribute(dtype=str, doc="Directory all data files are written under")
    def DataRootPath(self):
        return str(self._core().data_root.resolve())

    @attribute(dtype=str, doc="File being written, empty when idle")
    def CurrentFile(self):
        return self._core().current_file

    @attribute(dtype=str, doc="Last file closed")
    def LastFile(self):
        return self._core().last_file

    @attribute(dtype=str, doc="Stream endpoint of the current or last series")
    def StreamEndpoint(self):
        return self._core().stream_endpoint

    FramesReceived = counter("frames_received", int, "Data messages received in this series")
    FramesWritten = counter("frames_written", int, "Frames written to the file in this series")
    FramesFlushed = counter("frames_flushed", int,
                            "Frames a reader of the file sees: written before its last flush (~0.2 s behind)")
    MissingFrames = counter("missing_frames", int,
                            "Frames the sender sent that never reached the file (known at series end)")
    DuplicateFrames = counter("duplicate_frames", int, "Frames received twice and dropped")
    MessagesRejected = counter("messages_rejected", int, "Malformed stream messages rejected")
    FramesLost = counter("frames_lost", int, "Frames received but never written (dropped on Abort or a disk fault)")
    QueueDepth = counter("queue_depth", int, "Messages received and not yet written (queued, or being written)")

    @attribute(dtype=int, doc="Messages the queue can hold before the sender must wait")
    def QueueCapacity(self):
        return self._core().queue_frames

    QueueDepthMegabytes = counter("queue_megabytes", float, "Megabytes of frames received and not yet written",
                                  unit="MB", format="%.1f")

    @attribute(dtype=int, unit="MB", doc="Megabytes the queue can hold before the sender must wait")
    def QueueCapacityMegabytes(self):
        return self._core().queue_megabytes

    @attribute(dtype=((np.float32,),), max_dim_x=4096, max_dim_y=4096,
               doc="Latest frame, binned (summed) to PreviewMaxPixels, at most PreviewMaxRate times a second")
    def Preview(self):
        latest = self.preview.latest
        return latest if latest is not None else np.zeros((0, 0), np.float32)

    @attribute(dtype=int, doc="Frame number shown in Preview (-1: none yet)")
    def PreviewFrameNumber(self):
        return self.preview.latest_frame_number

    @attribute(dtype=str, doc="Endpoint of the secondary STINS output, empty when none")
    def FanOutEndpoint(self):
        return self.fan_out.endpoint if self.fan_out else ""

    @attribute(dtype=int, doc="Frames sent on the secondary output")
    def FanOutFramesForwarded(self):
        return self.fan_out.frames_forwarded if self.fan_out else 0

    @attribute(dtype=int, doc="Frames the secondary output dropped (no worker, or workers full)")
    def FanOutFramesDropped(self):
        return self.fan_out.frames_dropped if self.fan_out else 0

    @attribute(dtype=str, doc="Redis URL the series are published on as blissdata scans, empty when none")
    def BlissdataUrl(self):
        return self.blissdata.url if self.blissdata else ""

    @attribute(dtype=int, doc="Frames published to blissdata (references, not pixels)")
    def BlissdataFramesPublished(self):
        return self.blissdata.frames_published if self.blissdata else 0

    @attribute(dtype=int, doc="blissdata publishing failures (Redis down or refusing); the file is never affected")
    def BlissdataErrors(self):
        return self.blissdata.publish_errors if self.blissdata else 0

    @attribute(dtype=str, doc="Last blissdata publishing failure, empty when none")
    def BlissdataLastError(self):
        return self.blissdata.last_error if self.blissdata else ""

    WriteRate = counter("write_rate", float, "Recent write rate, frames per second", unit="Hz", format="%.1f")
    DataRate = counter("data_rate", float, "Recent write rate in megabytes", unit="MB/s", format="%.1f")

    @command(dtype_in=str, dtype_out=str,
             doc_in='JSON: {"frames": N, "series_id": ID, "endpoint": "tcp://..." or a list, '
             '"file": optional, "protocol": "stins" (default), "dectris-v1", "dectris-v2" or "maxiv"}',
             doc_out="Absolute path of the file that will be written")
    @operator_errors
    def Arm(self, text):
        return str(self._core().arm(parse_recording_request(text)))

    @command(dtype_in=str, dtype_out=str, doc_in="File name to check", doc_out="Absolute path it resolves to")
    @operator_errors
    def CheckFile(self, name):
        return str(self._core().resolve_file(name))

    @command(doc_in="Close the file with the frames received so far")
    @operator_errors
    def Stop(self):
        self._core().stop()

    @command(doc_in="Close the file at once, marking the series aborted")
    @operator_errors
    def Abort(self):
        self._core().abort()
