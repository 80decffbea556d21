"""``photonflow standardize cbf`` on a real PILATUS image (a PILATUS 300K at Diamond's I19, from
dxtbx's test data; tests/data/pilatus/README.md): the NXmx masks exactly its -1 (module gap) and
-2 (bad pixel) pixels, gives its header's trusted range, oscillation, angles and geometry, and
keeps the header's other values as fields with units. A curved PILATUS 12M is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import fabio
import h5py
import numpy as np
import pytest
from fabio.cbfimage import CbfImage

from photonflow.drivers.camserver import module_gaps
from photonflow.errors import ConfigurationError
from photonflow.standardizing.cbf import HEADER_KEY, standardize_cbf
from photonflow.standardizing.validation import validate_nexus
from tests.helpers.paths import REPOSITORY

REAL_CBF = REPOSITORY / "tests" / "data" / "pilatus" / "phi_scan_001.cbf"


@pytest.fixture(scope="module")
def real():
    return fabio.open(str(REAL_CBF))


@pytest.fixture(scope="module")
def standardized(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("i19") / "images"
    folder.mkdir()
    shutil.copy(REAL_CBF, folder)
    output = folder.parent / "phi_scan.nxs"
    standardize_cbf(folder, output, sample="test crystal")
    return output


def detector(f: h5py.File) -> h5py.Group:
    return f["entry/instrument/pilatus"]


def test_the_mask_is_the_images_gap_and_bad_pixels(standardized, real):
    with h5py.File(standardized) as f:
        mask = detector(f)["pixel_mask"][()]
    assert mask.dtype == np.uint32 and mask.shape == real.data.shape == (619, 487)
    np.testing.assert_array_equal(mask == 1, real.data == -1)  # NeXus bit 1: gap
    np.testing.assert_array_equal(mask == 2, real.data == -2)  # bit 2: dead
    assert (mask == 1).sum() == 16558 and (mask == 2).sum() == 34  # what dxtbx masks reading the CBF: 16592
    np.testing.assert_array_equal(mask == 1, module_gaps(real.data.shape))  # two 17-row gaps: a real camserver's


def test_the_trusted_range_is_zero_to_the_headers_count_cutoff(standardized, real):
    with h5py.File(standardized) as f:
        assert detector(f)["saturation_value"][()] == real.pilatus_headers["Count_cutoff"] == 1541621
        assert detector(f)["underload_value"][()] == 0  # dxtbx's FormatCBFMiniPilatus: (0, Count_cutoff)


def test_one_image_has_the_headers_start_angle_and_oscillation_width(standardized, real):
    header = real.pilatus_headers
    with h5py.File(standardized) as f:
        axes = f["entry/sample/transformations"]
        assert (header["Start_angle"], header["Angle_increment"]) == (9.5, 0.5)
        np.testing.assert_allclose(axes["omega"][()], [header["Start_angle"]])
        np.testing.assert_allclose(axes["omega_increment"][()], [header["Angle_increment"]])  # not 0.0
        assert axes["omega_increment_set"][()] == pytest.approx(header["Angle_increment"])
        np.testing.assert_allclose(axes["omega_end"][()], [header["Start_angle"] + header["Angle_increment"]])


def test_distance_beam_centre_and_wavelength_are_the_headers(standardized, real):
    header = real.pilatus_headers
    with h5py.File(standardized) as f:
        group = detector(f)
        assert group["distance"][()] == pytest.approx(header["Detector_distance"]) == pytest.approx(0.1)
        assert (group["beam_center_x"][()], group["beam_center_y"][()]) == header["Beam_xy"] == (2000.0, 2000.0)
        assert f["entry/instrument/beam/incident_wavelength"][()] == pytest.approx(header["Wavelength"])


def test_the_headers_other_values_are_fields_with_units(standardized, real):
    header = real.pilatus_headers
    with h5py.File(standardized) as f:
        group = detector(f)
        assert group["serial_number"][()] == b"3-0104"  # "S/N 3-0104, Diamond"
        assert group["threshold_energy"][()] == header["Threshold_setting"] == 9000
        assert group["threshold_energy"].attrs["units"] == "eV"
        assert group["dead_time"][()] == pytest.approx(header["Tau"]) == pytest.approx(125e-9)
        assert group["dead_time"].attrs["units"] == "s"
        angles = f["entry/sample/goniometer_angles"]
        for name, keyword in (("chi", "Chi"), ("chi_increment", "Chi_increment"), ("phi", "Phi"),
                              ("phi_increment", "Phi_increment"), ("kappa", "Kappa"), ("two_theta", "Detector_2theta")):
            assert angles[name][()] == pytest.approx(header[keyword]), name
            assert angles[name].attrs["units"] == "deg"
        assert (angles["chi"][()], angles["phi"][()], angles["kappa"][()], angles["two_theta"][()]) == (
            -10.0, 20.0, 30.0, 20.0)
        transmission = f["entry/instrument/attenuator/attenuator_transmission"][()]
        assert transmission == pytest.approx(header["Filter_transmission"]) == pytest.approx(1.0)
        stokes = f["entry/instrument/beam/incident_polarization_stokes"][()]
        np.testing.assert_allclose(stokes, [1.0, 2 * header["Polarization"] - 1, 0.0, 0.0])
        assert "total_flux" not in f["entry/instrument/beam"]  # "Flux 0": camserver was never told one


def test_the_imgcif_geometry_a_full_cbf_also_carries_is_said_to_be_unread(standardized):
    with h5py.File(standardized) as f:
        problems = [line.decode() for line in f["entry/capture_problems/problems"][()]]
    assert [line for line in problems if "also carry imgCIF geometry" in line and "miniCBF header's" in line]


def test_the_nxmx_validates_but_for_pynxtools_known_mask_false_positive(standardized):
    report = validate_nexus(standardized)
    assert report.definition == "NXmx" and report.problems == ()
    assert [line for line in report.false_positives if "pixel_mask" in line]


def rewritten(real, folder: Path, name: str, detector_line: str, data: np.ndarray) -> Path:
    """The real image under another detector's name or size (what a 12M's header and image say)."""
    folder.mkdir()
    text = real.header[HEADER_KEY].replace("# Detector: PILATUS 300K, S/N 3-0104, Diamond", detector_line)
    CbfImage(data=data, header={"_array_data.header_convention": "PILATUS_1.2", HEADER_KEY: text}).write(
        str(folder / name))
    return folder


def test_a_curved_pilatus_12m_is_refused_not_flattened(real, tmp_path):
    folder = rewritten(real, tmp_path / "12m", "dls_12m_00001.cbf", "# Detector: PILATUS 12M, S/N 120-0100",
                       np.ascontiguousarray(real.data))
    with pytest.raises(ConfigurationError, match=r"PILATUS 12M is curved .* does not support it"):
        standardize_cbf(folder, tmp_path / "out.nxs")
    assert not (tmp_path / "out.nxs").exists() and not (tmp_path / "out_data.h5").exists()


def test_an_image_that_is_no_grid_of_modules_is_refused(real, tmp_path):
    folder = rewritten(real, tmp_path / "odd", "odd_00001.cbf", "# Detector: PILATUS 300K, S/N 3-0104",
                       np.ascontiguousarray(real.data[:600]))
    with pytest.raises(ConfigurationError, match=r"487 x 600-pixel image is no grid of PILATUS modules .* not a flat"):
        standardize_cbf(folder, tmp_path / "out.nxs")
