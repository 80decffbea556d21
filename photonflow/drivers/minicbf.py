"""The PILATUS CBF header ("miniCBF", ``_array_data.header_convention`` PILATUS_1.2, DECTRIS'
PILATUS CBF header specification): the detector's settings, written by camserver as ``# Keyword
value unit`` lines into every image file.

Why: the PILATUS camera puts each image's numbers on the stream beside its frame, and the
Standardizer reads CBF files as they are; both read the header the same way, here, from fabio's
parsed image (``pilatus_headers``). Nothing here imports Tango.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

# PILATUS pixels below 0 are flags, not counts (-1 module gap, -2 bad pixel): the lowest trusted
# count is 0, as dxtbx's FormatCBFMiniPilatus sets its (inclusive) trusted range (0, Count_cutoff).
UNDERLOAD_VALUE = 0
# What camserver writes in place of a count, and the NeXus pixel_mask bit each one is.
GAP_PIXEL, BAD_PIXEL = -1, -2  # between modules; excluded by the detector's bad-pixel map
PIXEL_MASK_BITS = {GAP_PIXEL: 1, BAD_PIXEL: 2}  # NXdetector pixel_mask: 1 gap, 2 dead
# Header keyword -> contract name of the goniometer and beam values camserver's mxsettings print.
GONIOMETER_AND_BEAM = {
    "Chi": "chi_start", "Chi_increment": "chi_increment", "Phi": "phi_start", "Phi_increment": "phi_increment",
    "Kappa": "kappa_start", "Detector_2theta": "two_theta_start", "Flux": "flux",
    "Filter_transmission": "attenuator_transmission", "Polarization": "polarization",
}


def parse_header(header: Any) -> dict[str, Any]:
    """A CBF's miniCBF header (fabio's PilatusHeader) in NXdetector names."""
    def value(key):
        try:
            return header[key]
        except (KeyError, TypeError):
            return None

    sensor, pixel, beam = value("sensor"), value("Pixel_size"), value("Beam_xy")
    wavelength = value("Wavelength")
    detector = value("Detector")  # "PILATUS3 100K, S/N 24-0111" (fabio drops the comma)
    model, _, serial = str(detector).partition("S/N") if detector else ("", "", "")
    serial_words = serial.replace(",", " ").split()  # "S/N 3-0104, Diamond": a site may follow
    described = {
        "description": detector,
        "model": model.strip(" ,") or None,
        "serial_number": serial_words[0] if serial_words else None,
        "sensor_material": sensor[0] if sensor else None,
        "sensor_thickness": sensor[1] if sensor else None,
        "x_pixel_size": pixel[0] if pixel else None,
        "y_pixel_size": pixel[1] if pixel else None,
        "count_time": value("Exposure_time"),
        "frame_time": value("Exposure_period"),
        "dead_time": value("Tau"),
        "saturation_value": value("Count_cutoff"),
        "underload_value": UNDERLOAD_VALUE if value("Count_cutoff") is not None else None,
        "threshold_energy": value("Threshold_setting"),
        "incident_wavelength": wavelength * 1e-10 if wavelength else None,
        "distance": value("Detector_distance"),
        "beam_center_x": beam[0] if beam else None,
        "beam_center_y": beam[1] if beam else None,
        "start_angle": value("Start_angle"),
        "angle_increment": value("Angle_increment"),
        "omega_start": value("Start_angle"),
        "omega_increment": value("Angle_increment"),
        **{name: value(keyword) for keyword, name in GONIOMETER_AND_BEAM.items()},
    }
    return {key: item for key, item in described.items() if item is not None}


def pixel_mask(frame: np.ndarray) -> np.ndarray:
    """The NeXus pixel_mask (uint32) of a PILATUS image: 1 at its -1 pixels (module gaps), 2 at
    its -2 pixels (bad pixels)."""
    mask = np.zeros(frame.shape, dtype=np.uint32)
    for value, bit in PIXEL_MASK_BITS.items():
        mask[frame == value] = bit
    return mask


def header_time(image) -> float | None:
    """The image's date from its miniCBF header (second line), as a UNIX time."""
    contents = image.header.get("_array_data.header_contents", "")
    lines = contents.splitlines()
    if len(lines) > 1:
        try:
            return datetime.fromisoformat(lines[1].lstrip("# ").strip()).timestamp()
        except ValueError:
            return None
    return None
