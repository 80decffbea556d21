"""The simulated beamline's models, on a clock the test moves by hand."""

import math

import pytest

from photonflow.errors import ConfigurationError, StateError
from photonflow.simulators.beamline import Attenuator, Filter, LimitError, Monochromator, Motor, Shutter, StorageRing
from photonflow.simulators.beamline.attenuator import mass_attenuation
from photonflow.simulators.beamline.monochromator import bragg_angle, energy_from_bragg_angle, wavelength_from_energy
from photonflow.simulators.beamline.slits import Slits


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


def motor(clock, **kwargs):
    settings = dict(name="samx", position=0.0, velocity=2.0, acceleration=4.0, low=-10.0, high=10.0, unit="mm")
    settings.update(kwargs)
    return Motor(clock=clock, **settings)


def test_a_long_move_follows_a_trapezoid(clock):
    axis = motor(clock)
    # 0.5 s to reach 2 mm/s over 0.5 mm, 2.5 s cruising over 5 mm, 0.5 s braking over 0.5 mm
    assert axis.move_to(6.0) == pytest.approx(3.5)
    expected = {0.0: 0.0, 0.25: 0.125, 0.5: 0.5, 1.5: 2.5, 3.0: 5.5, 3.25: 5.875, 3.5: 6.0, 10.0: 6.0}
    start = clock.now
    for elapsed, position in expected.items():
        clock.now = start + elapsed
        assert axis.position == pytest.approx(position), elapsed
    clock.now = start + 1.5
    assert axis.current_velocity == pytest.approx(2.0)
    assert axis.state == "MOVING"
    clock.now = start + 3.5
    assert axis.state == "ON" and axis.position == 6.0


def test_a_short_move_follows_a_triangle(clock):
    axis = motor(clock)
    assert axis.move_to(-0.25) == pytest.approx(0.5)  # 0.25 s up to 1 mm/s, 0.25 s down
    start = clock.now
    clock.now = start + 0.25
    assert axis.position == pytest.approx(-0.125)
    assert axis.current_velocity == pytest.approx(-1.0)
    clock.now = start + 0.5
    assert axis.position == pytest.approx(-0.25) and axis.state == "ON"


def test_stop_decelerates_from_where_the_motor_is(clock):
    axis = motor(clock)
    axis.move_to(6.0)
    clock.advance(1.5)  # at 2.5 mm, 2 mm/s
    axis.stop()
    assert axis.target == pytest.approx(3.0)  # 2²/(2·4) = 0.5 mm more
    clock.advance(0.25)
    assert axis.position == pytest.approx(2.875) and axis.state == "MOVING"
    clock.advance(0.25)
    assert axis.position == pytest.approx(3.0) and axis.state == "ON"


def test_a_target_beyond_a_soft_limit_is_refused_naming_the_limit(clock):
    axis = motor(clock)
    with pytest.raises(LimitError, match="above the high soft limit 10 mm") as error:
        axis.move_to(10.5)
    assert error.value.reason == "OutOfSoftLimits"
    with pytest.raises(LimitError, match="below the low soft limit -10 mm"):
        axis.move_to(-11)
    assert axis.position == 0.0 and axis.state == "ON"


def test_a_motor_sitting_at_a_limit_is_in_alarm(clock):
    axis = motor(clock)
    axis.move_to(10.0)
    clock.advance(100)
    assert axis.state == "ALARM" and "high soft limit" in axis.status


def test_a_new_move_while_moving_is_refused(clock):
    axis = motor(clock)
    axis.move_to(5.0)
    with pytest.raises(StateError, match="Stop it first"):
        axis.move_to(1.0)


def test_energy_wavelength_and_bragg_angle_agree_with_the_known_values():
    assert wavelength_from_energy(12.398419843320026) == pytest.approx(1.0)
    # Si(111), d = 3.13560 Å: θ = asin(1 Å / 6.2712 Å)
    assert bragg_angle(12.398419843320026) == pytest.approx(math.degrees(math.asin(1 / 6.2712)))
    assert bragg_angle(12.398419843320026) == pytest.approx(9.1755, abs=1e-4)
    assert energy_from_bragg_angle(9.1755) == pytest.approx(12.3984, abs=1e-3)


def test_the_monochromator_takes_time_to_change_energy(clock):
    mono = Monochromator(energy=12.0, clock=clock)
    duration = mono.move_energy(8.0)
    assert duration > 0 and mono.state == "MOVING"
    clock.advance(duration / 2)
    assert 8.0 < mono.energy < 12.0
    clock.advance(duration)
    assert mono.state == "ON" and mono.energy == pytest.approx(8.0)
    assert mono.wavelength == pytest.approx(12.398419843320026 / 8.0)


def test_the_monochromator_refuses_energies_outside_its_range(clock):
    mono = Monochromator(energy=12.0, low_energy=5.0, high_energy=25.0, clock=clock)
    with pytest.raises(LimitError, match="between 5 and 25 keV"):
        mono.move_energy(30.0)
    assert mono.bragg.low == pytest.approx(bragg_angle(25.0)) and mono.bragg.high == pytest.approx(bragg_angle(5.0))


def test_the_ring_current_decays_with_the_lifetime_and_is_topped_up(clock):
    ring = StorageRing(nominal_current=200.0, lifetime=3600.0, topup_period=120.0, clock=clock)
    assert ring.current == pytest.approx(200.0) and ring.refill_countdown == pytest.approx(120.0)
    clock.advance(60)
    assert ring.current == pytest.approx(200.0 * math.exp(-60 / 3600))
    assert ring.refill_countdown == pytest.approx(60.0)
    clock.advance(70)  # topped up at 120 s, 10 s ago
    assert ring.current == pytest.approx(200.0 * math.exp(-10 / 3600))


def test_beam_loss_empties_the_ring_and_restore_refills_it(clock):
    ring = StorageRing(clock=clock)
    ring.beam_loss()
    assert ring.current == 0.0 and ring.state == "FAULT"
    ring.restore()
    assert ring.current == pytest.approx(ring.nominal_current) and ring.state == "ON"


def test_the_shutter_moves_then_is_open_and_a_beam_loss_closes_it(clock):
    ring = StorageRing(clock=clock)
    shutter = Shutter(travel_time=0.1, beam_available=lambda: not ring.beam_lost, clock=clock)
    assert shutter.state == "CLOSE"
    shutter.open()
    assert shutter.state == "MOVING"
    clock.advance(0.1)
    assert shutter.state == "OPEN"
    ring.beam_loss()
    shutter.beam_lost()
    clock.advance(0.1)
    assert shutter.state == "CLOSE" and "beam loss" in shutter.status
    with pytest.raises(StateError, match="no beam"):
        shutter.open()
    ring.restore()
    shutter.open()
    clock.advance(0.1)
    assert shutter.state == "OPEN"


def test_a_shutter_in_fault_refuses_to_open(clock):
    shutter = Shutter(clock=clock)
    shutter.set_fault("compressed air pressure low")
    assert shutter.state == "FAULT"
    with pytest.raises(StateError, match="Reset"):
        shutter.open()
    shutter.reset()
    shutter.open()
    clock.advance(1)
    assert shutter.is_open


def test_half_a_millimetre_of_aluminium_at_12_kev_against_nist():
    # NIST: μ/ρ(Al) = 26.23 cm²/g at 10 keV and 7.955 at 15 keV; log-log at 12 keV: 15.34 cm²/g
    assert mass_attenuation("Al", 10.0) == pytest.approx(26.23)
    assert mass_attenuation("Al", 12.0) == pytest.approx(15.34, rel=2e-3)
    attenuator = Attenuator([Filter("Al", 0.5), Filter("Cu", 0.1)], inserted=[0])
    assert attenuator.transmission(12.0) == pytest.approx(math.exp(-15.34 * 2.699 * 0.05), rel=2e-3)
    assert attenuator.transmission(12.0) == pytest.approx(0.126, abs=1e-3)
    assert attenuator.transmission(20.0) > attenuator.transmission(12.0)  # harder X-rays pass more


def test_copper_is_more_opaque_just_above_its_k_edge():
    below, above = mass_attenuation("Cu", 8.97), mass_attenuation("Cu", 8.98)
    assert above > 5 * below
    assert mass_attenuation("Cu", 10.0) == pytest.approx(315.5)


def test_no_filter_lets_everything_through_and_unknown_filters_are_refused():
    attenuator = Attenuator([Filter.parse("Cu 0.025")])
    assert attenuator.transmission(12.0) == 1.0
    with pytest.raises(Exception, match="numbered 0 to 0"):
        attenuator.insert(3)
    with pytest.raises(Exception, match="unknown filter material"):
        Filter.parse("Pb 1")


def test_slits_move_gap_and_offset_within_limits(clock):
    slits = Slits(horizontal_gap=1.0, clock=clock)
    slits.move("horizontal_gap", 2.0)
    assert slits.state == "MOVING"
    clock.advance(60)
    assert slits["horizontal_gap"].position == 2.0 and slits.state == "ON"
    with pytest.raises(LimitError):
        slits.move("vertical_gap", -1.0)


def test_a_velocity_above_the_maximum_is_refused_naming_the_limit(clock):
    omega = Motor("omega", velocity=30.0, acceleration=360.0, unit="deg", maximum_velocity=360.0, clock=clock)
    with pytest.raises(ConfigurationError) as refused:
        omega.velocity = 400.0
    assert str(refused.value) == "omega: velocity 400 deg/s is above its maximum 360 deg/s"
    assert omega.velocity == 30.0
    omega.velocity = 360.0
    assert omega.velocity == 360.0
    with pytest.raises(ConfigurationError, match="above its maximum 90 deg/s"):
        Motor("omega", velocity=100.0, unit="deg", maximum_velocity=90.0, clock=clock)


def test_the_time_a_move_passes_a_position_is_solved_from_its_profile(clock):
    axis = motor(clock)
    start = clock.now
    axis.move_to(6.0)  # ramp 0.5 s over 0.5 mm, cruise 2.5 s over 5 mm, brake 0.5 s over 0.5 mm
    assert axis.time_at(0.0) == start
    assert axis.time_at(0.125) == pytest.approx(start + 0.25, abs=1e-12)  # a t²/2 with a = 4
    assert axis.time_at(2.5) == pytest.approx(start + 1.5, abs=1e-12)
    assert axis.time_at(5.875) == pytest.approx(start + 3.25, abs=1e-12)
    assert axis.time_at(6.0) == pytest.approx(start + 3.5, abs=1e-12)
    assert axis.time_at(6.5) is None and axis.time_at(-0.1) is None
    assert axis.time_at(2.5, direction=-1) is None and axis.time_at(2.5, direction=+1) is not None
    for position in (0.01, 0.3, 1.7, 4.2, 5.99):
        assert axis.position_at(axis.time_at(position)) == pytest.approx(position, abs=1e-12)
    assert axis.position_at(start - 1) == 0.0 and axis.position_at(start + 99) == 6.0


def test_a_move_down_is_crossed_downwards(clock):
    axis = motor(clock, position=1.0)
    start = clock.now
    axis.move_to(0.2)  # 0.8 mm, a triangle: half of it, 0.4 mm = 4 t²/2, after t = √0.2 s
    assert axis.time_at(0.6, direction=-1) == pytest.approx(start + math.sqrt(0.2), abs=1e-12)
    assert axis.time_at(0.6, direction=+1) is None


def test_a_stopped_move_keeps_the_times_it_passed_and_ends_short(clock):
    axis = motor(clock)
    start = clock.now
    axis.move_to(6.0)
    clock.advance(1.5)  # at 2.5 mm
    axis.stop()  # rests at 3.0 mm
    assert axis.time_at(1.5) == pytest.approx(start + 1.0, abs=1e-12)
    assert axis.time_at(2.875) == pytest.approx(start + 1.75, abs=1e-12)
    assert axis.time_at(3.5) is None
