"""What a simulated detector needs to follow the simulated beamline: the devices it reads at
each Prepare (ring current, wavelength, shutter, transmission, distance), as device properties
shared by every simulated Acquirer, and a reader of their attributes through Tango. The
DectrisAcquirer derives from it too: a DCU is told the wavelength and distance at Prepare
(the ring, shutter and attenuator it cannot use)."""

from __future__ import annotations

from tango.server import device_property

from photonflow.devices.acquirer import AcquirerDevice
from photonflow.devices.common import TangoReader
from photonflow.simulators.beamline_view import BeamlineNames, BeamlineView


class BeamlineFollowingAcquirer(AcquirerDevice):
    """An Acquirer whose simulated camera follows the beamline named by its properties."""

    BeamlineRing = device_property(dtype=str, default_value="", doc="Storage ring device (Current); empty: none")
    BeamlineMonochromator = device_property(
        dtype=str, default_value="", doc="Monochromator device (Wavelength); empty: 20 keV"
    )
    BeamlineShutter = device_property(dtype=str, default_value="", doc="Shutter device; closed: dark frames")
    BeamlineAttenuator = device_property(dtype=str, default_value="", doc="Attenuator device (Transmission)")
    DetectorDistanceMotor = device_property(
        dtype=str, default_value="", doc="Motor giving the sample-detector distance in mm; empty: 120 mm"
    )

    def beamline_view(self) -> BeamlineView:
        names = BeamlineNames(
            ring=self.BeamlineRing, monochromator=self.BeamlineMonochromator, shutter=self.BeamlineShutter,
            attenuator=self.BeamlineAttenuator, distance_motor=self.DetectorDistanceMotor,
        )
        return BeamlineView(names, TangoReader())
