"""The beamline port reads the devices a detector follows, tolerates one that cannot be read, and the
simulated detector makes and reports frames for what it read."""

import logging
import threading

import pytest

from photonflow.acquisition.beamline import Beamline, BeamlineNames, parse_beam_centre
from photonflow.camera import AcquisitionSettings, BeamConditions
from photonflow.errors import ConfigurationError
from photonflow.simulators.diffraction import DEFAULT_DISTANCE, DEFAULT_WAVELENGTH, Beam
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor

NAMES = BeamlineNames(ring="bl/ring", monochromator="bl/mono", shutter="bl/shutter", attenuator="bl/att",
                      distance_motor="bl/detz")


class FakeBeamline:
    """``read(device, attribute)`` over fixed values; an exception as a value is raised, as a device
    that is down raises on a real read."""

    def __init__(self, values=None):
        self.values = {
            ("bl/ring", "Current"): 190.0, ("bl/ring", "NominalCurrent"): 200.0, ("bl/mono", "Wavelength"): 0.8,
            ("bl/shutter", "State"): "OPEN", ("bl/att", "Transmission"): 0.5, ("bl/detz", "Position"): 150.0,
        }
        self.values.update(values or {})
        self.reads = []

    def __call__(self, device, attribute):
        self.reads.append((device, attribute))
        value = self.values[(device, attribute)]
        if isinstance(value, Exception):
            raise value
        return value


def test_the_port_reads_wavelength_distance_and_intensity():
    beam = Beamline(NAMES, FakeBeamline()).conditions()
    assert (beam.wavelength_angstrom, beam.distance_mm) == (0.8, 150.0)
    assert beam.wavelength == pytest.approx(0.8e-10) and beam.distance == pytest.approx(0.150)
    assert beam.intensity_scale == pytest.approx(190 / 200 * 0.5)
    assert beam.photon_energy == pytest.approx(12398.419843320026 / 0.8)
    assert beam.notes == ()


def test_a_closed_shutter_gives_no_beam():
    beam = Beamline(NAMES, FakeBeamline({("bl/shutter", "State"): "CLOSE"})).conditions()
    assert beam.shutter_open is False and beam.intensity_scale == 0.0


def test_a_device_that_cannot_be_read_is_unknown_logged_and_noted(caplog):
    reader = FakeBeamline({("bl/mono", "Wavelength"): ConnectionError("bl/mono is not exported")})
    with caplog.at_level(logging.WARNING, logger="photonflow.acquisition.beamline"):
        beam = Beamline(NAMES, reader, unread="the DCU keeps its value").conditions()
    assert beam.wavelength_angstrom is None and beam.photon_energy is None and beam.distance_mm == 150.0
    assert beam.notes == ("cannot read bl/mono/Wavelength (bl/mono is not exported); the DCU keeps its value",)
    assert caplog.messages == list(beam.notes)


@pytest.mark.parametrize("wavelength", [0.0, -1.0, float("nan"), "n/a"])
def test_a_reading_that_is_no_positive_number_is_not_used(wavelength):
    beam = Beamline(NAMES, FakeBeamline({("bl/mono", "Wavelength"): wavelength})).conditions()
    assert beam.wavelength_angstrom is None
    assert beam.notes == (f"bl/mono/Wavelength is {wavelength}, not a positive number; the detector keeps its value",)


def test_a_ring_below_zero_gives_no_beam_and_a_transmission_is_kept_between_zero_and_one():
    reader = FakeBeamline({("bl/ring", "Current"): -0.5, ("bl/att", "Transmission"): 1.5})
    beam = Beamline(NAMES, reader).conditions()
    assert (beam.ring_fraction, beam.transmission) == (0.0, 1.0)


def test_only_the_devices_named_are_read():
    reader = FakeBeamline()
    beam = Beamline(BeamlineNames(monochromator="bl/mono"), reader).conditions()
    assert reader.reads == [("bl/mono", "Wavelength")]
    assert beam == BeamConditions(wavelength_angstrom=0.8) and beam.intensity_scale == 1.0


def test_no_beamline_is_nothing_followed_and_nothing_known():
    port = Beamline(BeamlineNames(), FakeBeamline())
    assert not port.followed and port.conditions() == BeamConditions()
    assert Beamline(BeamlineNames(), FakeBeamline(), beam_centre=(1.0, 2.0)).followed


def test_a_beam_centre_is_row_then_column_in_pixels():
    assert parse_beam_centre("500.5, 515") == (500.5, 515.0)
    assert parse_beam_centre("  ") is None
    with pytest.raises(ConfigurationError, match="BeamCentre is 'row,column' in pixels"):
        parse_beam_centre("500.5")


def test_the_simulation_uses_its_defaults_for_what_the_beamline_did_not_say():
    beam = Beam.following(BeamConditions(distance_mm=150.0, shutter_open=False))
    assert (beam.wavelength, beam.distance, beam.scale) == (DEFAULT_WAVELENGTH, pytest.approx(0.15), 0.0)
    assert Beam.following(BeamConditions()) == Beam()


def test_the_camera_makes_and_reports_frames_for_the_beamline_it_read():
    sensor = SimulatedSensor(height=64, width=48, pixel_size=172e-6)
    camera = SimulatedCamera(sensor, beamline=Beamline(NAMES, FakeBeamline()).conditions, beam_centre=(30.5, 20.0))
    settings = AcquisitionSettings(exposure=0.01, period=0.01, frame_count=2)
    camera.prepare(settings)
    pattern = camera.pattern_settings(settings)
    assert (pattern.wavelength, pattern.distance, pattern.pixel_size) == pytest.approx((0.8e-10, 0.15, 172e-6))
    assert pattern.beam_centre == (30.5, 20.0) and pattern.scale == pytest.approx(0.475)
    described = camera.describe(settings)
    assert (described["beam_center_y"], described["beam_center_x"]) == (30.5, 20.0)
    assert described["distance"] == pytest.approx(0.15) and described["incident_wavelength"] == pytest.approx(0.8e-10)
    assert described["beam_intensity_scale"] == pytest.approx(0.475)
    assert described["photon_energy"] == pytest.approx(12398.419843320026 / 0.8)


def test_a_camera_without_a_beamline_draws_for_the_simulations_defaults():
    camera = SimulatedCamera(SimulatedSensor(height=16, width=16))
    settings = AcquisitionSettings(exposure=0.01, period=0.01, frame_count=1)
    camera.prepare(settings)
    pattern = camera.pattern_settings(settings)
    assert (pattern.wavelength, pattern.distance, pattern.scale) == (DEFAULT_WAVELENGTH, DEFAULT_DISTANCE, 1.0)


class HungBeamline(FakeBeamline):
    """A beamline whose monochromator never answers until ``release`` (a SIGSTOPped server)."""

    def __init__(self, values=None):
        super().__init__(values)
        self.release = threading.Event()

    def __call__(self, device, attribute):
        if device == "bl/mono":
            self.reads.append((device, attribute))
            self.release.wait(30)
            raise TimeoutError("released")
        return super().__call__(device, attribute)


def test_a_device_that_hangs_is_not_waited_for_past_the_timeout_and_is_named():
    reader = HungBeamline()
    port = Beamline(NAMES, reader, unread="the DCU keeps its value", timeout_s=0.2)
    try:
        beam = port.conditions()
        assert beam.wavelength_angstrom is None
        assert beam.distance_mm == 150.0 and beam.ring_fraction == 0.95 and beam.transmission == 0.5
        assert port.problems == ("bl/mono/Wavelength did not answer within 0.2 s; the DCU keeps its value",)
        # the next reading does not start a second read behind the hung one
        assert port.conditions().wavelength_angstrom is None
        assert reader.reads.count(("bl/mono", "Wavelength")) == 1
        assert port.problems == ("bl/mono/Wavelength did not answer within 0.2 s; the DCU keeps its value",)
    finally:
        reader.release.set()


def test_a_reading_that_answers_clears_the_problems_of_the_one_before():
    reader = FakeBeamline({("bl/mono", "Wavelength"): ConnectionError("down")})
    port = Beamline(NAMES, reader)
    port.conditions()
    assert port.problems == ("cannot read bl/mono/Wavelength (down); the detector keeps its value",)
    reader.values[("bl/mono", "Wavelength")] = 0.8
    assert port.conditions().wavelength_angstrom == 0.8 and port.problems == ()


def test_a_read_timeout_that_is_no_positive_number_is_refused():
    with pytest.raises(ConfigurationError, match="positive number of seconds"):
        Beamline(NAMES, FakeBeamline(), timeout_s=0)
