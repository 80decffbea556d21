"""The live analysis device: a thin Tango face on ``photonflow.analysis.live.LiveAnalysis``. It takes
the frames of its Recorder's fan-out (``FanOutMode push``: each frame once, never slowing the
Recorder) or of a stream endpoint, and keeps each series' results beside the Recorder's file
(``<stem>_live.h5``), where the Standardizer finds them, and publishes them into the series'
blissdata scan (streams ``live:*``, see ``photonflow.publishing.blissdata_results``).

Events: the counters (frames analysed, last spot count, latency) at most every ``EventInterval``
seconds, and the last frame's I(q) and ROI sums as spectra at the same pace: a panel plots them
live without a call per frame.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import tango
from tango.server import attribute, device_property

from photonflow.analysis.frame_analysis import AnalysisSettings, FrameAnalyzer, FrameResult, parse_rois
from photonflow.analysis.live import LiveAnalysis, ResultsFile, results_beside
from photonflow.devices.base import PhotonflowDevice, counter
from photonflow.errors import ConfigurationError
from photonflow.publishing.blissdata_results import BlissdataResults, ResultChannels
from photonflow.publishing.blissdata_scan import url_from_property
from photonflow.stream.stins import SeriesEnd, SeriesStart
from photonflow.throttle import Throttle

log = logging.getLogger(__name__)


class PhotonflowAnalysis(PhotonflowDevice):
    """Per-frame spot counts, I(q) (pyFAI) and ROI sums of every frame, live."""

    Recorder = device_property(dtype=str, default_value="",
                               doc="The Recorder whose fan-out (FanOutMode push) it analyses; its results file "
                                   "goes beside the Recorder's")
    StreamEndpoint = device_property(dtype=str, default_value="",
                                     doc="A stream to analyse instead (e.g. an Acquirer output); no results file")
    SpotSigma = device_property(dtype=float, default_value=6.0,
                                doc="A spot: pixels this many noise sigmas above the frame's median")
    SpotMinPixels = device_property(dtype=int, default_value=2, doc="Pixels a spot has at least (8-connected)")
    AzimuthalPoints = device_property(dtype=int, default_value=500, doc="I(q) bins; 0: no integration")
    ROIs = device_property(dtype=(str,), default_value=[],
                           doc="Regions summed per frame, each 'name top left height width' in pixels")
    EventInterval = device_property(dtype=float, default_value=0.2, doc="Minimum seconds between events")
    Blissdata = device_property(
        dtype=str, default_value="${PHOTONFLOW_EVENT_BUS}",
        doc="Redis URL of the blissdata scans the Recorder publishes; each series' results go into its scan as "
            "streams live:*; default: blissdata's database on the event bus's server; empty: none")

    def create_core(self, listener) -> LiveAnalysis:
        settings = AnalysisSettings(spot_sigma=self.SpotSigma, spot_min_pixels=self.SpotMinPixels,
                                    npt=self.AzimuthalPoints, rois=parse_rois(list(self.ROIs)))
        self.recorder = tango.DeviceProxy(self.Recorder) if self.Recorder else None
        if self.recorder is not None:
            endpoint = self._fan_out  # asked by the analysis thread until the Recorder answers
        elif self.StreamEndpoint:
            endpoint = self.StreamEndpoint
        else:
            raise ConfigurationError("set Recorder (its fan-out is analysed) or StreamEndpoint")
        self.last = _LastResult(Throttle(self.EventInterval, time.monotonic), self._push_spectra)
        self.results = ResultsFile(self._results_path)
        sinks = [self.results, self.last]
        url = url_from_property(self.Blissdata) if self.Recorder else ""
        self.blissdata = None
        if url:  # the scans are the Recorder's: a stream of the Acquirer has none to publish into
            self.blissdata = BlissdataResults(url, self.Recorder,
                                              ResultChannels(settings.npt, tuple(r.name for r in settings.rois)))
            sinks.append(self.blissdata)
        return LiveAnalysis(endpoint, settings, sinks, listener=listener, counter_interval=self.EventInterval)

    def release_core(self, core: LiveAnalysis) -> None:
        core.close()
        if self.blissdata is not None:
            self.blissdata.close()

    def core_ready(self, core: LiveAnalysis) -> None:
        core.start()

    def _fan_out(self) -> str:
        """The Recorder's fan-out, when it deals frames to workers: a viewers' one (FanOutMode pub, the
        default) would give a worker's PULL socket nothing, and say nothing."""
        endpoint = self.recorder.read_attribute("FanOutEndpoint").value
        mode = (self.recorder.get_property("FanOutMode")["FanOutMode"] or ["pub"])[0]
        if not endpoint or mode != "push":
            raise ConfigurationError(
                f"the Recorder {self.Recorder} has {'no fan-out' if not endpoint else f'a {mode} fan-out (viewers)'}:"
                " set its FanOutAddress (e.g. tcp://127.0.0.1:*), FanOutMode push and FanOutEvery 1, then Init it")
        return endpoint

    def _results_path(self, start: SeriesStart) -> Path | None:
        """Beside the file the Recorder writes the series to (its fan-out's series_start says which)."""
        if not start.file:
            log.warning("series %s: the stream does not say where the series is written: no results file",
                        start.series_id)
            return None
        return results_beside(start.file)

    def _push_spectra(self) -> None:
        self.publish_value("Intensity", self.last.intensity)
        self.publish_value("Q", self.last.q)
        self.publish_value("ROISums", self.last.roi_sums)

    # -- attributes ---------------------------------------------------------------------
    SeriesId = counter("series_id", int, "The series analysed now or last")
    FramesAnalysed = counter("frames_analysed", int, "Frames analysed in the current or last series")
    MessagesRejected = counter("messages_rejected", int,
                               "Malformed stream messages rejected in the current or last series")
    LastSpots = counter("last_spots", int, "Spots in the last frame analysed (-1: none yet)")
    LatencyMedian = counter("latency_median_ms", float, "Frame made -> its result, median of the series",
                            unit="ms", format="%.1f")
    LatencyP99 = counter("latency_p99_ms", float, "Frame made -> its result, 99th percentile of the series",
                         unit="ms", format="%.1f")

    @attribute(dtype=(float,), max_dim_x=10_000, doc="I(q) of the last frame analysed (mean counts per pixel)")
    def Intensity(self):
        return self.last.intensity

    @attribute(dtype=(float,), max_dim_x=10_000, unit="1/nm", doc="The q of Intensity's bins")
    def Q(self):
        return self.last.q

    @attribute(dtype=(float,), max_dim_x=64, doc="Each ROI's sum in the last frame, in ROINames' order")
    def ROISums(self):
        return self.last.roi_sums

    @attribute(dtype=(str,), max_dim_x=64, doc="The ROIs' names")
    def ROINames(self):
        return [line.split()[0] for line in self.ROIs if line.strip()]

    @attribute(dtype=str, doc="The results file of the current or last series")
    def ResultsFile(self):
        return str(self.results.last_path or "")

    @attribute(dtype=str, doc="Redis URL the results are published on, in each series' blissdata scan; empty: none")
    def BlissdataUrl(self):
        return self.blissdata.url if self.blissdata else ""

    @attribute(dtype=int, doc="Frames whose results are in Redis, all series")
    def BlissdataResultsPublished(self):
        return self.blissdata.results_published if self.blissdata else 0

    @attribute(dtype=int, doc="Series whose results are not on Redis (no scan of the Recorder's to put them in)")
    def BlissdataSeriesUnpublished(self):
        return self.blissdata.series_unpublished if self.blissdata else 0

    @attribute(dtype=str, doc="Why results last failed to reach Redis; empty: never")
    def BlissdataLastError(self):
        return self.blissdata.last_error if self.blissdata else ""

    @attribute(dtype=(float,), max_dim_x=2, unit="ms", format="%.1f",
               doc="Frame made -> its result acknowledged by Redis: median and 99th percentile of the last series")
    def BlissdataLatency(self):
        if self.blissdata is None or not self.blissdata.latencies:
            return []
        milliseconds = 1000 * np.asarray(self.blissdata.latencies)
        return [float(np.median(milliseconds)), float(np.percentile(milliseconds, 99))]

    @property
    def event_attributes(self) -> tuple[str, ...]:
        return (*super().event_attributes, "Intensity", "Q", "ROISums")


class _LastResult:
    """The last frame's spectra, pushed at most once per throttle interval (and at a series' end)."""

    def __init__(self, throttle: Throttle, push):
        self.throttle, self.push = throttle, push
        self.intensity: np.ndarray = np.zeros(0)
        self.q: np.ndarray = np.zeros(0)
        self.roi_sums: np.ndarray = np.zeros(0)
        self._analyzer: FrameAnalyzer | None = None
        self._lock = threading.Lock()

    def series_started(self, start: SeriesStart, analyzer: FrameAnalyzer) -> None:
        self._analyzer = analyzer

    def frame_analysed(self, result: FrameResult) -> None:
        with self._lock:
            if result.intensity is not None:
                self.intensity = result.intensity
                if self._analyzer is not None and self._analyzer.q is not None:
                    self.q = self._analyzer.q
            self.roi_sums = np.asarray(list(result.roi_sums.values()), dtype=np.float64)
        if self.throttle.ready():
            self.push()

    def series_ended(self, end: SeriesEnd | None) -> None:
        self.push()
