"""NXtomo, the NeXus application definition for tomography, as nabu, tomwer and tomopy read it:
every frame of a scan (darks, flats, projections) in one ``detector/data`` with its
``image_key`` (0 projection, 1 flat, 2 dark) and the sample's ``rotation_angle``.

A tomography is several Recorder series (the darks with the shutter closed, the flats with the
sample out, the projections over the rotation); one virtual dataset joins their frames without
copying them, its sources named relative to the NXtomo file so the folder can move. Each frame is a
source of its own: nxtomo (and tomoscan, nabu's reader) counts a virtual dataset's frames by its
sources, so one source per Recorder file would read as three frames.

Written as ESRF's nxtomo reads it: ``image_key`` and ``image_key_control``, ``count_time`` per
frame, ``beam/incident_energy`` (keV), the detector's pixel sizes, distance and ``field_of_view``
(from the mapping: Full, or Half for a half acquisition); a value with no source is a capture
problem, never a guess.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from photonflow.standardizing.capture import SeriesCapture
from photonflow.standardizing.mapping import AxisMapping, BeamlineMapping, convert
from photonflow.standardizing.nexus import (
    HC_KEV_ANGSTROM,
    axis_values,
    detector_distance,
    group,
    incident_wavelength,
    open_new,
    write,
    write_components,
    write_entry,
    write_failures,
    write_snapshots,
)
from photonflow.standardizing.nxmx import sample_name as told_sample_name
from photonflow.standardizing.recorded import RecordedSeries

IMAGE_KEYS = {"projection": 0, "flat": 1, "dark": 2}
# NXtomo's names for the sample stage's translations, by the direction they move along
TRANSLATION_NAMES = {
    (1.0, 0.0, 0.0): "x_translation", (0.0, 1.0, 0.0): "y_translation", (0.0, 0.0, 1.0): "z_translation",
}


@dataclass(frozen=True)
class TomographyPart:
    """One series of a tomography: what its frames are, the Recorder's file, and its capture."""

    kind: str  # projection, flat or dark
    recorded: RecordedSeries
    capture: SeriesCapture


def write_nxtomo(output: Path, mapping: BeamlineMapping, capture: SeriesCapture, recorded: RecordedSeries,
                 create: Callable[[Path], h5py.File] | None = None) -> Path:
    """One series on its own: every frame a projection."""
    return write_tomography(output, mapping, [TomographyPart("projection", recorded, capture)], create)


def write_tomography(output: Path, mapping: BeamlineMapping, parts: list[TomographyPart],
                     create: Callable[[Path], h5py.File] | None = None, sample_name: str | None = None) -> Path:
    if not parts:
        raise ValueError("a tomography needs at least one series")
    first = parts[0].recorded
    shapes = {part.recorded.shape[1:] for part in parts}
    if len(shapes) != 1:
        raise ValueError(f"the series of one tomography must have one frame shape, got {sorted(shapes)}")
    frames = sum(part.recorded.frames for part in parts)
    image_key = np.concatenate([np.full(part.recorded.frames, IMAGE_KEYS[part.kind], dtype=np.int32) for part in parts])
    rotation_axis = _rotation_axis(mapping)
    missing: list[str] = []
    with open_new(output, create) as f:
        title = f"{mapping.beamline} tomography, series " + ", ".join(str(p.recorded.series_id) for p in parts)
        entry = write_entry(f, "NXtomo", title, first.start_time,
                            parts[-1].recorded.end_time or parts[-1].recorded.start_time)

        instrument = group(entry, "instrument", "NXinstrument")
        capture = parts[-1].capture  # the projections' capture describes the beamline
        write_components(entry, mapping, capture,
                         lambda component: component if component == "experiment" else f"instrument/{component}",
                         skip=("sample",))
        source = group(instrument, "source", "NXsource")
        if "name" not in source:
            write(source, "name", mapping.beamline)

        beam = group(instrument, "beam", "NXbeam")
        wavelength = incident_wavelength(capture, first)
        if wavelength is None:
            missing.append("beam/incident_energy")
        elif "incident_energy" not in beam:
            write(beam, "incident_energy", HC_KEV_ANGSTROM / wavelength, "keV")

        detector = group(instrument, "detector", "NXdetector")
        detector.create_virtual_dataset("data", _frames_layout(output, parts, frames), fillvalue=0)
        write(detector, "image_key", image_key)
        write(detector, "image_key_control", image_key)  # no alignment projections (-1) are taken
        write(detector, "count_time", _count_times(parts, missing), "s")
        for name in ("x_pixel_size", "y_pixel_size"):
            if name in first.detector:
                write(detector, name, *first.detector[name])
            else:
                missing.append(f"detector/{name}")
        distance = detector_distance(mapping, capture, first)
        if distance is None:
            missing.append("detector/distance")
        else:
            write(detector, "distance", distance, "m")
        if "field_of_view" not in detector:  # a mapping's detector/field_of_view is written with the components
            missing.append("detector/field_of_view (Full or Half: the mapping's components.detector)")

        sample = group(entry, "sample", "NXsample")
        named = sample_name or told_sample_name(capture, first)
        if named is None:
            missing.append("sample/name")
        else:
            write(sample, "name", named)
        if rotation_axis is None:
            missing.append("goniometer/<rotation axis>")
            angles = np.full(frames, np.nan)
        else:
            angles = _per_frame(parts, rotation_axis, "deg", missing)
        write(sample, "rotation_angle", angles, "deg")
        for axis in mapping.axes_of("goniometer"):
            translation = _translation_name(axis)
            if translation:
                write(sample, translation, _per_frame(parts, axis, "m", missing), "m")

        control = group(entry, "control", "NXmonitor")
        write(control, "data", _monitor(parts, missing), "mA")

        data = group(entry, "data", "NXdata")
        data.attrs["signal"] = "data"
        data["data"] = detector["data"]
        data["rotation_angle"] = sample["rotation_angle"]
        data["image_key"] = detector["image_key"]
        for index, part in enumerate(parts):
            part_group = group(entry, f"{part.kind}_series_{index}", "NXcollection")
            part_group.attrs["description"] = f"what was captured around the {part.kind} series"
            write(part_group, "recorder_file", os.path.relpath(part.recorded.path, output.parent))
            write(part_group, "series_id", part.recorded.series_id)
            write_snapshots(part_group, part.capture)
        earlier = [problem for part in parts[:-1] for problem in part.capture.problem_list()]
        write_failures(entry, capture, missing, earlier)
    return output


def _frames_layout(output: Path, parts: list[TomographyPart], frames: int) -> h5py.VirtualLayout:
    """Every frame of every part, each a source of its own, named relative to ``output``."""
    first = parts[0].recorded
    layout = h5py.VirtualLayout(shape=(frames, *first.shape[1:]), dtype=first.dtype)
    start = 0
    for part in parts:
        recorded = part.recorded
        source = h5py.VirtualSource(os.path.relpath(recorded.path, output.parent), recorded.data_path, recorded.shape)
        for index in range(recorded.frames):
            layout[start + index] = source[index]
        start += recorded.frames
    return layout


def _count_times(parts: list[TomographyPart], missing: list[str]) -> np.ndarray:
    """Each frame's counting time in seconds: the detector's per frame, else its series' setting."""
    values = []
    for part in parts:
        recorded = part.recorded
        per_frame = recorded.per_frame.get("count_time")
        if per_frame is not None and np.isfinite(per_frame[0][: recorded.frames]).all():
            values.append(np.asarray(convert(per_frame[0][: recorded.frames], per_frame[1] or "s", "s"), dtype=float))
            continue
        found = recorded.value_with_unit("count_time")
        if found is None or not isinstance(found[0], int | float):
            missing.append(f"detector/count_time ({part.kind})")
            values.append(np.full(recorded.frames, np.nan))
        else:
            values.append(np.full(recorded.frames, float(convert(float(found[0]), found[1] or "s", "s"))))
    return np.concatenate(values)


def _rotation_axis(mapping: BeamlineMapping) -> AxisMapping | None:
    rotations = [axis for axis in mapping.axes_of("goniometer") if axis.transformation_type == "rotation"]
    scanned = [axis for axis in rotations if axis.scan]
    axes = scanned or rotations
    return axes[0] if axes else None


def _translation_name(axis: AxisMapping) -> str | None:
    if axis.transformation_type != "translation":
        return None
    vector = np.asarray(axis.vector, dtype=np.float64)
    x, y, z = (float(abs(v)) for v in vector / np.linalg.norm(vector))
    return TRANSLATION_NAMES.get((x, y, z))


def _per_frame(parts: list[TomographyPart], axis: AxisMapping, unit: str, missing: list[str]) -> np.ndarray:
    """An axis' value at every frame of every part, in ``unit``."""
    values = []
    for part in parts:
        found = axis_values(part.capture, axis, part.recorded)
        if found is None or not isinstance(found[0], int | float | np.ndarray):
            missing.append(f"{axis.capture.key} ({part.kind})")
            values.append(np.full(part.recorded.frames, np.nan))
            continue
        value, value_unit = found
        converted = np.asarray(convert(np.asarray(value, dtype=np.float64), value_unit, unit))
        values.append(np.broadcast_to(converted, (part.recorded.frames,)) if converted.ndim == 0 else converted)
    return np.concatenate(values)


def _monitor(parts: list[TomographyPart], missing: list[str]) -> np.ndarray:
    """The storage ring's current at each frame (NXtomo's control/data): for normalisation."""
    values = []
    for part in parts:
        found = part.capture.value("source/current")
        if found and isinstance(found[0], int | float):
            current = convert(float(found[0]), found[1], "mA")
        else:
            if "source/current" not in missing:
                missing.append("source/current")
            current = np.nan
        values.append(np.full(part.recorded.frames, current))
    return np.concatenate(values)
