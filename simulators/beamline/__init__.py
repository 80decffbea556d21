"""A simulated beamline in plain Python: motors, a position-compare output, a monochromator, a
shutter, the storage ring, slits and an attenuator. No Tango here (devices/beamline.py is the
Tango face); every model takes its clock as a parameter, so its state is a pure function of
that clock and tests run fast and deterministic."""

from photonflow.simulators.beamline.attenuator import Attenuator, Filter, mass_attenuation
from photonflow.simulators.beamline.monochromator import Monochromator
from photonflow.simulators.beamline.motor import LimitError, Motor
from photonflow.simulators.beamline.position_compare import PositionCompare
from photonflow.simulators.beamline.shutter import Shutter
from photonflow.simulators.beamline.slits import Slits
from photonflow.simulators.beamline.storage_ring import StorageRing

__all__ = [
    "Attenuator", "Filter", "LimitError", "Monochromator", "Motor", "PositionCompare", "Shutter", "Slits",
    "StorageRing", "mass_attenuation",
]
