"""The simulated imaging cameras see the phantom: a projection at angle θ is the flat field times
exp(-the phantom's line integrals at θ) within photon noise; the sample moved out leaves the flat
field; the shutter closed, no light. Each vendor's simulator is driven as its driver drives it,
the angle coming with the trigger pulse as omega's position-compare latched it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from photonflow.acquisition.beamline import Beamline, BeamlineNames
from photonflow.acquisition.tucsen import TucsenCamera, TucsenSettings
from photonflow.camera import AcquisitionSettings, BeamConditions
from photonflow.simulators.andor_sdk3 import MODELS as ANDOR_MODELS
from photonflow.simulators.andor_sdk3 import SimulatedSDK3Camera
from photonflow.simulators.phantom import ImagingSettings, Phantom, flat_field
from photonflow.simulators.trigger_line import Pulse
from photonflow.simulators.tucsen_tucam import SimulatedTucam

EXPOSURE = 0.002
SAMPLE_IN = BeamConditions(sample_position_mm=0.0)
SAMPLE_OUT = BeamConditions(sample_position_mm=20.0)  # the tomography structure's `out`
SHUTTER_CLOSED = BeamConditions(shutter_open=False, sample_position_mm=0.0)


def andor_frame(beam: BeamConditions, angle: float) -> tuple[np.ndarray, float]:
    """One frame of a simulated Zyla 5.5 (binned 8x8) on one external pulse latched at ``angle``;
    with its binned pixel size."""
    sdk = SimulatedSDK3Camera("zyla55", seed=5, beamline=lambda: beam)
    sdk.set_roi(hbin=8, vbin=8)
    sdk.set_attribute_value("TriggerMode", "External")
    sdk.set_attribute_value("ExposureTime", EXPOSURE)
    sdk.setup_acquisition(nframes=1)
    sdk.start_acquisition()
    try:
        sdk.trigger_input.receive(Pulse(0, time.time(), 0.0, position=angle))
        sdk.wait_for_frame(nframes=1, timeout=20)
        (image,) = sdk.read_multiple_images()
    finally:
        sdk.close()
    return image, ANDOR_MODELS["zyla55"].pixel_size * 1e-6 * 8


def tucsen_frame(beam: BeamConditions, angle: float) -> tuple[np.ndarray, float]:
    """One frame of a simulated Dhyana 95 (a 512 x 384 ROI, HDR) through the Tucsen driver, on one
    external pulse latched at ``angle``; with its pixel size."""
    library = SimulatedTucam("dhyana95", seed=6, beamline=lambda: beam)
    camera = TucsenCamera(library.functions, 0, TucsenSettings("HDR", roi=(0, 0, 512, 384)))
    settings = AcquisitionSettings(1, EXPOSURE, 0.02, trigger_mode="external")
    camera.prepare(settings)
    stop = threading.Event()
    frames = camera.frames(settings, stop)
    try:
        threading.Timer(0.2, lambda: library.trigger_input.receive(Pulse(0, time.time(), 0.0, position=angle))).start()
        _, image, _ = next(frames)
    finally:
        stop.set()
        frames.close()
        camera.close()
    return image, library.model.pixel_size


CAMERAS = {"andor zyla55": andor_frame, "tucsen dhyana95": tucsen_frame}


def expected_counts(shape: tuple[int, int], pixel_size: float, angle: float, shift: float = 0.0) -> np.ndarray:
    """The flat field of the beam times the phantom's transmission: what the frame's mean must be."""
    rows, columns = shape
    flat = flat_field(ImagingSettings(rows, columns, pixel_size, exposure=EXPOSURE))
    phantom = Phantom.filling(columns * pixel_size)
    return flat * np.exp(-phantom.line_integrals(angle, shape, pixel_size, shift))


def assert_within_photon_noise(frame: np.ndarray, expected: np.ndarray) -> None:
    """Every pixel within 6 standard deviations of Poisson noise (and one count of rounding)."""
    deviation = np.abs(frame.astype(np.float64) - expected) / (np.sqrt(expected) + 1.0)
    assert deviation.max() < 6.0, f"a pixel {deviation.max():.1f} sigma off at {np.unravel_index(deviation.argmax(), frame.shape)}"


@pytest.mark.parametrize("camera", CAMERAS)
def test_a_projection_at_the_pulses_angle_is_the_flat_field_times_the_phantoms_transmission(camera):
    angle = 37.5
    frame, pixel_size = CAMERAS[camera](SAMPLE_IN, angle)
    expected = expected_counts(frame.shape, pixel_size, angle)
    flat = expected_counts(frame.shape, pixel_size, angle, shift=1.0)  # nothing in the beam
    assert_within_photon_noise(frame, expected)
    assert flat.max() > 1500  # bright enough that a reconstruction is clear
    # the object is a good fraction of the field of view, and its shadow stands far out of the noise
    shadow = (flat - expected) > 10 * np.sqrt(flat)
    assert shadow.mean() > 0.2 and shadow[:, shadow.shape[1] // 2].any()
    # at another angle, another projection: the angle is the pulse's
    other = expected_counts(frame.shape, pixel_size, angle + 90.0)
    assert np.abs(frame - other).max() > 20 * np.sqrt(flat.max())


@pytest.mark.parametrize("camera", CAMERAS)
def test_a_flat_with_the_sample_out_of_the_beam_has_no_object(camera):
    frame, pixel_size = CAMERAS[camera](SAMPLE_OUT, 37.5)
    rows, columns = frame.shape
    assert_within_photon_noise(frame, flat_field(ImagingSettings(rows, columns, pixel_size, exposure=EXPOSURE)))


@pytest.mark.parametrize("camera", CAMERAS)
def test_a_dark_with_the_shutter_closed_has_no_light(camera):
    frame, _ = CAMERAS[camera](SHUTTER_CLOSED, 37.5)
    assert frame.max() == 0


def test_the_sample_translation_moves_the_shadow_across_the_columns():
    phantom, shape, pixel = Phantom.filling(0.012), (96, 128), 100e-6
    projector = phantom.projector(shape, pixel)
    centred, moved = projector.line_integrals(33.0), projector.line_integrals(33.0, shift=7 * pixel)
    np.testing.assert_allclose(moved[:, 7:], centred[:, :-7], atol=1e-4)
    assert projector.line_integrals(33.0, shift=0.02).max() == 0.0  # out of the field of view: no shadow


def test_the_beamline_port_reads_where_the_sample_is_and_its_angle_and_says_what_it_could_not():
    names = BeamlineNames(shutter="bl/shutter", sample_motor="bl/samx", rotation_motor="bl/omega")
    values = {("bl/shutter", "State"): "OPEN", ("bl/samx", "Position"): -20.0, ("bl/omega", "Position"): 12.5}
    beam = Beamline(names, lambda device, attribute: values[(device, attribute)]).conditions()
    assert (beam.sample_position_mm, beam.rotation_deg, beam.shutter_open) == (-20.0, 12.5, True)
    settings = ImagingSettings(64, 64, 1e-4).following(beam)
    assert (settings.sample_position, settings.rotation, settings.scale) == (-0.020, 12.5, 1.0)

    def omega_down(device, attribute):
        if device == "bl/omega":
            raise ConnectionError("bl/omega is not exported")
        return values[(device, attribute)]

    beam = Beamline(names, omega_down).conditions()
    assert beam.rotation_deg is None and "bl/omega is not exported" in beam.notes[0]
    assert ImagingSettings(64, 64, 1e-4, rotation=3.0).following(beam).rotation == 3.0  # the simulation's own
