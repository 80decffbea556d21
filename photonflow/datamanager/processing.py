"""Built-in processing, the "analysis dialog": tomography dark/flat normalization, image
alignment by phase correlation (scikit-image), azimuthal integration with pyFAI from the
standardized file's own geometry.

Each function reads a standardized file, writes one new NeXus file where the caller says (the
DataManager passes a PROCESSED_DATA path) and returns its path. The output's ``/entry`` holds an
``NXprocess`` (program, version, date, the inputs named as ``NXnote`` groups, the parameters) and
``NXdata`` results with units. An existing output is never overwritten (``FilePathError``); the
file is written under a temporary name and appears under its own name only when complete.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

import photonflow
from photonflow.analysis.azimuthal import azimuthal_integrator, find_peaks
from photonflow.errors import ConfigurationError, FilePathError
from photonflow.standardizing.mapping import convert
from photonflow.standardizing.nexus import group, write
from photonflow.standardizing.standard_files import require_virtual_sources

IMAGE_KEY_PROJECTION, IMAGE_KEY_FLAT, IMAGE_KEY_DARK = 0, 1, 2
BEAM_AXIS = np.array([0.0, 0.0, 1.0])
log = logging.getLogger(__name__)


def normalize_tomography(nxtomo: Path, output: Path) -> Path:
    """Every projection of an NXtomo as ``(projection - mean dark) / (mean flat - mean dark)``,
    float32; where the flat equals the dark the result is 0 (no beam there to normalize by)."""
    nxtomo, output = Path(nxtomo), Path(output)
    _refuse_existing(output)
    with h5py.File(nxtomo, "r") as source:
        require_virtual_sources(source)
        detector = _required(source, nxtomo, "entry/instrument/detector")
        frames = _required(detector, nxtomo, "data")
        keys = np.asarray(_required(detector, nxtomo, "image_key")[()])
        darks, flats, projections = (np.flatnonzero(keys == key) for key in
                                     (IMAGE_KEY_DARK, IMAGE_KEY_FLAT, IMAGE_KEY_PROJECTION))
        for indices, what in ((flats, "flat (image_key 1)"), (projections, "projection (image_key 0)")):
            if not indices.size:
                raise ConfigurationError(f"{nxtomo}: no {what} frames to normalize")
        dark = _mean_frame(frames, darks) if darks.size else np.zeros(frames.shape[1:])
        flat = _mean_frame(frames, flats)
        beam = flat - dark
        angles = source.get("entry/sample/rotation_angle")
        angles = np.asarray(angles[()])[projections] if angles is not None and angles.shape == keys.shape else None

        def contents(entry: h5py.Group) -> None:
            _process(entry, "normalization", "dark/flat normalization of tomography projections",
                     [(nxtomo, "NXtomo: darks, flats and projections")],
                     {"darks": int(darks.size), "flats": int(flats.size), "projections": int(projections.size),
                      "formula": "(projection - mean dark) / (mean flat - mean dark); 0 where flat == dark"})
            data = group(entry, "data", "NXdata")
            data.attrs["signal"] = "data"
            normalized = data.create_dataset("data", shape=(projections.size, *frames.shape[1:]), dtype=np.float32,
                                             chunks=(1, *frames.shape[1:]))
            normalized.attrs["units"] = "dimensionless"
            normalized.attrs["long_name"] = "transmission (normalized projection)"
            for out_index, frame_index in enumerate(projections):
                projection = np.asarray(frames[int(frame_index)], dtype=np.float64)
                normalized[out_index] = np.divide(projection - dark, beam, out=np.zeros_like(beam), where=beam != 0)
            if angles is not None:
                write(data, "rotation_angle", angles.astype(np.float64), "deg")
                data.attrs["axes"] = np.array(["rotation_angle", ".", "."], dtype=object)
                data.attrs["rotation_angle_indices"] = 0
            write(data, "frame_index", projections.astype(np.int64))

        written = _write_output(output, "normalized tomography projections", contents)
    log.info("normalized %d projections of %s (%d darks, %d flats)", projections.size, nxtomo, darks.size, flats.size)
    return written


def align_images(images_file: Path, output: Path, *, dataset: str | None = None, upsample_factor: int = 10) -> Path:
    """The shift of every frame against the first, by phase correlation (scikit-image's
    ``phase_cross_correlation``, to 1/``upsample_factor`` pixel).

    ``shifts[i]`` is (rows, columns) in pixels in scikit-image's convention: the translation that
    registers frame i onto the first, e.g. ``scipy.ndimage.shift(frame_i, shifts[i])``; a frame
    made by ``np.roll(first, (dy, dx))`` gets ``(-dy, -dx)``. The frames are the file's default
    NXdata signal (or ``dataset``, a path inside the file).
    """
    from skimage import __version__ as skimage_version  # type: ignore[attr-defined]  # lazy-loaded, not in its stubs
    from skimage.registration import phase_cross_correlation

    images_file, output = Path(images_file), Path(output)
    _refuse_existing(output)
    with h5py.File(images_file, "r") as source:
        frames = _required(source, images_file, dataset) if dataset else _default_signal(source, images_file)
        if frames.ndim != 3 or frames.shape[0] < 1:
            raise ConfigurationError(
                f"{images_file}:{frames.name}: expected a stack of frames, got shape {frames.shape}")
        reference = np.asarray(frames[0], dtype=np.float64)
        shifts = np.zeros((frames.shape[0], 2))
        errors = np.zeros(frames.shape[0])
        for index in range(frames.shape[0]):
            moving = np.asarray(frames[index], dtype=np.float64)
            shift, error, _ = phase_cross_correlation(reference, moving, upsample_factor=upsample_factor)
            shifts[index], errors[index] = shift, error
        frames_path = frames.name

    def contents(entry: h5py.Group) -> None:
        _process(entry, "alignment", f"image alignment by phase correlation (scikit-image {skimage_version})",
                 [(images_file, f"frames {frames_path}")],
                 {"reference_frame": 0, "upsample_factor": upsample_factor, "dataset": frames_path,
                  "convention": "shift (rows, columns) that registers each frame onto the reference"})
        data = group(entry, "data", "NXdata")
        data.attrs["signal"] = "shift_y"
        data.attrs["auxiliary_signals"] = np.array(["shift_x", "error"], dtype=object)
        data.attrs["axes"] = np.array(["frame_number"], dtype=object)
        write(data, "frame_number", np.arange(shifts.shape[0], dtype=np.int64))
        write(data, "shift_y", shifts[:, 0], "pixel").attrs["long_name"] = "shift along rows (slow)"
        write(data, "shift_x", shifts[:, 1], "pixel").attrs["long_name"] = "shift along columns (fast)"
        write(data, "shifts", shifts, "pixel").attrs["long_name"] = "(rows, columns)"
        write(data, "error", errors, "dimensionless").attrs["long_name"] = "translation-invariant normalized RMS error"

    log.info("aligned %d frames of %s", shifts.shape[0], images_file)
    return _write_output(output, "image alignment", contents)


def integrate_azimuthally(nxmx: Path, output: Path, npt: int = 1000) -> Path:
    """I(q) of the summed frames with pyFAI, the geometry taken from the NXmx file only:
    wavelength from ``instrument/beam/incident_wavelength``, distance from the detector's
    ``depends_on`` chain (its translations along the beam), beam centre and pixel sizes from the
    NXdetector. Pixels that counted nothing over the whole series (beamstop, gaps) and the
    detector's ``pixel_mask`` are masked. The peaks of I(q) are written with the curve."""
    from pyFAI import version as pyfai_version

    nxmx, output = Path(nxmx), Path(output)
    _refuse_existing(output)
    with h5py.File(nxmx, "r") as source:
        geometry = nxmx_geometry(source, nxmx)
        frames = _default_signal(source, nxmx)
        image = _summed(frames)
        mask = image <= 0
        pixel_mask = source.get(f"{geometry['detector']}/pixel_mask")
        if pixel_mask is not None and pixel_mask.shape == image.shape:
            mask |= np.asarray(pixel_mask[()]) != 0
        frames_path, frame_count = frames.name, frames.shape[0]
    integrator = azimuthal_integrator(geometry)
    result = integrator.integrate1d(image, npt, unit="q_nm^-1", mask=mask.astype(np.int8), error_model="poisson")
    q, intensity = np.asarray(result.radial), np.asarray(result.intensity)
    sigma = np.asarray(result.sigma) if result.sigma is not None else None
    peaks = find_peaks(q, intensity)
    log.info("integrated %d frames of %s: peaks at q = %s nm^-1", frame_count, nxmx,
             ", ".join(f"{value:.4f}" for value in peaks[0]))

    def contents(entry: h5py.Group) -> None:
        process = _process(entry, "integration", f"azimuthal integration (pyFAI {pyfai_version})",
                           [(nxmx, f"NXmx, frames {frames_path} ({frame_count} summed)")],
                           {"npt": npt, "unit": "q_nm^-1", "frames_summed": frame_count,
                            "masked_pixels": int(mask.sum()), "detector": geometry["detector"]})
        parameters = process["parameters"]
        write(parameters, "wavelength", geometry["wavelength"], "m")
        write(parameters, "distance", geometry["distance"], "m")
        write(parameters, "beam_center_x", geometry["beam_center_x"], "pixel")
        write(parameters, "beam_center_y", geometry["beam_center_y"], "pixel")
        write(parameters, "x_pixel_size", geometry["x_pixel_size"], "m")
        write(parameters, "y_pixel_size", geometry["y_pixel_size"], "m")
        write(parameters, "poni", json.dumps(integrator.get_config(), default=str))
        data = group(entry, "data", "NXdata")
        data.attrs["signal"] = "I"
        data.attrs["axes"] = np.array(["q"], dtype=object)
        data.attrs["q_indices"] = 0
        write(data, "q", q, "1/nm").attrs["long_name"] = "scattering vector q"
        write(data, "I", intensity, "counts").attrs["long_name"] = "mean intensity per pixel of the summed frames"
        if sigma is not None:
            write(data, "I_errors", sigma, "counts")
        found = group(entry, "peaks", "NXdata")
        found.attrs["signal"] = "intensity"
        found.attrs["axes"] = np.array(["q"], dtype=object)
        write(found, "q", peaks[0], "1/nm")
        write(found, "intensity", peaks[1], "counts")
        write(found, "d_spacing", np.where(peaks[0] > 0, 2 * np.pi / np.maximum(peaks[0], 1e-12), np.nan) * 10.0,
              "angstrom")

    return _write_output(output, "azimuthal integration", contents)


def nxmx_geometry(f: h5py.File, path: Path) -> dict:
    """The geometry pyFAI needs, in metres and pixels, from an NXmx file."""
    entry = _required(f, path, "entry")
    beam = _required(entry, path, "instrument/beam/incident_wavelength")
    wavelength = float(convert(float(beam[()]), _units(beam, "angstrom"), "m"))
    detector = detector_group(entry, path)
    pixel = {}
    for name in ("x_pixel_size", "y_pixel_size"):
        field = _required(detector, path, name)
        pixel[name] = float(convert(float(field[()]), _units(field, "m"), "m"))
    centre = {}
    for name, size in (("beam_center_x", pixel["x_pixel_size"]), ("beam_center_y", pixel["y_pixel_size"])):
        field = _required(detector, path, name)
        unit = _units(field, "pixel")
        value = float(field[()])
        centre[name] = value if unit in ("pixel", "pixels", "") else float(convert(value, unit, "m")) / size
    distance = _distance_along_beam(f, detector)
    if distance is None:
        field = _required(detector, path, "distance")
        distance = float(convert(float(field[()]), _units(field, "m"), "m"))
    if not (wavelength > 0 and distance > 0):
        raise ConfigurationError(f"{path}: wavelength {wavelength} m and distance {distance} m must be positive")
    return {"wavelength": wavelength, "distance": distance, "detector": detector.name, **pixel, **centre}


def _distance_along_beam(f: h5py.File, detector: h5py.Group) -> float | None:
    """The sum of the translations along the beam on the detector's ``depends_on`` chain (m)."""
    if "depends_on" not in detector:
        return None
    current, total, found, seen = _text(detector["depends_on"][()]), 0.0, False, set()
    while current not in (".", "") and current not in seen:
        seen.add(current)
        if current not in f:
            raise ConfigurationError(f"{f.filename}: {detector.name}'s depends_on chain points to {current}, "
                                     "which does not exist")
        axis = f[current]
        vector = np.asarray(axis.attrs.get("vector", (0, 0, 0)), dtype=np.float64)
        norm = np.linalg.norm(vector)
        if _text(axis.attrs.get("transformation_type", "")) == "translation" and norm > 0 \
                and np.allclose(vector / norm, BEAM_AXIS):
            value = np.asarray(axis[()], dtype=np.float64)
            total += float(convert(float(value.ravel()[0]) if value.size else 0.0, _units(axis, "m"), "m"))
            found = True
        current = _text(axis.attrs.get("depends_on", "."))
    return total if found else None


def detector_group(entry: h5py.Group, path: Path) -> h5py.Group:
    """The entry's NXdetector under ``instrument``, found by its NX_class, whatever its name."""
    instrument = _required(entry, path, "instrument")
    for name in instrument:
        item = instrument[name]
        if isinstance(item, h5py.Group) and _text(item.attrs.get("NX_class", "")) == "NXdetector":
            return item
    raise ConfigurationError(f"{path}: /entry/instrument has no NXdetector")


def _default_signal(f: h5py.File, path: Path) -> h5py.Dataset:
    """The frames: the NeXus default NXdata's signal, else /entry/data/data."""
    entry_name = _text(f.attrs.get("default", "entry")) or "entry"
    entry = f.get(entry_name) or f.get("entry")
    if entry is not None:
        data = entry.get(_text(entry.attrs.get("default", "data")) or "data")
        if isinstance(data, h5py.Group):
            signal = data.get(_text(data.attrs.get("signal", "data")) or "data")
            if isinstance(signal, h5py.Dataset):
                return signal
    return _required(f, path, "entry/data/data")


def _summed(frames: h5py.Dataset, chunk: int = 16) -> np.ndarray:
    if frames.ndim == 2:
        return np.asarray(frames[()], dtype=np.float64)
    total = np.zeros(frames.shape[1:], dtype=np.float64)
    for start in range(0, frames.shape[0], chunk):
        total += np.asarray(frames[start:start + chunk], dtype=np.float64).sum(axis=0)
    return total


def _mean_frame(frames: h5py.Dataset, indices: np.ndarray) -> np.ndarray:
    total = np.zeros(frames.shape[1:], dtype=np.float64)
    for index in indices:
        total += np.asarray(frames[int(index)], dtype=np.float64)
    return total / len(indices)


def _process(entry: h5py.Group, name: str, program: str, inputs: list[tuple[Path, str]],
             parameters: dict) -> h5py.Group:
    """The NXprocess: what made this file, when, from which inputs, with which parameters."""
    process = group(entry, name, "NXprocess")
    write(process, "program", f"photonflow {program}")
    write(process, "version", photonflow.__version__)
    write(process, "date", _now())
    write(process, "sequence_index", 1)
    for index, (path, description) in enumerate(inputs):
        note = group(process, f"input_{index}", "NXnote")
        write(note, "type", "application/x-hdf5")
        write(note, "file_name", str(Path(path).resolve()))
        write(note, "description", f"input: {description}")
    settings = group(process, "parameters", "NXparameters")
    for key, value in parameters.items():
        write(settings, key, value)
    return process


def _write_output(output: Path, title: str, contents: Callable[[h5py.Group], None]) -> Path:
    """Write a new file through ``contents(entry)`` under a temporary name, then link it to
    ``output`` (which fails, rather than overwrites, if ``output`` appeared meanwhile)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with h5py.File(partial, "w-") as f:
            f.attrs["default"] = "entry"
            f.attrs["creator"] = f"photonflow {photonflow.__version__} DataManager processing"
            f.attrs["NeXus_version"] = "v2024.02"
            f.attrs["HDF5_Version"] = h5py.version.hdf5_version
            f.attrs["file_time"] = _now()
            entry = group(f, "entry", "NXentry")
            entry.attrs["default"] = "data"
            write(entry, "title", title)
            write(entry, "start_time", _now())
            contents(entry)
            write(entry, "end_time", _now())
        try:
            os.link(partial, output)
        except FileExistsError as error:
            raise FilePathError(f"{output} already exists; processing never overwrites a file") from error
    finally:
        partial.unlink(missing_ok=True)
    return output


def _refuse_existing(output: Path) -> None:
    if output.exists():
        raise FilePathError(f"{output} already exists; processing never overwrites a file")


def _required(parent: h5py.Group, path: Path, name: str):
    try:
        item = parent.get(name)
    except (KeyError, OSError) as error:  # an external link whose file is missing
        raise ConfigurationError(f"{path}: {parent.name.rstrip('/')}/{name} cannot be read: {error}") from error
    if item is None:
        raise ConfigurationError(f"{path}: {parent.name.rstrip('/')}/{name} is missing")
    return item


def _units(field: h5py.Dataset, default: str) -> str:
    unit = _text(field.attrs.get("units", default))
    return {"Å": "angstrom", "A": "angstrom", "pixels": "pixel"}.get(unit, unit)


def _text(value) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.decode() if isinstance(value, bytes) else str(value)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
