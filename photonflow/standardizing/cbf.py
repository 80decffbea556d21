"""A PILATUS CBF series (a folder of ``*.cbf`` images with miniCBF headers, as camserver writes
them) turned into an NXmx file: the MANACÁ case of LNLS' Assonant talk (issue 10).

The frames go once into a photonflow series file beside the output (``<stem>_data.h5``: the
layout the Recorder writes, one frame per chunk, bitshuffle+LZ4), with each image's header text
kept verbatim; the NXmx file is then written by the Standardizer's own writer over that file,
with the beamline's values (wavelength, the rotation, the detector distance) taken from the
headers instead of Tango: the pixel mask from the images' -1 (module gap) and -2 (bad pixel)
pixels, the trusted range from Count_cutoff, the header's goniometer angles, flux, filter
transmission and polarization as fields with units. Only flat PILATUS detectors (a grid of
modules in one plane) are written; a curved one (the PILATUS 12M) is refused, not flattened.
Nothing here imports Tango.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from photonflow.drivers.camserver import module_gaps
from photonflow.drivers.minicbf import header_time, parse_header, pixel_mask
from photonflow.errors import ConfigurationError, FilePathError
from photonflow.recording.nexus_writer import (
    LIBVER,
    TEXT,
    FrameStack,
    nexus_time,
    write_detector_description,
)
from photonflow.standardizing.capture import SeriesCapture
from photonflow.standardizing.mapping import AxisMapping, BeamlineMapping, Capture, FieldMapping
from photonflow.standardizing.nexus import group, write
from photonflow.standardizing.nxmx import write_nxmx
from photonflow.standardizing.recorded import RecordedSeries, read_recorded_series
from photonflow.stream import bslz4

DETECTOR = "pilatus"  # the NXdetector group of the series file
HEADER_KEY = "_array_data.header_contents"
SENSOR_MATERIALS = {"silicon": "Si", "cdte": "CdTe", "gaas": "GaAs"}
ANGLE_TOLERANCE = 1e-3  # deg: camserver prints Start_angle with 4 decimals
# The header's goniometer angles besides the oscillation: (name in the series file, NXmx field).
# A miniCBF header gives no axis vectors, so they are kept as values, not chained as axes.
HEADER_ANGLES = (("chi_start", "chi"), ("chi_increment", "chi_increment"), ("phi_start", "phi"),
                 ("phi_increment", "phi_increment"), ("kappa_start", "kappa"),
                 ("two_theta_start", "two_theta"))


@dataclass
class CbfSeries:
    """What the headers of a series say, checked image against image."""

    files: list[Path]
    shape: tuple[int, int] = (0, 0)
    headers: list[str] = field(default_factory=list)  # each image's miniCBF header, verbatim
    mask: np.ndarray | None = None  # NeXus pixel_mask: -1 (gap) and -2 (bad) pixels of any image
    imgcif: bool = False  # the images also carry imgCIF geometry (a "full" CBF), which is not read
    first: dict = field(default_factory=dict)  # the first image's header in NXdetector names
    start_time: float | None = None
    end_time: float | None = None


def cbf_files(directory: str | Path) -> list[Path]:
    """The series' images in name order; anything else in the folder is refused (hidden files,
    such as camserver's ``.name.cbf.part``, and sub-folders are passed over)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigurationError(f"{directory} is not a folder of CBF images")
    files: list[Path] = []
    strangers: list[Path] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        (files if path.suffix.lower() == ".cbf" else strangers).append(path)
    if strangers:
        raise ConfigurationError(f"{strangers[0]} is not a CBF file: the folder must hold one series of *.cbf "
                                 "images and nothing else")
    if not files:
        raise ConfigurationError(f"{directory} holds no CBF images (*.cbf)")
    return files


def _open(path: Path):
    import fabio  # here: only CBF series need it

    try:
        image = fabio.open(str(path))
    except Exception as error:  # noqa: BLE001 - fabio raises anything from OSError to AttributeError on a wrong file
        raise ConfigurationError(f"{path} is not a readable CBF image ({type(error).__name__}: {error})") from None
    text = image.header.get(HEADER_KEY) if type(image).__name__ == "CbfImage" else None
    if not text:
        raise ConfigurationError(f"{path} is not a miniCBF image: it has no {HEADER_KEY} (a PILATUS header)")
    return image, text


def _check_flat(path: Path, shape: tuple[int, int], header: dict) -> None:
    """A flat PILATUS: its image a grid of modules. A PILATUS 12M's 24 modules sit on a cylinder
    (dxtbx builds them as 24 panels at their own angles): one flat panel would put every spot
    but the centre's at a wrong place, so it is refused."""
    model = str(header.get("model") or header.get("description") or "")
    if "12M" in model.upper().replace(" ", ""):
        raise ConfigurationError(f"{path}: a {model} is curved (24 modules on a cylinder); photonflow standardize "
                                 "cbf writes flat detectors only and does not support it: read its CBF files with "
                                 "dxtbx/DIALS directly")
    try:
        module_gaps(shape)
    except ConfigurationError as error:
        raise ConfigurationError(f"{path}: {error}: not a flat PILATUS detector, which is all photonflow "
                                 "standardize cbf supports") from None


def _check(series: CbfSeries, number: int, path: Path, shape: tuple[int, int], header: dict) -> None:
    """The same image size, and the angle stepping by the same increment, as the first image."""
    if number == 0:
        for key in ("start_angle", "angle_increment"):
            if key not in header:
                raise ConfigurationError(f"{path}: the header has no {key.title()}: not a rotation series")
        _check_flat(path, shape, header)
        return
    if shape != series.shape:
        raise ConfigurationError(f"{path}: the image is {shape[1]} x {shape[0]} pixels but {series.files[0].name} "
                                 f"is {series.shape[1]} x {series.shape[0]}: not one series")
    first = series.first
    increment = header.get("angle_increment")
    if increment is None or not math.isclose(increment, first["angle_increment"], abs_tol=ANGLE_TOLERANCE):
        raise ConfigurationError(f"{path}: Angle_increment {increment} deg differs from {first['angle_increment']} "
                                 f"deg of {series.files[0].name}")
    expected = first["start_angle"] + number * first["angle_increment"]
    start = header.get("start_angle")
    if start is None or not math.isclose(start, expected, abs_tol=ANGLE_TOLERANCE):
        raise ConfigurationError(f"{path}: Start_angle {start} deg, expected {expected:.4f} deg (image {number} of "
                                 f"a series from {first['start_angle']} deg by {first['angle_increment']} deg): "
                                 "an image is missing or out of order")


def write_series_file(files: list[Path], path: Path) -> CbfSeries:
    """Read every image, check it against the first, and write the frames and headers to the new
    series file ``path`` (never overwritten); on any error the file is removed."""
    import h5py

    series = CbfSeries(files)
    f = h5py.File(path, "w-", libver=LIBVER)
    try:
        with f:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            instrument = entry.create_group("instrument")
            instrument.attrs["NX_class"] = "NXinstrument"
            detector = instrument.create_group(DETECTOR)
            detector.attrs["NX_class"] = "NXdetector"
            stack = None
            for number, file in enumerate(files):
                image, text = _open(file)
                frame = np.ascontiguousarray(image.data, dtype=np.int32)
                header = parse_header(image.pilatus_headers)
                _check(series, number, file, frame.shape, header)
                if stack is None:
                    series.shape, series.first = frame.shape, header
                    series.start_time = header_time(image)
                    series.imgcif = any(key.startswith("_diffrn") for key in image.header)
                    stack = FrameStack(detector, "data", frame.shape, np.dtype(np.int32), "bslz4")
                stack.write(number, bslz4.compress(frame))
                flagged = pixel_mask(frame)
                series.mask = flagged if series.mask is None else series.mask | flagged
                series.headers.append(text)
                taken = header_time(image)
                if taken is not None:
                    series.end_time = taken + float(header.get("count_time", 0.0))
            if stack is None:
                raise ConfigurationError(f"no CBF images to write into {path}")
            stack.trim()
            _describe(f, series)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return series


def _describe(f, series: CbfSeries) -> None:
    """The series file's description: as the Recorder writes it, the headers' values as the
    detector's, and each image's header text."""
    f.attrs["default"] = "entry"
    f.attrs["creator"] = "photonflow standardize cbf"
    entry = f["entry"]
    entry.attrs["default"] = "data"
    start, end = (_iso(t) for t in (series.start_time, series.end_time or series.start_time))
    entry.create_dataset("start_time", data=start, dtype=TEXT)
    entry.create_dataset("end_time", data=end, dtype=TEXT)
    entry["series_id"] = 1
    detector = entry["instrument"][DETECTOR]
    first = dict(series.first)
    material = str(first.get("sensor_material", ""))
    first["sensor_material"] = SENSOR_MATERIALS.get(material.lower(), material) or None
    first["description"] = first.pop("model", None) or first.get("description")
    first["omega_start"] = first.pop("start_angle")
    first["omega_increment"] = first.pop("angle_increment")
    first["pixel_mask"] = series.mask
    write_detector_description(detector, first)
    headers = detector.create_dataset("cbf_headers", data=np.asarray(series.headers, dtype=object), dtype=TEXT)
    headers.attrs["description"] = "each image's miniCBF header (_array_data.header_contents), verbatim"
    sources = detector.create_dataset("cbf_files", data=np.asarray([p.name for p in series.files], dtype=object),
                                      dtype=TEXT)
    sources.attrs["description"] = "the CBF file each frame was read from"
    data = entry.create_group("data")
    data.attrs["NX_class"] = "NXdata"
    data.attrs["signal"] = "data"
    data["data"] = detector["data"]


def _iso(unix_time: float | None) -> str:
    moment = datetime.now(UTC) if unix_time is None else datetime.fromtimestamp(unix_time, UTC)
    return nexus_time(moment.isoformat())


def _fixed(key: str, value, unit: str | None) -> Capture:
    return Capture(key, None, None, value, unit, frozenset())


def cbf_mapping(recorded: RecordedSeries, beamline: str | None = None, sample: str | None = None) -> BeamlineMapping:
    """The beamline as the headers describe it: the wavelength, the rotation (omega, about -x,
    stepping per frame) and the detector's distance along the beam."""
    fields = []
    wavelength = recorded.value("incident_wavelength")
    if wavelength:
        fields.append(FieldMapping("monochromator", "wavelength",
                                   _fixed("monochromator/wavelength", float(wavelength) * 1e10, "angstrom")))
    if sample:
        fields.append(FieldMapping("sample", "name", Capture("sample/name", None, None, sample, None, frozenset(),
                                                             origin="operator: photonflow standardize cbf --sample")))
    transmission = recorded.value("attenuator_transmission")
    if transmission is not None:
        fields.append(FieldMapping("attenuator", "attenuator_transmission",
                                   _fixed("attenuator/attenuator_transmission", float(transmission), None)))
    flux = recorded.value("flux")
    if flux:  # camserver prints Flux 0 when nobody told it the flux: not a measured zero
        fields.append(FieldMapping("beam", "total_flux", _fixed("beam/total_flux", float(flux), "Hz")))
    axes = [AxisMapping("goniometer", "omega", "rotation", (-1.0, 0.0, 0.0), ".",
                        _fixed("goniometer/omega", float(recorded.value("omega_start")), "deg"), scan=True)]
    distance = recorded.value("distance")
    if distance is not None:
        axes.append(AxisMapping("detector_position", "det_z", "translation", (0.0, 0.0, 1.0), ".",
                                _fixed("detector_position/det_z", float(distance), "m")))
    name = beamline or "unknown"
    return BeamlineMapping(f"{recorded.path} (CBF headers)", name, name, "NXmx", tuple(fields), tuple(axes))


def _write_header_values(output: Path, recorded: RecordedSeries) -> None:
    """What NXmx has no axis or component for in the mapping: the header's polarization as the
    beam's Stokes vector, and its other goniometer angles (no vectors: not in the chain)."""
    import h5py

    with h5py.File(output, "r+") as f:
        polarization = recorded.value("polarization")
        if polarization is not None:
            # the fraction p of the intensity polarized in the horizontal (x) plane: S = (1, 2p - 1, 0, 0)
            write(f["entry/instrument/beam"], "incident_polarization_stokes",
                  np.asarray([1.0, 2.0 * float(polarization) - 1.0, 0.0, 0.0]))
        angles = [(name, recorded.value(key)) for key, name in HEADER_ANGLES if recorded.value(key) is not None]
        if angles:
            goniometer = group(f["entry/sample"], "goniometer_angles", "NXcollection")
            goniometer.attrs["description"] = ("the CBF header's goniometer angles besides the oscillation axis "
                                               "(omega); a miniCBF header names no axis vectors, so they are not in "
                                               "the depends_on chain")
            for name, value in angles:
                write(goniometer, name, float(value), "deg")


class _NoDevices:
    """Every value of a CBF series comes from its headers: no attribute is ever read."""

    def read(self, device: str, attribute: str) -> tuple[object, float]:
        raise ConfigurationError(f"a CBF series reads no Tango attribute ({device}/{attribute})")


def standardize_cbf(directory: str | Path, output: str | Path, beamline: str | None = None,
                    sample: str | None = None) -> tuple[Path, Path]:
    """The NXmx file ``output`` of the CBF series in ``directory``, and its series file
    ``<output stem>_data.h5`` beside it; returns both paths. Neither may exist already."""
    output = Path(output).absolute()
    data_path = output.with_name(f"{output.stem}_data.h5")
    for path in (output, data_path):
        if path.exists():
            raise FilePathError(f"{path} already exists: photonflow never overwrites a file")
    if not output.parent.is_dir():
        raise ConfigurationError(f"{output.parent} does not exist: make the output's folder first")
    series = write_series_file(cbf_files(directory), data_path)
    try:
        recorded = read_recorded_series(data_path)
        mapping = cbf_mapping(recorded, beamline, sample)
        capture = SeriesCapture(mapping, _NoDevices(), clock=lambda: series.start_time or 0.0)
        capture.snapshot("pre")
        capture.finish_during()
        capture.snapshot("post")
        if series.imgcif:
            capture.problems["cbf/imgcif"] = (
                "the CBF images also carry imgCIF geometry (_diffrn_* categories: axes, distance, beam centre), "
                "which dxtbx's CBF reader takes instead of the miniCBF header; this file's geometry is the miniCBF "
                "header's",)
        write_nxmx(output, mapping, capture, recorded)
        _write_header_values(output, recorded)
    except BaseException:
        output.unlink(missing_ok=True)
        data_path.unlink(missing_ok=True)
        raise
    return output, data_path
