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
from photonflow.standardizing.detector_header import (
    GONIOMETER_AXES,
    UserData,
    bit_depths,
    header_angles,
    read_user_data,
)
from photonflow.standardizing.mapping import BeamlineMapping, convert
from photonflow.standardizing.nexus import (
    distance_and_source,
    group,
    link_frames,
    link_live_analysis,
    open_new,
    transformation,
    wavelength_and_source,
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
    user_data = read_user_data(recorded)
    if user_data is not None:
        capture.problems["detector/user_data"] = user_data.problems
    with open_new(output, create) as f:
        entry = write_entry(f, "NXmx", f"{mapping.beamline} series {recorded.series_id}", recorded.start_time,
                            recorded.end_time)
        write(entry, "end_time_estimated", recorded.end_time or recorded.start_time)

        source = group(entry, "source", "NXsource")
        found = capture.value("source/name")
        if found:
            write(source, "name", str(found[0]), source=mapping.source_of(mapping.capture_of("source/name")))
        else:
            write(source, "name", mapping.beamline, source=mapping.fixed_source("beamline"))
        instrument = group(entry, "instrument", "NXinstrument")
        write(instrument, "name", mapping.instrument)
        write_components(entry, mapping, capture, lambda component: PLACES.get(component, f"instrument/{component}"))

        beam = group(instrument, "beam", "NXbeam")
        wavelength = wavelength_and_source(capture, recorded)
        if wavelength is None:
            missing.append("beam/incident_wavelength")
        elif "incident_wavelength" not in beam:
            write(beam, "incident_wavelength", wavelength[0], "angstrom", wavelength[1])

        detector = _write_detector(instrument, output, mapping, capture, recorded, missing)
        detector_group = group(instrument, "detector_group", "NXdetector_group")
        write(detector_group, "group_names", np.asarray([detector.name.rsplit("/", 1)[-1]], dtype=object))
        write(detector_group, "group_index", np.asarray([1], dtype=np.int32))
        write(detector_group, "group_parent", np.asarray([-1], dtype=np.int32))

        sample = group(entry, "sample", "NXsample")
        if "name" not in sample:
            name = named_sample(capture, user_data)
            if name is None:
                missing.append("sample/name")
            else:
                write(sample, "name", *name)
        write(sample, "depends_on", write_axes(sample, mapping, capture, "goniometer", recorded, missing))
        _write_header_goniometer(sample, mapping, capture, recorded, user_data)
        if user_data is not None:
            _write_user_data(sample, detector, user_data)

        data = group(entry, "data", "NXdata")
        data.attrs["signal"] = "data"
        link_frames(data, "data", output, recorded)
        unmerged: list[str] = []
        link_live_analysis(entry, output, recorded, unmerged)
        capture.problems["live_analysis"] = tuple(unmerged)
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
        source = recorded.origin(name)
        if name == "frame_time" and achieved:  # the time the frames took, not the one asked for
            value, unit, source = achieved[0], "s", "the frames' times in the Recorder's file"
        write(detector, name, value, unit, source)
        if recorded.varies(name):
            capture.problems[f"detector/{name}"] = (
                f"detector/{name}: changed by {recorded.varies(name):g} during the series; "
                "the file gives the first frame's",)
    depths = bit_depths(recorded)
    if depths is not None:
        capture.problems["detector/bit_depth"] = depths.problems
        write(detector, "bit_depth_readout", depths.readout, source=depths.readout_source)
        specific = group(detector, "detector_specific", "NXcollection")
        write(specific, "bit_depth_image", depths.image, source=depths.image_source)
        if depths.header_readout is not None:  # the electronics' own, which does not describe the frames
            write(specific, "bit_depth_readout", depths.header_readout,
                  source=recorded.origin("bit_depth_readout"))
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
            write(detector, name, float(value), "pixel", recorded.origin(name))
            if recorded.varies(name):
                capture.problems[f"detector/{name}"] = (
                    f"detector/{name}: moved by {recorded.varies(name):g} pixel during the series; "
                    "the file gives the first frame's",)

    found_distance = distance_and_source(mapping, capture, recorded)
    if found_distance is None:
        missing.append("detector/distance")
    else:
        write(detector, "distance", found_distance[0], "m", found_distance[1])
    head = write_axes(detector, mapping, capture, "detector_position", recorded, missing)
    if head == "." and found_distance is not None:  # no position axes mapped: the detector's own distance
        transformations = group(detector, "transformations", "NXtransformations")
        head = transformation(transformations, "det_z", found_distance[0], "m", "translation", (0, 0, 1), ".",
                              source=found_distance[1])
    write(detector, "depends_on", head)

    module = group(detector, "module", "NXdetector_module")
    frames = "the frames' shape in the Recorder's file"
    write(module, "data_origin", np.asarray([0, 0], dtype=np.int32), source=frames)
    write(module, "data_size", np.asarray([rows, columns], dtype=np.int32), source=frames)
    # The first pixel's corner, from where the beam meets the detector. NXmx would allow it as a
    # module_offset transformation, which pynxtools' validator wrongly reports (it reads "_offset"
    # as a suffix of a field "module"); the pixel directions' own offset says the same.
    corner = (centre_x * x_pixel, centre_y * y_pixel, 0.0)
    for name, size, vector in (("fast_pixel_direction", x_pixel, (-1, 0, 0)),
                               ("slow_pixel_direction", y_pixel, (0, -1, 0))):
        pixel = "x_pixel_size" if name.startswith("fast") else "y_pixel_size"
        transformation(module, name, size, "m", "translation", vector, head, corner,
                       source=f"{recorded.origin(pixel)}; offset from beam_center_x, beam_center_y")
    return detector


def _seconds(found: tuple[object, str | None] | None) -> float | None:
    if found is None or not isinstance(found[0], int | float):
        return None
    return float(convert(found[0], found[1] or "s", "s"))


_REQUIRED = ("sensor_material", "sensor_thickness", "x_pixel_size", "y_pixel_size")  # NXmx's NXdetector
_COPIED = (
    "description", "serial_number", "type", "x_pixel_size", "y_pixel_size", "sensor_material",
    "sensor_thickness", "count_time", "frame_time", "dead_time", "detector_readout_time",
    "threshold_energy", "saturation_value", "underload_value", "pixel_mask", "flatfield", "gain_setting",
)


def sample_name(capture: SeriesCapture, recorded: RecordedSeries) -> str | None:
    """The sample as the experiment names it (the DataManager's Sample), else as the detector's
    stream was told (DECTRIS ``user_data``); None when nobody said."""
    found = named_sample(capture, read_user_data(recorded))
    return None if found is None else found[0]


def named_sample(capture: SeriesCapture, user_data: UserData | None) -> tuple[str, None, str] | None:
    """``sample_name`` as (name, no unit, its source)."""
    found = capture.value("experiment/sample")
    if found is not None and str(found[0]).strip():
        mapping = capture.mapping
        return str(found[0]).strip(), None, mapping.source_of(mapping.capture_of("experiment/sample"))
    if user_data is not None and user_data.sample_name:
        return user_data.sample_name, None, f"{user_data.source} sample_name"
    return None


def _write_header_goniometer(sample: h5py.Group, mapping: BeamlineMapping, capture: SeriesCapture,
                             recorded: RecordedSeries, user_data: UserData | None) -> None:
    """The goniometer as the detector's header tells it, for the axes the mapping does not name
    (chi, phi, kappa, two_theta...): ``sample/detector_goniometer`` (NXcollection), each angle with
    its unit, and each axis direction user_data gives; a direction that contradicts the mapping's
    is a capture problem."""
    mapped = {axis.name: axis for axis in mapping.axes_of("goniometer")}
    angles = header_angles(recorded, tuple(axis for axis in GONIOMETER_AXES if axis not in mapped))
    vectors = user_data.axis_vectors if user_data is not None else {}
    if not angles and not vectors:
        return
    collection = group(sample, "detector_goniometer", "NXcollection")
    collection.attrs["description"] = "the goniometer as the detector's header told it, beside the mapped axes"
    for name, (value, unit, source) in angles.items():
        write(collection, name, value, unit, source)
    told = user_data.source if user_data is not None else ""
    for axis, vector in vectors.items():
        write(collection, f"{axis}_axis", np.asarray(vector), source=f"{told} {axis}_axis")
        if axis in mapped:
            ours = np.asarray(mapped[axis].vector, dtype=np.float64)
            theirs = np.asarray(vector, dtype=np.float64)
            capture.problems[f"detector/user_data/{axis}_axis"] = () if np.allclose(
                ours / np.linalg.norm(ours), theirs / np.linalg.norm(theirs), atol=1e-6) else (
                f"detector/user_data: {axis}_axis {list(vector)} is not the mapping's {list(mapped[axis].vector)}; "
                "the file's chain follows the mapping",)


def _write_user_data(sample: h5py.Group, detector: h5py.Group, user_data: UserData) -> None:
    """What user_data knows of the sample (space group, unit cell) in NXsample, the rest as it came
    in ``<detector>/user_data`` (NXcollection)."""
    if user_data.space_group:
        write(sample, "space_group", user_data.space_group, source=f"{user_data.source} space_group")
    if user_data.unit_cell:
        cell = f"{user_data.source} unit_cell"
        write(sample, "unit_cell_abc", np.asarray(user_data.unit_cell[:3]), "angstrom", cell)
        write(sample, "unit_cell_alphabetagamma", np.asarray(user_data.unit_cell[3:]), "deg", cell)
    if user_data.others:
        collection = group(detector, "user_data", "NXcollection")
        collection.attrs["description"] = "the detector stream's user_data, as the beamline gave it"
        for key, value in user_data.others.items():
            write(collection, key, value, source=f"{user_data.source} {key}")
