"""Writing a standardized NeXus file: the application definition's ``/entry`` over the Recorder's
frames (reached through relative external links, so the folder can move), the beamline captured
around the exposure, and the raw snapshots as Assonant keeps them.

Written with h5py rather than Assonant's writer (nexusformat, which knows no application
definitions) or nexgen (which takes its geometry from its own Pydantic models and writes the
frames itself): photonflow's frames are already on disk, and the mapping is the geometry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
from assonant.data_classes.data_handlers import Axis, TimeSeries

import photonflow
from photonflow.recording.nexus_writer import LIBVER, nexus_time
from photonflow.standardizing.angles import AxisPerFrame, from_triggers, held, interpolated
from photonflow.standardizing.capture import SeriesCapture
from photonflow.standardizing.mapping import AXIS_UNITS, COMPONENTS, AxisMapping, BeamlineMapping, convert
from photonflow.standardizing.recorded import RecordedSeries

TEXT = h5py.string_dtype("utf-8")
HC_KEV_ANGSTROM = 12.398419843320026  # wavelength (Å) = HC / energy (keV)
BEAM_AXIS = np.array([0.0, 0.0, 1.0])  # NeXus (McStas) coordinates: z along the beam, y up
# Each field's source while the file is written; gathered into /entry/value_sources when it is
# closed (pynxtools counts an attribute NeXus does not define as a problem; an NXcollection is free).
SOURCE_ATTRIBUTE = "photonflow_source"
VALUE_SOURCES = "value_sources"


@contextlib.contextmanager
def open_new(path: Path, create: Callable[[Path], h5py.File] | None) -> Iterator[h5py.File]:
    """A new file: through ``create`` (the data root's safe creation) when given; "w-" never
    overwrites. Each field's source is gathered into ``/entry/value_sources`` before it closes."""
    with create(path) if create else h5py.File(path, "w-", libver=LIBVER) as f:
        yield f
        if "entry" in f:
            gather_sources(f["entry"])


def gather_sources(entry: h5py.Group) -> None:
    """``/entry/value_sources`` (NXcollection): ``path`` and ``source``, one line per field that
    named its source (``write(..., source=...)``): the detector header, a Tango attribute, the
    DataManager, the configuration, the frames."""
    found: list[tuple[str, str]] = []

    def collect(name: str, item) -> None:
        if isinstance(item, h5py.Dataset) and SOURCE_ATTRIBUTE in item.attrs:
            found.append((item.name, _text(item.attrs[SOURCE_ATTRIBUTE])))

    entry.visititems(collect)
    for path, _ in found:
        del entry.file[path].attrs[SOURCE_ATTRIBUTE]
    if not found:
        return
    sources = group(entry, VALUE_SOURCES, "NXcollection")
    sources.attrs["description"] = "where each field's value comes from: path[i] from source[i]"
    write(sources, "path", np.asarray([path for path, _ in found], dtype=object))
    write(sources, "source", np.asarray([source for _, source in found], dtype=object))


def value_sources(path: str | Path) -> dict[str, str]:
    """{field path: its source} of a file the Standardizer wrote."""
    with h5py.File(path, "r") as f:
        sources = f.get(f"entry/{VALUE_SOURCES}")
        if sources is None:
            return {}
        return dict(zip((_text(p) for p in sources["path"][()]), (_text(s) for s in sources["source"][()]),
                        strict=True))


def group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    made = parent.require_group(name)
    made.attrs["NX_class"] = nx_class
    return made


def write(parent: h5py.Group, name: str, value, unit: str | None = None, source: str | None = None) -> h5py.Dataset:
    """A field: text as UTF-8, numbers and arrays as they are, anything else as JSON text;
    ``source``: where the value comes from (see ``gather_sources``)."""
    if isinstance(value, str):
        dataset = parent.create_dataset(name, data=value, dtype=TEXT)
    elif isinstance(value, bool | int | float | np.generic) or (
        isinstance(value, np.ndarray) and value.dtype.kind in "biuf"
    ):
        dataset = parent.create_dataset(name, data=value)
    elif isinstance(value, np.ndarray):
        dataset = parent.create_dataset(name, data=np.asarray([str(v) for v in value.ravel()], dtype=object),
                                        dtype=TEXT)
    else:
        dataset = parent.create_dataset(name, data=json.dumps(value, default=str), dtype=TEXT)
    if unit:
        dataset.attrs["units"] = unit
    if source:
        dataset.attrs[SOURCE_ATTRIBUTE] = source
    return dataset


def link_frames(parent: h5py.Group, name: str, output: Path, recorded: RecordedSeries) -> None:
    """``parent/name`` is the Recorder's frames, by a link relative to the output's folder."""
    relative = os.path.relpath(recorded.path, output.parent)
    parent[name] = h5py.ExternalLink(relative, recorded.data_path)


def link_live_analysis(entry: h5py.Group, output: Path, recorded: RecordedSeries,
                       problems: list[str] | None = None, wait: float | None = None) -> bool:
    """``entry/live_analysis``: the live analysis' per-frame results (an NXprocess: spots, ROI sums,
    I(q) by frame number) when it analysed this series, as Jungfraujoch puts its per-image results
    in its NXmx files: a link, relative to the output's folder, to the results beside the
    Recorder's file; for a series several Recorders shared, the results of every part merged in
    frame order (``merge_part_results``; what could not be merged is added to ``problems``). A
    worker still writing them is waited for, ``wait`` s at most (default RESULTS_WAIT). False
    when there are none."""
    from photonflow.analysis.live import RESULTS_WAIT, closed_results, merge_part_results, results_beside
    from photonflow.recording.shared_series import part_paths

    wait = RESULTS_WAIT if wait is None else wait
    results = results_beside(recorded.path)
    if results.is_file():
        why = closed_results(results, time.monotonic() + wait)  # linked once readable: never a broken link
        if why and problems is not None:
            problems.append(f"the live results {results.name} are still being written: {why}")
        entry["live_analysis"] = h5py.ExternalLink(os.path.relpath(results, output.parent), "entry/process")
        return True
    master_path = Path(recorded.path)
    if not master_path.is_file():
        return False
    with h5py.File(master_path, "r", locking=False) as master:
        if not any(results_beside(part).is_file() for part in part_paths(master, master_path)):
            return False  # not a shared series' master, or none of its parts was analysed
        unmerged = merge_part_results(entry, "live_analysis", master, master_path, output, wait)
    if problems is not None:
        problems.extend(unmerged)
    return "live_analysis" in entry


def transformation(parent: h5py.Group, name: str, value, unit: str, kind: str, vector, depends_on: str,
                   offset=(0.0, 0.0, 0.0), offset_unit: str = "m", source: str | None = None) -> str:
    dataset = write(parent, name, value, unit, source)
    dataset.attrs["transformation_type"] = kind
    dataset.attrs["vector"] = np.asarray(vector, dtype=np.float64)
    dataset.attrs["offset"] = np.asarray(offset, dtype=np.float64)
    dataset.attrs["offset_units"] = offset_unit
    dataset.attrs["depends_on"] = depends_on
    return dataset.name


def axis_values(capture: SeriesCapture, axis: AxisMapping, recorded: RecordedSeries | None):
    """An axis' value and unit (see ``axis_per_frame``); None when it was not captured."""
    found = axis_per_frame(capture, axis, recorded)
    return None if found is None else (found.values, found.unit)


def axis_per_frame(capture: SeriesCapture, axis: AxisMapping, recorded: RecordedSeries | None) -> AxisPerFrame | None:
    """An axis' value: per frame for a scan axis, else its pre-exposure value. A scan axis' frame
    n is at the position its position-compare latched for trigger n when that capture belongs to
    the series; else at its readings during the series at each frame's time (flagged when it
    moved), else at the detector's own start and increment. What is off is kept in the capture's
    ``problems``."""
    key = axis.capture.key
    found = _scan_per_frame(capture, axis, recorded) if axis.scan and recorded is not None and recorded.frames \
        else None
    if found is None:
        value = capture.value(key)
        if value is None:
            return None
        found = AxisPerFrame(*value, source=capture.mapping.source_of(axis.capture))
    capture.problems[key] = found.problems
    return found


def _scan_per_frame(capture: SeriesCapture, axis: AxisMapping, recorded: RecordedSeries) -> AxisPerFrame | None:
    key, frames = axis.capture.key, recorded.frames
    trigger = capture.triggers.get(key)
    read = capture.mapping.source_of(axis.capture)
    if trigger is not None and trigger.belongs_to(recorded.series_start, recorded.series_end):
        found = from_triggers(axis.name, trigger, frames, axis.capture.unit)
        return dataclasses.replace(found, source=f"Tango: {trigger.device}/CapturedPositions")
    series = capture.series(key)
    times = recorded.frame_times[:frames]
    if series is not None and len(series[0]) >= 2 and times.size and not np.isnan(times).all():
        found = interpolated(axis.name, *series, times, axis.capture.unit)
        return dataclasses.replace(found, source=f"{read} during the series, at each frame's time")
    start = recorded.value(f"{axis.name}_start")
    increment = recorded.value(f"{axis.name}_increment")
    if start is not None and increment is not None:
        return AxisPerFrame(float(start) + float(increment) * np.arange(frames), "deg", float(increment),
                            source=f"detector header: {axis.name}_start, {axis.name}_increment")
    before, after = capture.value(key), capture.value(key, ("post",))
    if before is not None and isinstance(before[0], int | float):
        end = float(after[0]) if after is not None and isinstance(after[0], int | float) else None
        return dataclasses.replace(held(axis.name, float(before[0]), end, frames, before[1]), source=read)
    return None


def write_axes(parent: h5py.Group, mapping: BeamlineMapping, capture: SeriesCapture, group_name: str,
               recorded: RecordedSeries | None, missing: list[str]) -> str:
    """The group's NXtransformations; returns the path the owner ``depends_on`` ('.' if none). An
    axis Tango could not give takes the detector's own value (its header's angle, its distance);
    one nobody gave is left out of the chain (what depended on it depends on what it did), never
    written as 0, and is a capture problem."""
    axes = mapping.axes_of(group_name)
    if not axes:
        return "."
    found_by_name: dict[str, AxisPerFrame] = {}
    skipped: dict[str, str] = {}  # an axis left out -> the axis it depended on
    for axis in axes:
        found = axis_per_frame(capture, axis, recorded) or _detector_own(axis, recorded)
        if found is None:
            missing.append(axis.capture.key)
            skipped[axis.name] = axis.depends_on
        else:
            found_by_name[axis.name] = found

    def past_skipped(name: str) -> str:
        while name in skipped:
            name = skipped[name]
        return name

    transformations = group(parent, "transformations", "NXtransformations")
    for axis in axes:
        found = found_by_name.get(axis.name)
        if found is None:
            continue
        below = past_skipped(axis.depends_on)
        depends_on = "." if below == "." else f"{transformations.name}/{below}"
        unit = found.unit or AXIS_UNITS[axis.transformation_type]
        transformation(transformations, axis.name, found.values, unit, axis.transformation_type, axis.vector,
                       depends_on, axis.offset, axis.offset_unit, found.source)
        if found.increment is not None:
            _write_scan_steps(transformations, axis, np.asarray(found.values, dtype=np.float64), found.increment, unit,
                              found.source)
    head = mapping.chain_head(group_name)
    head = "." if head is None else past_skipped(head)
    return "." if head == "." else f"{transformations.name}/{head}"


def _detector_own(axis: AxisMapping, recorded: RecordedSeries | None) -> AxisPerFrame | None:
    """An axis' value as the detector reported it: a rotation's ``<axis>_start`` (its header's
    angle), a translation along the beam its ``distance`` (DECTRIS ``detector_distance``)."""
    if recorded is None:
        return None
    if axis.transformation_type == "rotation":
        start = recorded.value(f"{axis.name}_start")
        return AxisPerFrame(float(start), "deg", source=recorded.origin(f"{axis.name}_start")) \
            if isinstance(start, int | float) else None
    vector = np.asarray(axis.vector, dtype=np.float64)
    if np.allclose(vector / np.linalg.norm(vector), BEAM_AXIS):
        for name in ("distance", "detector_distance"):
            distance = recorded.value(name)
            if isinstance(distance, int | float) and distance > 0:
                return AxisPerFrame(float(distance), "m", source=recorded.origin(name))
    return None


def _write_scan_steps(transformations: h5py.Group, axis: AxisMapping, values: np.ndarray, increment: float,
                      unit: str, source: str) -> None:
    """What each frame of a scan covers: ``<axis>_increment`` (per frame) and NXtransformations'
    ``<axis>_increment_set`` (the step asked for) and ``<axis>_end`` (value + increment), which
    DIALS' nxmx reader takes the scan from. Each carries the axis' transformation_type, by which
    pynxtools tells an angle from a length."""
    for suffix, value in (("_increment", np.full(values.shape, increment)), ("_increment_set", increment),
                          ("_end", values + increment)):
        dataset = write(transformations, axis.name + suffix, value, unit, source)
        dataset.attrs["transformation_type"] = axis.transformation_type


def write_components(entry: h5py.Group, mapping: BeamlineMapping, capture: SeriesCapture, place: Callable[[str], str],
                     skip: tuple[str, ...] = ()) -> None:
    """Each captured component field at its NeXus place (``place(component)`` gives the group path)."""
    for field_mapping in mapping.fields:
        if field_mapping.component in skip:
            continue
        found = capture.value(field_mapping.capture.key)
        if found is None:
            continue
        kind = COMPONENTS[field_mapping.component]
        target = entry
        for part in place(field_mapping.component).split("/"):
            target = group(target, part, "NXinstrument" if part == "instrument" else kind.nx_class)
        if field_mapping.name not in target:
            dataset = write(target, field_mapping.name, found[0], found[1], mapping.source_of(field_mapping.capture))
            allowed = kind.enumerations.get(field_mapping.name)
            if allowed and found[0] not in allowed:
                dataset.attrs["custom"] = True


def incident_wavelength(capture: SeriesCapture, recorded: RecordedSeries | None) -> float | None:
    """The beam's wavelength in Å: the beam's own, else the monochromator's wavelength or energy,
    else what the detector was told."""
    found = wavelength_and_source(capture, recorded)
    return None if found is None else found[0]


def wavelength_and_source(capture: SeriesCapture, recorded: RecordedSeries | None) -> tuple[float, str] | None:
    """``incident_wavelength`` and where it comes from."""
    for key, to_angstrom in (
        ("beam/incident_wavelength", lambda v, u: convert(v, u, "angstrom")),
        ("monochromator/wavelength", lambda v, u: convert(v, u, "angstrom")),
        ("beam/incident_energy", lambda v, u: HC_KEV_ANGSTROM / convert(v, u, "keV")),
        ("monochromator/energy", lambda v, u: HC_KEV_ANGSTROM / convert(v, u, "keV")),
    ):
        found = capture.value(key)
        if found is not None and isinstance(found[0], int | float) and found[0] > 0:
            return float(to_angstrom(*found)), capture.mapping.source_of(capture.mapping.capture_of(key))
    if recorded is not None:
        wavelength = recorded.value("incident_wavelength")
        if isinstance(wavelength, int | float) and wavelength > 0:
            return float(wavelength) * 1e10, recorded.origin("incident_wavelength")
        for name in ("incident_energy", "photon_energy"):
            energy = recorded.value(name)
            if isinstance(energy, int | float) and energy > 0:
                return HC_KEV_ANGSTROM / (float(energy) / 1000.0), recorded.origin(name)
    return None


def detector_distance(
    mapping: BeamlineMapping, capture: SeriesCapture, recorded: RecordedSeries | None
) -> float | None:
    """Metres from the sample to the detector along the beam: the detector's translations along
    the beam, else what the detector reported."""
    found = distance_and_source(mapping, capture, recorded)
    return None if found is None else found[0]


def distance_and_source(
    mapping: BeamlineMapping, capture: SeriesCapture, recorded: RecordedSeries | None
) -> tuple[float, str] | None:
    """``detector_distance`` and where it comes from."""
    along_beam, sources = [], []
    for axis in mapping.axes_of("detector_position"):
        vector = np.asarray(axis.vector, dtype=np.float64)
        if axis.transformation_type == "translation" and np.allclose(vector / np.linalg.norm(vector), BEAM_AXIS):
            found = capture.value(axis.capture.key)
            if found is not None and isinstance(found[0], int | float):
                along_beam.append(convert(found[0], found[1], "m"))
                sources.append(mapping.source_of(axis.capture))
    if along_beam:
        return float(sum(along_beam)), " + ".join(sources)
    if recorded is not None:
        distance = recorded.value("distance")
        if isinstance(distance, int | float) and distance > 0:
            return float(distance), recorded.origin("distance")
    return None


def write_snapshots(entry: h5py.Group, capture: SeriesCapture) -> None:
    """The raw captures, as Assonant keeps them: ``pre_exposure`` and ``post_exposure`` (one value
    each), ``during_exposure`` (NXlog: value and time from the series start)."""
    start = capture.times.get("pre", 0.0)
    for moment, assonant_entry in capture.entries.items():
        moment_group = group(entry, f"{moment}_exposure", "NXcollection")
        moment_group.attrs["description"] = {
            "pre": "captured at the series start", "during": "captured while the frames were taken",
            "post": "captured at the series end",
        }[moment]
        for component_name, component in assonant_entry.subcomponents.items():
            component_group = group(moment_group, component_name, "NXcollection")
            handlers = {**component.fields, **component.positions}
            for name, handler in handlers.items():
                field = handler.value if isinstance(handler, Axis) else handler
                if isinstance(field, TimeSeries):
                    log = group(component_group, name, "NXlog")
                    write(log, "value", np.asarray(field.value.value), field.value.unit)
                    times = write(log, "time", np.asarray(field.timestamps.value, dtype=np.float64) - start, "s")
                    times.attrs["start"] = _iso(start)
                else:
                    write(component_group, name, field.value, field.unit)


def write_failures(entry: h5py.Group, capture: SeriesCapture, missing: list[str],
                   others: Sequence[str] = ()) -> None:
    """What could not be captured (which value, from where, and the error), and what is off in
    what was (the capture's problems, and ``others``: those of other captures the file joins)."""
    absent = [f"{key}: no value was captured" for key in missing
              if not any(failure.key == key for failure in capture.failures)]
    if absent:  # also the Standardizer's warnings (ALARM), as the capture's other problems
        capture.problems["absent"] = tuple(absent)
    problems = [*capture.problem_list(), *others]
    if not capture.failures and not problems:
        return
    notes = group(entry, "capture_problems", "NXcollection")
    notes.attrs["description"] = ("values the Standardizer could not capture (the file lacks them), and what is "
                                  "off in those it did")
    lines = [failure.describe() for failure in capture.failures] + problems
    write(notes, "problems", np.asarray(lines, dtype=object))


def write_entry(f: h5py.File, definition: str, title: str, start_time: str, end_time: str) -> h5py.Group:
    """The file's provenance and the ``/entry`` of an application definition, with its times."""
    write_provenance(f, definition)
    entry = group(f, "entry", "NXentry")
    entry.attrs["default"] = "data"
    write(entry, "definition", definition)
    write(entry, "title", title)
    write(entry, "start_time", start_time)
    write(entry, "end_time", end_time or start_time)
    return entry


def write_provenance(f: h5py.File, definition: str) -> None:
    f.attrs["default"] = "entry"
    f.attrs["creator"] = f"photonflow {photonflow.__version__} Standardizer"
    f.attrs["NeXus_version"] = "v2024.02"
    f.attrs["HDF5_Version"] = h5py.version.hdf5_version
    f.attrs["file_time"] = _iso(None)
    f.attrs["application_definition"] = definition


def _iso(unix_time: float | None) -> str:
    from datetime import UTC, datetime

    moment = datetime.now(UTC) if unix_time is None else datetime.fromtimestamp(unix_time, UTC)
    return nexus_time(moment.isoformat())


def entry_as_json(path: Path, max_elements: int = 4096) -> dict:
    """The standardized tree as JSON-safe data, for the event bus and the demo: groups with their
    NX_class, fields with value and units (arrays longer than ``max_elements``, such as the
    frames, as shape and type), links as where they point."""

    def describe_group(node: h5py.Group) -> dict:
        out: dict = {"NX_class": _text(node.attrs.get("NX_class", ""))}
        for name in node:
            link = node.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                out[name] = {"external_link": {"file": link.filename, "path": link.path}}
                continue
            item = node[name]
            out[name] = describe_group(item) if isinstance(item, h5py.Group) else describe_field(item)
        return out

    def describe_field(dataset: h5py.Dataset) -> dict:
        out: dict = {}
        if dataset.size > max_elements:
            out["shape"], out["dtype"] = list(dataset.shape), str(dataset.dtype)
        else:
            out["value"] = _json_value(dataset[()])
        for key in ("units", "transformation_type", "vector", "offset", "depends_on"):
            if key in dataset.attrs:
                out[key] = _json_value(dataset.attrs[key])
        return out

    with h5py.File(path, "r") as f:
        return {"entry": describe_group(f["entry"])}


def _json_value(value):
    """Plain JSON data: text decoded, arrays as lists, NaN as null."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray | np.generic):
        return _json_value(value.tolist())
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
