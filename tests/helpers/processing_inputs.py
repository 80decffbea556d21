"""Input files for the DataManager's processing tests: a real Recorder series of simulated CeO2
powder rings standardized to NXmx (as the Standardizer writes it), a small NXtomo with known
darks, flats and projections, and an image stack with known shifts."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from pyFAI.calibrant import get_calibrant

from photonflow.acquisition.acquirer import Acquirer
from photonflow.camera import BeamConditions
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor
from photonflow.standardizing.capture import SeriesCapture
from photonflow.standardizing.mapping import load_mapping
from photonflow.standardizing.nxmx import write_nxmx
from photonflow.standardizing.recorded import read_recorded_series
from photonflow.stream.transport import StreamSender
from tests.helpers.recording import acquire_into
from tests.helpers.standardizing import BeamlineReader

CONFIG = Path(__file__).resolve().parents[2] / "config" / "standard"
WAVELENGTH_ANGSTROM = 0.5
DISTANCE_MM = 50.0
FRAMES = 4


def beamline_values() -> dict[str, object]:
    return {
        "ring/Current": 198.5, "ring/Energy": 3.0, "ring/Mode": "USER",
        "mono/Energy": 12.398419843320026 / WAVELENGTH_ANGSTROM, "mono/Wavelength": WAVELENGTH_ANGSTROM,
        "attenuator/Transmission": 1.0, "slits/HorizontalGap": 0.2, "slits/VerticalGap": 0.1,
        "shutter/State": "OPEN", "omega/Position": 0.0, "samx/Position": 0.0, "samy/Position": 0.0,
        "samz/Position": 0.0, "detz/Position": DISTANCE_MM, "datamanager/CurrentRole": "data",
        "datamanager/CurrentNode": "", "datamanager/Proposal": "4242", "datamanager/Sample": "ceo2",
    }


def write_ceo2_nxmx(root: Path) -> Path:
    """A Recorder series of CeO2 rings made for the geometry the beamline reports, and its NXmx."""
    beam = BeamConditions(wavelength_angstrom=WAVELENGTH_ANGSTROM, distance_mm=DISTANCE_MM)
    camera = SimulatedCamera(SimulatedSensor(height=400, width=400, seed=11, serial_number="SIM-DM"),
                             beamline=lambda: beam, beam_centre=(190.0, 205.0))
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(camera, sender)
    acquirer.update_settings(frame_count=FRAMES, exposure=0.01, period=0.02)
    acquirer.set_series_id(3)
    try:
        master = acquire_into(acquirer, Recorder(root), RecordingRequest(FRAMES, 3, acquirer.stream_endpoint,
                                                                          "powder/ceo2.h5"))
    finally:
        sender.close()
    mapping = load_mapping(CONFIG / "mx.yaml", {"PREFIX": "test/beamline", "DATAMANAGER": "test/photonflow/datamanager"})
    capture = SeriesCapture(mapping, BeamlineReader(beamline_values()))
    capture.snapshot("pre")
    capture.finish_during()
    capture.snapshot("post")
    return write_nxmx(master.with_suffix(".nxs"), mapping, capture, read_recorded_series(master))


def ceo2_q(rings: int = 3) -> np.ndarray:
    """The first rings' q = 2π/d in nm⁻¹, from pyFAI's calibrant library."""
    d_angstrom = sorted(get_calibrant("CeO2").dspacing, reverse=True)[:rings]
    return np.array([2 * np.pi / (d / 10.0) for d in d_angstrom])


def assert_peaks_at_ceo2(peaks_q: np.ndarray, rtol: float = 0.005) -> None:
    for q_ring in ceo2_q():
        nearest = peaks_q[np.argmin(np.abs(peaks_q - q_ring))] if peaks_q.size else np.nan
        assert abs(nearest - q_ring) / q_ring < rtol, f"no peak within {rtol:.1%} of q={q_ring:.4f} nm^-1: {peaks_q}"


DARKS = np.array([[[10, 10, 10], [10, 10, 50]], [[12, 12, 12], [12, 12, 50]]], dtype=np.uint16)
FLATS = np.array([[[111, 211, 61], [111, 111, 50]], [[113, 213, 63], [113, 113, 50]]], dtype=np.uint16)
PROJECTIONS = np.array([[[62, 111, 36], [11, 112, 50]], [[112, 211, 61], [30, 0, 70]],
                        [[11, 11, 11], [100, 50, 40]]], dtype=np.uint16)
ANGLES = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 90.0, 180.0])


def expected_normalized() -> np.ndarray:
    dark, flat = DARKS.mean(axis=0), FLATS.mean(axis=0)
    beam = flat - dark
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(beam != 0, (PROJECTIONS - dark) / beam, 0.0)
    return values.astype(np.float32)


def write_small_nxtomo(path: Path) -> Path:
    """An NXtomo as write_tomography lays it out: darks, flats, then projections with image_key."""
    frames = np.concatenate([DARKS, FLATS, PROJECTIONS])
    keys = np.array([2, 2, 1, 1, 0, 0, 0], dtype=np.int32)
    with h5py.File(path, "w-") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["definition"] = "NXtomo"
        detector = entry.create_group("instrument/detector")
        detector.attrs["NX_class"] = "NXdetector"
        detector["data"] = frames
        detector["image_key"] = keys
        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        sample["rotation_angle"] = ANGLES
        sample["rotation_angle"].attrs["units"] = "deg"
    return path


def smooth_image(shape=(64, 80), seed: int = 4) -> np.ndarray:
    """A textured test image (smoothed noise), periodic so np.roll makes pure translations."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fft2(rng.normal(size=shape))
    fy, fx = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing="ij")
    return np.real(np.fft.ifft2(spectrum * np.exp(-(fx**2 + fy**2) / (2 * 0.08**2)))) * 100 + 500


SHIFTS = [(0, 0), (3, -5), (-7, 2), (12, 9)]


def write_shifted_stack(path: Path) -> Path:
    image = smooth_image()
    frames = np.stack([np.roll(image, shift, axis=(0, 1)) for shift in SHIFTS]).astype(np.float32)
    with h5py.File(path, "w-") as f:
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "data"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "data"
        data["data"] = frames
    return path
