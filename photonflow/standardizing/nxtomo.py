"""NXtomo, the NeXus application definition for tomography, as nabu, tomwer and tomopy read it:
every frame of a scan (darks, flats, projections) in one ``detector/data`` with its
``image_key`` (0 projection, 1 flat, 2 dark) and the sample's ``rotation_angle``.

A tomography is several Recorder series (the darks with the shutter closed, the flats with the
sample out, the projections over the rotation); one virtual dataset joins their frames without
copying them, its sources named relative to the NXtomo file so the folder can move.
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
    axis_values,
    detector_distance,
    group,
    open_new,
    write,
    write_components,
    write_entry,
    write_failures,
    write_snapshots,
)
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

        detector = group(instrument, "detector", "NXdetector")
        layout = h5py.VirtualLayout(shape=(frames, *first.shape[1:]), dtype=first.dtype)
        start = 0
        for part in parts:
            recorded = part.recorded
            relative = os.path.relpath(recorded.path, output.parent)
            layout[start:start + recorded.frames] = h5py.VirtualSource(relative, recorded.data_path, recorded.shape)
            start += recorded.frames
        detector.create_virtual_dataset("data", layout, fillvalue=0)
        write(detector, "image_key", image_key)
        for name in ("x_pixel_size", "y_pixel_size", "count_time"):
            if name in first.detector:
                write(detector, name, *first.detector[name])
        distance = detector_distance(mapping, capture, first)
        if distance is not None:
            write(detector, "distance", distance, "m")

        sample = group(entry, "sample", "NXsample")
        found = capture.value("sample/name")
        write(sample, "name", sample_name or (str(found[0]) if found else "unknown"))
        if rotation_axis is None:
            missing.append("goniometer/<rotation axis>")
            angles = np.zeros(frames)
        else:
            angles = _per_frame(parts, rotation_axis, "deg", missing)
        write(sample, "rotation_angle", angles, "deg")
        for axis in mapping.axes_of("goniometer"):
            translation = _translation_name(axis)
            if translation:
                write(sample, translation, _per_frame(parts, axis, "m", missing), "m")

        control = group(entry, "control", "NXmonitor")
        write(control, "data", _monitor(parts), "mA")

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


def _monitor(parts: list[TomographyPart]) -> np.ndarray:
    """The storage ring's current at each frame (NXtomo's control/data): for normalisation."""
    values = []
    for part in parts:
        found = part.capture.value("source/current")
        current = convert(float(found[0]), found[1], "mA") if found and isinstance(found[0], int | float) else np.nan
        values.append(np.full(part.recorded.frames, current))
    return np.concatenate(values)
