"""The beamline devices an Acquirer follows, as device properties, and the beamline port
(``photonflow.acquisition.beamline.Beamline``) built from them over Tango: a simulated detector
reads them all at each Prepare (ring current, wavelength, shutter, transmission, distance); a
DectrisAcquirer tells the DCU the wavelength and distance (the ring, shutter and attenuator it
cannot use)."""

from __future__ import annotations

from tango.server import device_property

from photonflow.acquisition.beamline import DEFAULT_READ_TIMEOUT, Beamline, BeamlineNames, parse_beam_centre
from photonflow.devices.acquirer import AcquirerDevice
from photonflow.devices.common import TangoReader


def beamline_port(names: BeamlineNames, beam_centre: str = "", unread: str = "the detector keeps its value",
                  timeout_s: float = DEFAULT_READ_TIMEOUT) -> Beamline:
    """The port reading ``names`` through Tango; ``beam_centre`` is a BeamCentre property's text.
    Each Tango read gives up after ``timeout_s`` too, so a hung read's thread ends soon after."""
    return Beamline(names, TangoReader(timeout_s), parse_beam_centre(beam_centre), unread, timeout_s)


def beamline_read_timeout() -> device_property:
    """The property bounding a Prepare's wait for the beamline (a stopped beamline server)."""
    return device_property(
        dtype=float, default_value=DEFAULT_READ_TIMEOUT,
        doc="Seconds a Prepare waits at most for the beamline's readings; what has not answered by then is "
            "not used (the detector keeps its value) and the series ends in ALARM naming it",
    )


class BeamlineFollowingAcquirer(AcquirerDevice):
    """An Acquirer whose camera follows the beamline named by its properties."""

    BeamlineRing = device_property(dtype=str, default_value="", doc="Storage ring device (Current); empty: none")
    BeamlineMonochromator = device_property(
        dtype=str, default_value="", doc="Monochromator device (Wavelength); empty: 20 keV"
    )
    BeamlineShutter = device_property(dtype=str, default_value="", doc="Shutter device; closed: dark frames")
    BeamlineAttenuator = device_property(dtype=str, default_value="", doc="Attenuator device (Transmission)")
    DetectorDistanceMotor = device_property(
        dtype=str, default_value="", doc="Motor giving the sample-detector distance in mm; empty: 120 mm"
    )

    BeamlineSampleMotor = device_property(
        dtype=str, default_value="", doc="Sample translation across the beam (Position, mm): where a simulated "
        "imaging camera sees its phantom; empty: centred")
    BeamlineRotationMotor = device_property(
        dtype=str, default_value="", doc="Sample rotation (Position, deg): a simulated imaging camera's phantom "
        "angle for frames no position-compare pulse gives one; empty: 0")

    BeamlineReadTimeout = beamline_read_timeout()

    def beamline_names(self) -> BeamlineNames:
        return BeamlineNames(
            ring=self.BeamlineRing, monochromator=self.BeamlineMonochromator, shutter=self.BeamlineShutter,
            attenuator=self.BeamlineAttenuator, distance_motor=self.DetectorDistanceMotor,
            sample_motor=self.BeamlineSampleMotor, rotation_motor=self.BeamlineRotationMotor,
        )

    def simulated_beamline(self) -> Beamline:
        """Every device named, for a simulated camera: what cannot be read keeps the simulation's default."""
        return self.follow(beamline_port(self.beamline_names(), unread="using the simulation's default",
                                         timeout_s=self.BeamlineReadTimeout))
