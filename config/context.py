"""The demo run table: what a scientist would otherwise type into a spreadsheet after each run.

A context file in European XFEL DAMNIT's API (photonflow.datamanager.context): each @Variable is
a column, computed for every run in a separate process; ``run`` gives the raw frames
(``run.frames``), the standardized NXmx (``run.metadata(path)``) and the values logged during the
exposure (``run.time_series(name)``).
"""

from pathlib import Path

import h5py
import numpy as np

from photonflow.datamanager.context import Cell, Skip, Variable
from photonflow.datamanager.processing import azimuthal_integrator, detector_group, nxmx_geometry
from photonflow.errors import ConfigurationError
from photonflow.standardizing.mapping import convert
from photonflow.standardizing.nexus import HC_KEV_ANGSTROM

HOT_PIXEL_COUNTS = 60000  # counts in one frame above which a pixel is hot (saturating)


@Variable(title="Mean intensity", summary="mean", units="counts", tags=["detector"])
def mean_intensity(run):
    """The mean counts per pixel of each frame (a PILATUS' -1 gap and -2 bad pixels are no counts)."""
    frames = run.frames
    return np.array([frames[i][frames[i] >= 0].mean(dtype=np.float64) for i in range(frames.shape[0])])


@Variable(title="Ring current", summary="mean", units="mA", tags=["source"])
def ring_current(run):
    """The storage ring current logged while the frames were taken."""
    try:
        _, current = run.time_series("source/current")
    except (KeyError, FileNotFoundError) as missing:
        try:  # an NXtomo's monitor: the current at each of its frames
            return np.asarray(run.metadata("control/data"), dtype=np.float64)
        except (KeyError, FileNotFoundError, OSError):
            raise Skip(f"{missing}; and no NXtomo control/data") from None
    return current


@Variable(title="Hot pixels", tags=["detector"])
def hot_pixels(run):
    """Pixels above the hot threshold in any frame."""
    frames = run.frames
    hot = np.zeros(frames.shape[1:], dtype=bool)
    for i in range(frames.shape[0]):
        hot |= frames[i] >= HOT_PIXEL_COUNTS
    return int(hot.sum())


@Variable(title="Summed image", transient=True)
def summed_image(run):
    frames = run.frames
    total = np.zeros(frames.shape[1:], dtype=np.float64)
    for i in range(frames.shape[0]):
        total += frames[i]
    return total


@Variable(title="Summary image", summary="max", units="counts", tags=["detector"])
def summary_image(run, image: "var#summed_image"):
    """The summed frames binned to at most 256 pixels a side (sums of square blocks): what the run
    saw, small enough for a plot in the run table (the web page draws it)."""
    factor = max(1, -(-max(image.shape) // 256))
    height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:height, :width].reshape(height // factor, factor, width // factor, factor).sum(axis=(1, 3))


@Variable(title="I(q)", summary="max", units="counts", cluster=True, tags=["analysis"])
def azimuthal_integration(run, image: "var#summed_image"):
    """The summed frames integrated azimuthally with pyFAI, using only the NXmx geometry
    (wavelength, the distance along the detector's depends_on chain, beam centre, pixel size of
    the NXdetector, whatever its name): returns [q (nm^-1), I]. Skipped for a run without NXmx."""
    integrator = azimuthal_integrator(_nxmx_geometry(run))
    result = integrator.integrate1d(image, 2000, unit="q_nm^-1", mask=(image == 0).astype(np.int8))
    q, intensity = np.asarray(result.radial), np.asarray(result.intensity)
    return Cell(np.stack([q, intensity]), summary_value=float(intensity.max()), preview=intensity)


@Variable(title="Peaks q", units="nm^-1", cluster=True, tags=["analysis"])
def peak_positions(run, curve: "var#azimuthal_integration"):
    """The q of the strongest rings of I(q), in increasing q (at most 5)."""
    from scipy.signal import find_peaks

    q, intensity = curve
    peaks, properties = find_peaks(intensity, prominence=0.2 * intensity.max())
    strongest = peaks[np.argsort(properties["prominences"])[::-1][:5]]
    positions = np.sort(q[strongest])
    summary = ", ".join(f"{value:.3f}" for value in positions[:3])
    return Cell(positions, summary_value=summary)


def _metadata(run, path):
    """A field of the standardized file, or Skip when the run has none (no NeXus, another definition)."""
    try:
        return run.metadata(path)
    except (KeyError, FileNotFoundError, OSError) as missing:
        raise Skip(f"{path}: {missing}") from None


def _nxmx_geometry(run):
    """The diffraction geometry of the run's NXmx (standard paths, the NXdetector found by its
    class), or Skip when the standardized file is not NXmx (an NXtomo) or there is none."""
    definition = _metadata(run, "definition")
    if definition != "NXmx":
        raise Skip(f"{run.nexus} is {definition}, not NXmx: it has no diffraction geometry")
    with h5py.File(run.nexus, "r") as f:
        return nxmx_geometry(f, Path(run.nexus))


@Variable(title="Wavelength", units="angstrom", tags=["beam"])
def wavelength(run):
    """The beam's wavelength, as the standardized file gives it: NXmx's incident_wavelength, else
    the incident_energy (NXtomo's), in the units the file says."""
    try:
        found = run.metadata("instrument/beam/incident_wavelength")
        unit = run.metadata_attrs("instrument/beam/incident_wavelength").get("units", "angstrom")
        return float(convert(float(found), unit, "angstrom"))
    except KeyError:
        energy = float(_metadata(run, "instrument/beam/incident_energy"))
        unit = run.metadata_attrs("instrument/beam/incident_energy").get("units", "keV")
        return HC_KEV_ANGSTROM / float(convert(energy, unit, "keV"))
    except (FileNotFoundError, OSError) as missing:
        raise Skip(f"instrument/beam: {missing}") from None


@Variable(title="Energy", units="keV", tags=["beam"])
def energy(run, wavelength: "var#wavelength"):
    """The photon energy of that wavelength."""
    return HC_KEV_ANGSTROM / wavelength


@Variable(title="Exposure", units="s", tags=["detector"])
def exposure(run):
    """Each frame's counting time, from the detector's description in the Recorder's file."""
    try:
        detector = detector_group(run.frames.file["entry"], Path(run.raw_file))
    except ConfigurationError as missing:
        raise Skip(str(missing)) from None
    if "count_time" not in detector:
        raise Skip(f"the detector {detector.name} gave no count_time")
    return float(detector["count_time"][()])


@Variable(title="Frames", tags=["detector"])
def frames(run):
    """Frames in the run's file."""
    return int(run.frames.shape[0])

