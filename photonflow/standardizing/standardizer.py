"""The Standardizer: for each series the Controller runs, it captures the beamline before, during
and after the exposure and writes beside the Recorder's file one NeXus file whose ``/entry`` is
the application definition of the beamline's technique; then it announces the file on the event
bus.

It is told of series by the device (which follows the Controller's events) and does its work on
a thread of its own: a slow device, an unreadable attribute or a full bus never delays the
frames, and every such problem is recorded in the file and reported as a warning.

It sequences nothing: what a series is (a tomography's darks, flats or projections) it learns
from the DataManager's ``DataPolicy`` at the series start, and with an NXtomo mapping it joins
the series of one tomography into one NXtomo when its projections end (``planned.py``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import h5py

from photonflow import states
from photonflow.core import CoreListener, StatefulCore
from photonflow.errors import FilePathError, PhotonflowError
from photonflow.events.bus import experiment_done_event
from photonflow.recording.nexus_writer import LIBVER
from photonflow.recording.paths import DataRoot
from photonflow.standardizing.capture import AttributeReader, SeriesCapture
from photonflow.standardizing.mapping import BeamlineMapping
from photonflow.standardizing.nexus import entry_as_json
from photonflow.standardizing.nxmx import write_nxmx
from photonflow.standardizing.nxtomo import TomographyPart, write_nxtomo, write_tomography
from photonflow.standardizing.planned import PlannedAcquisition, TomographyJoiner
from photonflow.standardizing.recorded import RecordedSeries, read_recorded_series
from photonflow.standardizing.standard_files import standardized_path

log = logging.getLogger(__name__)


class EventPublisher(Protocol):
    """Where "experiment done" events go (Redis Streams, Kafka); raises PhotonflowError on failure."""

    def publish(self, event: dict) -> str: ...


Writer = Callable[[Path, BeamlineMapping, SeriesCapture, RecordedSeries, Callable[[Path], h5py.File]], Path]


# The writer of each application definition.
WRITERS: dict[str, Writer] = {"NXmx": write_nxmx, "NXtomo": write_nxtomo}


@dataclass
class StandardizerCounters:
    files_written: int = 0
    capture_failures: int = 0  # values not captured, over every series since start-up
    last_file: str = ""
    warnings: tuple[str, ...] = ()  # of the last series: what could not be captured or sent


@dataclass
class _Series:
    series_id: int
    capture: SeriesCapture
    planned: PlannedAcquisition | None = None


class Standardizer(StatefulCore):
    """``datamanager``: the DataManager device whose ``DataPolicy`` says what each series is
    (empty: none, every series is standardized on its own)."""

    def __init__(self, mapping: BeamlineMapping, reader: AttributeReader, data_root: str | Path,
                 listener: CoreListener | None = None, publisher: EventPublisher | None = None,
                 clock: Callable[[], float] = time.time, datamanager: str = ""):
        super().__init__(listener, states.ON, f"Ready: writes {mapping.definition} for {mapping.beamline}")
        self.mapping = mapping
        self.reader = reader
        self.data_root = DataRoot(data_root)
        self.publisher = publisher
        self.clock = clock
        self.datamanager = datamanager
        self.counters = StandardizerCounters()
        self._series: _Series | None = None
        self._jobs: queue.Queue = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._tomography = TomographyJoiner()
        self._evented: dict[tuple[str, str], list] = {}
        for capture in mapping.evented():
            device, attribute = capture.tango_attribute
            self._evented.setdefault((device.lower(), attribute.lower()), []).append(capture)
        self._worker = threading.Thread(target=self._work, name="standardizer", daemon=True)
        self._worker.start()

    # -- what the device tells it ---------------------------------------------------------------
    def series_started(self, series_id: int) -> None:
        """Asks the DataManager now, on the caller's thread, what the series is: its acquisition
        is the DataManager's current one from before the Start until the series is catalogued."""
        self._submit(self._start, series_id, self._planned_now())

    def series_ended(self, series_id: int, master_file: str) -> None:
        self._submit(self._end, series_id, master_file)

    def attribute_changed(self, device: str, attribute: str, value: object, timestamp: float) -> None:
        """A change event of a value the mapping takes from events during the exposure."""
        series = self._series
        if series is None:
            return
        for capture in self._evented.get((device.lower(), attribute.lower()), ()):
            series.capture.sample(capture, value, timestamp)

    def standardize(self, master_file: str) -> Path:
        """Standardize a Recorder file now (e.g. one written before), capturing the beamline as it
        is; returns the new file. Raises on a file outside the data root or already standardized."""
        recorded = self._recorded(master_file)
        capture = SeriesCapture(self.mapping, self.reader, self.clock)
        capture.snapshot("pre")
        capture.snapshot("post")
        capture.read_triggers()
        return self._write(recorded, capture)

    def _planned_now(self) -> PlannedAcquisition | None:
        if not self.datamanager or self.mapping.definition != "NXtomo":  # only a tomography joins series
            return None
        try:
            text, _ = self.reader.read(self.datamanager, "DataPolicy")
            return PlannedAcquisition.from_data_policy(str(text))
        except Exception as error:  # noqa: BLE001 - the series is still standardized, on its own
            log.warning("could not ask %s what the series is: %s", self.datamanager, error)
            return None

    def wait_idle(self, timeout: float) -> bool:
        """True once every series told so far is written (for tests and the demo)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(10)
        if self._series is not None:
            self._series.capture.stop_polling()
        self.data_root.close()

    # -- the worker ------------------------------------------------------------------------------
    def _submit(self, job, *args) -> None:
        self._idle.clear()
        self._jobs.put((job, args))

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, args = item
            try:
                job(*args)
            except PhotonflowError as error:
                self._warn([str(error)], f"Series not standardized: {error}")
            except Exception as error:  # the worker must survive anything to serve the next series
                log.exception("standardizing failed")
                self._warn([f"{type(error).__name__}: {error}"], f"Series not standardized: {error}")
            finally:
                if self._jobs.empty():
                    self._idle.set()

    def _start(self, series_id: int, planned: PlannedAcquisition | None = None) -> None:
        if self._series is not None:  # the previous series never ended (the Controller restarted?)
            self._series.capture.stop_polling()
        series = _Series(series_id, SeriesCapture(self.mapping, self.reader, self.clock), planned)
        self._series = series
        self._set_state(states.RUNNING, f"Capturing the beamline for series {series_id}")
        series.capture.begin()

    def _end(self, series_id: int, master_file: str) -> None:
        series, self._series = self._series, None
        if series is None or series.series_id != series_id:
            # started before this Standardizer ran: what is known now is all there is
            series = _Series(series_id, SeriesCapture(self.mapping, self.reader, self.clock))
            series.capture.snapshot("pre")
        series.capture.end()
        if not master_file:
            self._warn([f"series {series_id}: the Controller named no file"], f"Series {series_id}: no file to "
                       "standardize (the Recorder wrote none)")
            return
        recorded = self._recorded(master_file)
        planned = self._planned_for(series, recorded)
        if planned is not None and planned.image_kind is not None and self.mapping.definition == "NXtomo":
            self._write_tomography(planned, TomographyPart(planned.image_kind, recorded, series.capture))
        else:
            self._write(recorded, series.capture)

    def _planned_for(self, series: _Series, recorded: RecordedSeries) -> PlannedAcquisition | None:
        """The DataManager's acquisition, if the file is the one its data policy named."""
        planned = series.planned
        if planned is not None and planned.dataset != recorded.path.stem:
            log.warning("series %s wrote %s, not the DataManager's dataset %s (%s): standardized on its own",
                        series.series_id, recorded.path.name, planned.dataset, planned.node)
            return None
        return planned

    def _write_tomography(self, planned: PlannedAcquisition, part: TomographyPart) -> Path:
        """A dark or flat series in an NXtomo of its own; the projections in the NXtomo that joins
        the darks and flats of their tomography before them (beside the projections' file)."""
        parts = self._tomography.add(planned, part)
        output = standardized_path(part.recorded.path, self.mapping.definition)
        self._set_state(states.RUNNING, f"Writing {output.name} ({planned.node}: "
                        + ", ".join(p.kind for p in parts) + ")")
        with self._creator(output.parent) as create:
            path = write_tomography(output, self.mapping, parts, create, sample_name=planned.sample or None)
        capture = SeriesCapture(self.mapping, self.reader, self.clock)  # the failures of every part, together
        capture.failures = [failure for p in parts for failure in p.capture.failures]
        capture.problems = {f"{p.kind} {index}": tuple(p.capture.problem_list()) for index, p in enumerate(parts)}
        self._finish(path, part.recorded, capture)
        return path

    @contextmanager
    def _creator(self, folder: Path):
        """Makes new files in ``folder`` under the data root, by descriptor, never through a link,
        never over an existing file."""
        directory = self.data_root.open_directory(folder)
        try:
            yield lambda target: directory.create(target.name, lambda fd: h5py.File(fd, "w", libver=LIBVER))[0]
        finally:
            directory.close()

    def _recorded(self, master_file: str) -> RecordedSeries:
        master = Path(master_file)
        real = master.resolve()
        if not self.data_root.contains(real):
            raise FilePathError(f"{master_file} is outside the data root {self.data_root.path}; the Standardizer "
                                "writes only beside files under it", reason="FileOutsideDataRoot")
        return read_recorded_series(real)

    def _write(self, recorded: RecordedSeries, capture: SeriesCapture) -> Path:
        output = standardized_path(recorded.path, self.mapping.definition)
        self._set_state(states.RUNNING, f"Writing {output.name}")
        with self._creator(output.parent) as create:
            path = WRITERS[self.mapping.definition](output, self.mapping, capture, recorded, create)
        self._finish(path, recorded, capture)
        return path

    def _finish(self, path: Path, recorded: RecordedSeries, capture: SeriesCapture) -> None:
        """Announce the file, count it, and say what could not be captured or sent, and what is off
        in what was captured (a scan's angles, the frame rate)."""
        warnings = [failure.describe() for failure in capture.failures] + capture.problem_list()
        sent = self._announce(path, recorded)
        if sent:
            warnings.append(sent)
        self.counters.files_written += 1
        self.counters.capture_failures += len(capture.failures)
        self.counters.last_file = str(path)
        self.counters.warnings = tuple(warnings)
        self.listener.counters_changed(self.counters)
        if warnings:
            self._set_state(states.ALARM, f"Wrote {path} ({self.mapping.definition}) with {len(warnings)} "
                            f"warning(s): " + "; ".join(warnings))
        else:
            self._set_state(states.ON, f"Wrote {path} ({self.mapping.definition}) for series {recorded.series_id}")

    def _announce(self, path: Path, recorded: RecordedSeries) -> str:
        """Publish "experiment done"; returns a warning if the bus could not take it."""
        if self.publisher is None:
            return ""
        event = experiment_done_event(self.mapping.beamline, path, self.mapping.definition, recorded.series_id,
                                      entry_as_json(path))
        try:
            self.publisher.publish(event)
        except Exception as error:  # noqa: BLE001 - the file is written: a bus problem is a warning, not a loss
            return f"the experiment-done event was not sent: {error}"
        return ""

    def _warn(self, warnings: list[str], status: str) -> None:
        self.counters.warnings = tuple(warnings)
        self.listener.counters_changed(self.counters)
        self._set_state(states.ALARM, status)

