"""The simulated detector follows the beamline it is told to read, and reports what it followed."""

import pytest

from photonflow.acquisition.acquirer import AcquisitionSettings
from photonflow.simulators.beamline_view import BeamConditions, BeamlineNames, BeamlineView
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor

NAMES = BeamlineNames(ring="bl/ring", monochromator="bl/mono", shutter="bl/shutter", attenuator="bl/att",
                      distance_motor="bl/detz")


class FakeBeamline:
    def __init__(self, values=None):
        self.values = {
            ("bl/ring", "Current"): 190.0, ("bl/ring", "NominalCurrent"): 200.0, ("bl/mono", "Wavelength"): 0.8,
            ("bl/shutter", "State"): "OPEN", ("bl/att", "Transmission"): 0.5, ("bl/detz", "Position"): 150.0,
        }
        self.values.update(values or {})

    def __call__(self, device, attribute):
        value = self.values[(device, attribute)]
        if isinstance(value, Exception):
            raise value
        return value


def test_the_view_reads_wavelength_distance_and_intensity():
    beam = BeamlineView(NAMES, FakeBeamline()).read()
    assert beam.wavelength == pytest.approx(0.8e-10) and beam.distance == pytest.approx(0.150)
    assert beam.scale == pytest.approx(190 / 200 * 0.5)
    assert beam.photon_energy == pytest.approx(12398.419843320026 / 0.8)
    assert beam.notes == ()


def test_a_closed_shutter_gives_no_beam():
    assert BeamlineView(NAMES, FakeBeamline({("bl/shutter", "State"): "CLOSE"})).read().scale == 0.0


def test_a_device_that_cannot_be_read_leaves_its_default_and_a_note():
    reader = FakeBeamline({("bl/mono", "Wavelength"): ConnectionError("bl/mono is not exported")})
    beam = BeamlineView(NAMES, reader).read()
    assert beam.wavelength == BeamConditions().wavelength and beam.distance == pytest.approx(0.150)
    assert "bl/mono/Wavelength" in beam.notes[0] and "not exported" in beam.notes[0]


def test_no_beamline_means_the_defaults():
    assert BeamlineView(BeamlineNames(), FakeBeamline()).read() == BeamConditions()


def test_the_camera_makes_and_reports_frames_for_the_beamline_it_read():
    sensor = SimulatedSensor(height=64, width=48, pixel_size=172e-6)
    camera = SimulatedCamera(sensor, beamline=BeamlineView(NAMES, FakeBeamline()).read, beam_centre=(30.5, 20.0))
    settings = AcquisitionSettings(exposure=0.01, period=0.01, frame_count=2)
    camera.prepare(settings)
    pattern = camera.pattern_settings(settings)
    assert (pattern.wavelength, pattern.distance, pattern.pixel_size) == pytest.approx((0.8e-10, 0.15, 172e-6))
    assert pattern.beam_centre == (30.5, 20.0) and pattern.scale == pytest.approx(0.475)
    described = camera.describe(settings)
    assert (described["beam_center_y"], described["beam_center_x"]) == (30.5, 20.0)
    assert described["distance"] == pytest.approx(0.15) and described["incident_wavelength"] == pytest.approx(0.8e-10)
    assert described["beam_intensity_scale"] == pytest.approx(0.475)
