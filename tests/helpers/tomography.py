"""A tomography of the phantom as the Recorder would have written it (three series: darks, flats,
projections) joined in an NXtomo by the Standardizer's own writer, with the truth it came from.

Frames: darks at the camera's offset, flats a beam profile, projections that flat attenuated by
the phantom (Beer-Lambert over ``Phantom.line_integrals``), all with Poisson noise. ``with_object``
False gives projections equal to the flats (no sample): what a reconstruction must not take for
the phantom.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from photonflow.simulators.phantom import Phantom
from photonflow.standardizing.capture import SeriesCapture
from photonflow.standardizing.mapping import load_mapping
from photonflow.standardizing.nxtomo import TomographyPart, write_tomography
from photonflow.standardizing.recorded import read_recorded_series
from tests.helpers.paths import STANDARD_MAPPINGS
from tests.helpers.standardizing import PREFIX, BeamlineReader


@dataclass(frozen=True)
class TomographyTruth:
    """What the simulated beamline knows: the sources of every value the NXtomo gives."""

    rows: int = 16
    columns: int = 64
    projections: int = 120
    darks: int = 5
    flats: int = 5
    pixel_size: float = 2.5e-4  # m: the phantom (6 mm radius) fits the 16 mm wide field at any angle
    count_time: float = 0.05  # s
    energy_kev: float = 19.0
    distance_mm: float = 120.0
    dark_counts: float = 20.0
    flat_counts: float = 2000.0
    sample: str = "shepp-logan phantom"
    phantom: Phantom = Phantom()

    @property
    def angles(self) -> np.ndarray:
        """The projections' rotation angles (deg): 0 to 180, end excluded."""
        return np.arange(self.projections) * 180.0 / self.projections


def write_tomography_of_phantom(folder: Path, truth: TomographyTruth = TomographyTruth(), with_object: bool = True,
                                seed: int = 7) -> Path:
    """Three Recorder-like files in ``folder`` and the NXtomo that joins them (returned)."""
    rng = np.random.default_rng(seed)
    shape = (truth.rows, truth.columns)
    beam = truth.flat_counts * (1.0 + 0.1 * np.cos(np.linspace(0, np.pi, truth.columns)))[None, :] * np.ones(shape)

    def noisy(mean: np.ndarray) -> np.ndarray:
        return np.clip(rng.poisson(mean), 0, 65535).astype(np.uint16)

    darks = np.stack([noisy(np.full(shape, truth.dark_counts)) for _ in range(truth.darks)])
    flats = np.stack([noisy(truth.dark_counts + beam) for _ in range(truth.flats)])
    projections = np.stack([
        noisy(truth.dark_counts + beam * (np.exp(-truth.phantom.line_integrals(angle, shape, truth.pixel_size))
                                          if with_object else 1.0))
        for angle in truth.angles])

    mapping = load_mapping(STANDARD_MAPPINGS / "tomo.yaml", PREFIX)
    values = {
        "ring/Current": 200.0, "mono/Energy": truth.energy_kev, "shutter/State": "OPEN", "omega/Position": 0.0,
        "samx/Position": 0.0, "detz/Position": truth.distance_mm,
        "omega_pcomp/CapturedPositions": np.zeros(0), "omega_pcomp/CapturedTimes": np.zeros(0),
        "omega_pcomp/Start": 0.0, "omega_pcomp/Step": 0.0, "omega_pcomp/Count": 0,
    }
    parts = []
    start = time.time() - 60
    for series_id, (kind, frames, samx) in enumerate(
            (("dark", darks, 0.0), ("flat", flats, 5.0), ("projection", projections, 0.0)), start=1):
        frame_times = start + 0.1 * np.arange(len(frames))
        path = _write_recorder_file(folder / f"{series_id:04d}_tomo_{kind}s.h5", frames, frame_times, series_id,
                                    truth)
        if kind == "projection":  # the rotation's position-compare latched each frame's angle
            step = 180.0 / truth.projections
            values.update({"omega_pcomp/CapturedPositions": truth.angles, "omega_pcomp/CapturedTimes": frame_times,
                           "omega_pcomp/Start": 0.0, "omega_pcomp/Step": step,
                           "omega_pcomp/Count": truth.projections})
        values["samx/Position"] = samx
        capture = SeriesCapture(mapping, BeamlineReader(dict(values)))
        capture.snapshot("pre")
        capture.finish_during()
        capture.snapshot("post")
        capture.read_triggers()
        parts.append(TomographyPart(kind, read_recorded_series(path), capture))
        start = frame_times[-1] + 1.0
    return write_tomography(folder / "0003_tomo_projections.nx", mapping, parts, sample_name=truth.sample)


def _write_recorder_file(path: Path, frames: np.ndarray, frame_times: np.ndarray, series_id: int,
                         truth: TomographyTruth) -> Path:
    """The Recorder's layout: frames and the camera's description under an NXdetector, each frame's time."""
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["series_id"] = series_id
        entry["start_time"] = _iso(frame_times[0] - 0.05)
        entry["end_time"] = _iso(frame_times[-1] + 0.05)
        camera = entry.create_group("instrument/camera")
        entry["instrument"].attrs["NX_class"] = "NXinstrument"
        camera.attrs["NX_class"] = "NXdetector"
        camera.create_dataset("data", data=frames, chunks=(1, *frames.shape[1:]))
        for name, value, unit in (("x_pixel_size", truth.pixel_size, "m"), ("y_pixel_size", truth.pixel_size, "m"),
                                  ("count_time", truth.count_time, "s")):
            camera[name] = value
            camera[name].attrs["units"] = unit
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data["data"] = camera["data"]
        accounting = entry.create_group("accounting")
        accounting["timestamp"] = frame_times
    return path


def _iso(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, UTC).isoformat()
