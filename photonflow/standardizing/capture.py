"""Capturing a beamline's state around one series: a snapshot before the exposure, time series
during it, a snapshot after it, held in Assonant's data classes (LNLS' ``assonant``) so that what
photonflow captures can be exchanged with Assonant tools.

A value that cannot be read is recorded as a failure (which value, from where, the error) and
the capture goes on: metadata must never fail or delay an acquisition. After the series, the
position-compare devices that triggered the frames are read for the positions they latched.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from assonant.data_classes import components as assonant_components
from assonant.data_classes.data_handlers import Axis, DataField, TimeSeries
from assonant.data_classes.enums import TransformationType

from photonflow.standardizing.angles import TriggerCapture
from photonflow.standardizing.mapping import MOMENTS, BeamlineMapping, Capture

log = logging.getLogger(__name__)

# The Assonant component class that holds each photonflow component (and each axis group).
ASSONANT_CLASSES = {
    "source": assonant_components.StorageRing,
    "monochromator": assonant_components.Monochromator,
    "beam": assonant_components.Beam,
    "attenuator": assonant_components.Attenuator,
    "slits": assonant_components.Slit,
    "shutter": assonant_components.Shutter,
    "detector": assonant_components.Detector,
    "sample": assonant_components.Sample,
    "experiment": assonant_components.Component,  # what the acquisition means: Assonant has no class for it
    "goniometer": assonant_components.Sample,
    "detector_position": assonant_components.Detector,
}
# Axis groups live in the component they move.
HOLDER = {"goniometer": "sample", "detector_position": "detector"}
TRANSFORMATIONS = {"rotation": TransformationType.ROTATION, "translation": TransformationType.TRANSLATION}


class AttributeReader(Protocol):
    """Reads one attribute of one device: (value, UNIX time of the reading); raises on failure."""

    def read(self, device: str, attribute: str) -> tuple[object, float]: ...


@dataclass(frozen=True)
class CaptureFailure:
    moment: str
    key: str
    source: str
    error: str

    def describe(self) -> str:
        return f"{self.moment}: {self.key} from {self.source}: {self.error}"


class SeriesCapture:
    """Everything captured for one series, as three Assonant entries (``pre_exposure``,
    ``during_exposure``, ``post_exposure``), the trigger positions of each triggered axis, the
    failures, and the problems found in what was captured when the file is written."""

    def __init__(self, mapping: BeamlineMapping, reader: AttributeReader, clock: Callable[[], float] = time.time):
        self.mapping = mapping
        self.reader = reader
        self.clock = clock
        self.entries = {
            moment: assonant_components.Entry(name=f"{moment}_exposure", subcomponents={}, positions={}, fields={})
            for moment in MOMENTS
        }
        self.failures: list[CaptureFailure] = []
        self.triggers: dict[str, TriggerCapture] = {}  # axis key -> what its position-compare captured
        # what is off in the captured values (a scan's angles, the frame rate), by value: set, not
        # added to, each time a file is written from the capture
        self.problems: dict[str, tuple[str, ...]] = {}
        self.times: dict[str, float] = {}
        self._samples: dict[str, tuple[list[float], list[object]]] = {}
        self._failed_during: set[str] = set()
        self._lock = threading.Lock()
        self._axes = {axis.capture.key: axis for axis in mapping.axes}
        self._components = {f.capture.key: f.component for f in mapping.fields}

    # -- a whole series --------------------------------------------------------------------------
    def begin(self) -> None:
        """At the series start: the pre-exposure snapshot, then polling the during values."""
        self.snapshot("pre")
        self._stop_polling = threading.Event()
        self._poller = None
        if self.mapping.polled():
            self._poller = threading.Thread(target=self.poll_during, args=(self._stop_polling,),
                                            name="capture-during", daemon=True)
            self._poller.start()

    def end(self) -> None:
        """At the series end: polling stopped, the time series kept, the post-exposure snapshot."""
        self.stop_polling()
        self.finish_during()
        self.snapshot("post")
        self.read_triggers()

    def stop_polling(self) -> None:
        stop, poller = getattr(self, "_stop_polling", None), getattr(self, "_poller", None)
        if stop is not None:
            stop.set()
        if poller is not None:
            poller.join(5)

    # -- the three moments ---------------------------------------------------------------------
    def snapshot(self, moment: str) -> None:
        """Read every value captured at ``moment`` ("pre" or "post") once."""
        self.times[moment] = self.clock()
        if moment == "pre":
            for capture in self.mapping.fixed():
                self._store(moment, capture, capture.value)
        for capture in self.mapping.captures(moment):
            try:
                value, _ = self.reader.read(*capture.tango_attribute)
            except Exception as error:  # noqa: BLE001 - any failure is recorded, none stops the capture
                self._fail(moment, capture.key, capture.source, error)
                continue
            self._store(moment, capture, value)

    def read_triggers(self) -> None:
        """What each triggered axis' position-compare device captured: the scan it was armed with,
        and the position and time of every pulse. Whether that was this series' scan is decided
        against the Recorder's file (``TriggerCapture.belongs_to``)."""
        for axis in self.mapping.triggered():
            device = str(axis.triggers)
            try:
                read: dict[str, Any] = {name: self.reader.read(device, name)[0]
                        for name in ("CapturedPositions", "CapturedTimes", "Start", "Step", "Count")}
                self.triggers[axis.capture.key] = TriggerCapture(
                    device, float(read["Start"]), float(read["Step"]), int(read["Count"]),
                    _floats(read["CapturedPositions"]), _floats(read["CapturedTimes"]))
            except Exception as error:  # noqa: BLE001 - any failure is recorded, none stops the capture
                self._fail("post", axis.capture.key, f"{device} (trigger positions)", error)

    def problem_list(self) -> list[str]:
        return [problem for problems in self.problems.values() for problem in problems]

    def sample(self, capture: Capture, value: object, timestamp: float) -> None:
        """One reading during the exposure (from polling, or from a change event)."""
        with self._lock:
            times, values = self._samples.setdefault(capture.key, ([], []))
            times.append(timestamp)
            values.append(value)

    def poll_during(self, stop: threading.Event) -> None:
        """Poll every polled value at its own rate until ``stop`` is set (evented values arrive by
        ``sample``)."""
        captures = self.mapping.polled()
        self.times["during"] = self.clock()
        due = [(time.monotonic(), index) for index in range(len(captures))]
        heapq.heapify(due)
        while due and not stop.is_set():
            when, index = heapq.heappop(due)
            if stop.wait(max(0.0, when - time.monotonic())):
                break
            capture = captures[index]
            try:
                value, timestamp = self.reader.read(*capture.tango_attribute)
            except Exception as error:  # noqa: BLE001 - any failure is recorded once per value, none stops the capture
                if capture.key not in self._failed_during:  # once per value, not once per poll
                    self._failed_during.add(capture.key)
                    self._fail("during", capture.key, capture.source, error)
            else:
                self.sample(capture, value, timestamp)
            heapq.heappush(due, (max(when + 1.0 / capture.rate, time.monotonic()), index))

    def finish_during(self) -> None:
        """Turn the samples into Assonant time series in the ``during_exposure`` entry."""
        with self._lock:
            samples = dict(self._samples)
        for capture in self.mapping.captures("during"):
            times, values = samples.get(capture.key, ([], []))
            if not times:
                continue
            series = TimeSeries(value=DataField(value=_array(values), unit=capture.unit),
                                timestamps=DataField(value=np.asarray(times, dtype=np.float64), unit="s"))
            component, name = self._holder(capture.key)
            if capture.key in self._axes:
                axis = self._axes[capture.key]
                component.add_position(name, Axis(transformation_type=TRANSFORMATIONS[axis.transformation_type],
                                                  value=series))
            else:
                component.add_timeseries_field(name, series)
            self._component_entry("during", component)

    # -- reading back ----------------------------------------------------------------------------
    def value(self, key: str, moments: tuple[str, ...] = ("pre", "post")) -> tuple[object, str | None] | None:
        """A value captured at the first of ``moments`` that has it, with its unit."""
        component_name, name = self._names(key)
        for moment in moments:
            component = self.entries[moment].subcomponents.get(component_name)
            if component is None:
                continue
            handler = component.positions.get(name) if key in self._axes else component.fields.get(name)
            if handler is None:
                continue
            field = handler.value if isinstance(handler, Axis) else handler
            if isinstance(field, DataField):
                return field.value, field.unit
        return None

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(timestamps, values) captured during the exposure, or None."""
        component_name, name = self._names(key)
        component = self.entries["during"].subcomponents.get(component_name)
        if component is None:
            return None
        handler = component.positions.get(name) if key in self._axes else component.fields.get(name)
        if handler is None:
            return None
        series = handler.value if isinstance(handler, Axis) else handler
        return np.asarray(series.timestamps.value), np.asarray(series.value.value)

    # -- internals -----------------------------------------------------------------------------
    def _fail(self, moment: str, key: str, source: str, error: Exception) -> None:
        text = _error_text(error)
        log.warning("could not capture %s from %s (%s): %s", key, source, moment, text)
        self.failures.append(CaptureFailure(moment, key, source, text))

    def _store(self, moment: str, capture: Capture, value: object) -> None:
        component, name = self._holder(capture.key, moment)
        field = DataField(value=_plain(value), unit=capture.unit)
        if capture.key in self._axes:
            kind = TRANSFORMATIONS[self._axes[capture.key].transformation_type]
            component.add_position(name, Axis(transformation_type=kind, value=field))
        else:
            component.add_field(name, field)
        self._component_entry(moment, component)

    def _names(self, key: str) -> tuple[str, str]:
        group, name = key.split("/", 1)
        return HOLDER.get(group, group), name

    def _holder(self, key: str, moment: str = "during"):
        group, name = key.split("/", 1)
        component_name = HOLDER.get(group, group)
        entry = self.entries[moment]
        component = entry.subcomponents.get(component_name)
        if component is None:
            component = ASSONANT_CLASSES[group](name=component_name, subcomponents={}, positions={}, fields={})
        return component, name

    def _component_entry(self, moment: str, component) -> None:
        entry = self.entries[moment]
        if component.name not in entry.subcomponents:
            entry.add_subcomponent(component)


def _plain(value: object) -> object:
    """Tango gives numpy scalars, DevState enums and tuples: keep numbers and text as such."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, int | float | str | bool | np.ndarray) or value is None:
        return value
    if isinstance(value, list | tuple):
        return np.asarray(value)
    return str(value)


def _floats(value: object) -> np.ndarray:
    """A spectrum attribute as float64 (Tango reads an empty one as None)."""
    return np.zeros(0) if value is None else np.asarray(value, dtype=np.float64).ravel()


def _array(values: list[object]) -> np.ndarray:
    plain = [_plain(value) for value in values]
    if all(isinstance(value, int | float | bool) for value in plain):
        return np.asarray(plain, dtype=np.float64)
    return np.asarray([str(value) for value in plain], dtype=object)


def _error_text(error: Exception) -> str:
    """A Tango DevFailed's own reason and description, or the exception's text."""
    args = getattr(error, "args", ())
    if args and hasattr(args[0], "reason") and hasattr(args[0], "desc"):
        return f"{args[0].reason}: {args[0].desc.strip()}"
    return f"{type(error).__name__}: {error}"
