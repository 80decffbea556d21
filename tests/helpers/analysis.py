"""A simulated powder frame's geometry for the live-analysis tests: the settings the frames are made
with, and the same geometry as the simulated detector announces it in its series_start."""

from photonflow.simulators.diffraction import PatternSettings

GEOMETRY = PatternSettings(height=600, width=640, seed=5, exposure=0.05, calibrant="CeO2",
                           wavelength=0.7e-10, distance=0.1, pixel_size=100e-6, beam_centre=(260.0, 300.0))
# what the simulated detector announces in its series_start (SI units, beam centre in pixels)
DESCRIPTION = {"x_pixel_size": 100e-6, "y_pixel_size": 100e-6, "beam_center_x": 300.0, "beam_center_y": 260.0,
               "distance": 0.1, "incident_wavelength": 0.7e-10, "saturation_value": 65534}
