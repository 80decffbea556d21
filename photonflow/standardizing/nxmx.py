"""NXmx, the NeXus application definition for macromolecular crystallography (and any
area-detector diffraction): what DIALS, XDS (via durin), pyFAI and Diamond's tools read.

Geometry follows the NXmx conventions (McStas coordinates, z along the beam, y up): the fast
pixel direction is -x and the slow one -y, as a detector seen from the sample; the module's
corner sits ``beam_center × pixel_size`` from the point where the beam meets the detector, and
the detector hangs from its position axes (``det_z`` along the beam), so a reader derives
distance and beam centre from the ``depends_on`` chain alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from photonflow.standardizing.angles import achieved_frame_time
from photonflow.standardizing.capture import SeriesCapture
from photonflow.standardizing.mapping import BeamlineMapping, convert
from photonflow.standardizing.nexus import (
    detector_distance,
    group,
    incident_wavelength,
    link_frames,
    open_new,
    transformation,
    write,
    write_axes,
    write_components,
    write_entry,
    write_failures,
    write_snapshots,
)
from photonflow.standardizing.recorded import RecordedSeries

PLACES = {"source": "source", "sample": "sample", "experiment": "experiment"}  # the rest under /entry/instrument


def write_nxmx(output: Path, mapping: BeamlineMapping, capture: SeriesCapture, recorded: RecordedSeries,
               create: Callable[[Path], h5py.File] | None = None) -> Path:
    """Write the NXmx file ``output`` over ``recorded``'s frames; returns its path."""
    missing: list[str] = []
    with open_new(output, create) as f:
        entry = write_entry(f, "NXmx", f"{mapping.beamline} series {recorded.series_id}", recorded.start_time,
                            recorded.end_time)
        write(entry, "end_time_estimated", recorded.end_time or recorded.start_time)

        source = group(entry, "source", "NXsource")
        found = capture.value("source/name")
        write(source, "name", str(found[0]) if found else mapping.beamline)
        instrument = group(entry, "instrument", "NXinstrument")
        write(instrument, "name", mapping.instrument)
        write_components(entry, mapping, capture, lambda component: PLACES.get(component, f"instrument/{component}"))

        beam = group(instrument, "beam", "NXbeam")
        wavelength = incident_wavelength(capture, recorded)
        if wavelength is None:
            missing.append("beam/incident_wavelength")
        elif "incident_wavelength" not in beam:
            write(beam, "incident_wavelength", wavelength, "angstrom")

        detector = _write_detector(instrument, output, mapping, capture, recorded, missing)
        detector_group = group(instrument, "detector_group", "NXdetector_group")
        write(detector_group, "group_names", np.asarray([detector.name.rsplit("/", 1)[-1]], dtype=object))
        write(detector_group, "group_index", np.asarray([1], dtype=np.int32))
        write(detector_group, "group_parent", np.asarray([-1], dtype=np.int32))

        sample = group(entry, "sample", "NXsample")
        if "name" not in sample:
            name = sample_name(capture, recorded)
            if name is None:
                missing.append("sample/name")
            else:
                write(sample, "name", name)
        write(sample, "depends_on", write_axes(sample, mapping, capture, "goniometer", recorded, missing))

        data = group(entry, "data", "NXdata")
        data.attrs["signal"] = "data"
        link_frames(data, "data", output, recorded)
        write_snapshots(entry, capture)
        write_failures(entry, capture, missing)
    return output


def _write_detector(instrument: h5py.Group, output: Path, mapping: BeamlineMapping, capture: SeriesCapture,
                    recorded: RecordedSeries, missing: list[str]) -> h5py.Group:
    detector = group(instrument, recorded.detector_name, "NXdetector")
    requested = _seconds(recorded.detector.get("frame_time"))
    achieved = achieved_frame_time(recorded.frame_times[: recorded.frames], requested)
    capture.problems["detector/frame_time"] = (achieved[1],) if achieved else ()
    for name in _COPIED:
        found = recorded.value_with_unit(name)
        if found is None or found[0] is None:
            if name in _REQUIRED:
                missing.append(f"detector/{name}")
            continue
        value, unit = found
        if name == "frame_time" and achieved:  # the time the frames took, not the one asked for
            value, unit = achieved[0], "s"
        write(detector, name, value, unit)
        if recorded.varies(name):
            capture.problems[f"detector/{name}"] = (
                f"detector/{name}: changed by {recorded.varies(name):g} during the series; "
                "the file gives the first frame's",)
    if "bit_depth_readout" not in detector and recorded.dtype.kind in "iu":
        # no readout depth from the detector: what its images hold, so readers know the range
        write(detector, "bit_depth_readout", recorded.dtype.itemsize * 8)
    link_frames(detector, "data", output, recorded)

    rows, columns = recorded.shape[1], recorded.shape[2]
    x_pixel = float(recorded.value("x_pixel_size", 0.0) or 0.0)
    y_pixel = float(recorded.value("y_pixel_size", x_pixel) or x_pixel)
    centre_x = recorded.value("beam_center_x")
    centre_y = recorded.value("beam_center_y")
    if centre_x is None or centre_y is None:
        # never the frame's middle: the geometry below then starts at the beam, and says so
        missing.append("detector/beam_center_x, beam_center_y (the geometry's origin is the first pixel)")
        centre_x = centre_y = 0.0
    else:
        for name, value in (("beam_center_x", centre_x), ("beam_center_y", centre_y)):
            write(detector, name, float(value), "pixel")
            if recorded.varies(name):
                capture.problems[f"detector/{name}"] = (
                    f"detector/{name}: moved by {recorded.varies(name):g} pixel during the series; "
                    "the file gives the first frame's",)

    distance = detector_distance(mapping, capture, recorded)
    if distance is None:
        missing.append("detector/distance")
    else:
        write(detector, "distance", distance, "m")
    head = write_axes(detector, mapping, capture, "detector_position", recorded, missing)
    if head == "." and distance is not None:  # no position axes mapped: the detector's own distance
        transformations = group(detector, "transformations", "NXtransformations")
        head = transformation(transformations, "det_z", distance, "m", "translation", (0, 0, 1), ".")
    write(detector, "depends_on", head)

    module = group(detector, "module", "NXdetector_module")
    write(module, "data_origin", np.asarray([0, 0], dtype=np.int32))
    write(module, "data_size", np.asarray([rows, columns], dtype=np.int32))
    # The first pixel's corner, from where the beam meets the detector. NXmx would allow it as a
    # module_offset transformation, which pynxtools' validator wrongly reports (it reads "_offset"
    # as a suffix of a field "module"); the pixel directions' own offset says the same.
    corner = (centre_x * x_pixel, centre_y * y_pixel, 0.0)
    transformation(module, "fast_pixel_direction", x_pixel, "m", "translation", (-1, 0, 0), head, corner)
    transformation(module, "slow_pixel_direction", y_pixel, "m", "translation", (0, -1, 0), head, corner)
    return detector


def _seconds(found: tuple[object, str | None] | None) -> float | None:
    if found is None or not isinstance(found[0], int | float):
        return None
    return float(convert(found[0], found[1] or "s", "s"))


_REQUIRED = ("sensor_material", "sensor_thickness", "x_pixel_size", "y_pixel_size")  # NXmx's NXdetector
_COPIED = (
    "description", "serial_number", "type", "x_pixel_size", "y_pixel_size", "sensor_material",
    "sensor_thickness", "bit_depth_readout", "count_time", "frame_time", "dead_time", "detector_readout_time",
    "threshold_energy", "saturation_value", "underload_value", "pixel_mask", "flatfield", "gain_setting",
)


def sample_name(capture: SeriesCapture, recorded: RecordedSeries) -> str | None:
    """The sample as the experiment names it (the DataManager's Sample), else as the detector's
    stream was told (DECTRIS ``user_data``); None when nobody said."""
    found = capture.value("experiment/sample")
    if found is not None and str(found[0]).strip():
        return str(found[0]).strip()
    told = recorded.value("sample_name")
    return str(told).strip() if told is not None and str(told).strip() else None
