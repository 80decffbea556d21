"""The DataManager's built-in processing, without Tango or a job engine: dark/flat normalization
gives exactly the expected transmission, phase correlation recovers known shifts, pyFAI finds the
CeO2 rings from the NXmx metadata alone; every result is NeXus with its NXprocess naming the
input, and an existing output is never overwritten."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from photonflow.datamanager.processing import align_images, integrate_azimuthally, normalize_tomography
from photonflow.errors import ConfigurationError, FilePathError
from tests.helpers.processing_inputs import (
    DISTANCE_MM,
    SHIFTS,
    WAVELENGTH_ANGSTROM,
    assert_peaks_at_ceo2,
    expected_normalized,
    write_ceo2_nxmx,
    write_shifted_stack,
    write_small_nxtomo,
)


@pytest.fixture(scope="module")
def ceo2_nxmx(tmp_path_factory) -> Path:
    return write_ceo2_nxmx(tmp_path_factory.mktemp("raw"))


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def assert_process_names_its_input(f: h5py.File, process: str, source: Path) -> None:
    group = f[f"entry/{process}"]
    assert text(group.attrs["NX_class"]) == "NXprocess"
    assert text(group["program"][()]).startswith("photonflow ")
    assert text(group["version"][()]) and text(group["date"][()]).endswith("Z")
    assert text(group["input_0/file_name"][()]) == str(source.resolve())
    assert text(group["input_0"].attrs["NX_class"]) == "NXnote"


def test_normalization_is_projection_minus_dark_over_flat_minus_dark(tmp_path):
    source = write_small_nxtomo(tmp_path / "scan.nxs")
    output = normalize_tomography(source, tmp_path / "processed" / "scan_normalized.nxs")
    assert output == tmp_path / "processed" / "scan_normalized.nxs"
    with h5py.File(output) as f:
        data = f["entry/data/data"]
        assert data.dtype == np.float32
        np.testing.assert_array_equal(data[()], expected_normalized())
        assert data[0, 1, 2] == 0.0  # flat == dark there: guarded, not inf or nan
        assert list(f["entry/data/rotation_angle"][()]) == [0.0, 90.0, 180.0]
        assert f["entry/data/rotation_angle"].attrs["units"] == "deg"
        assert text(f["entry/data"].attrs["signal"]) == "data"
        assert f["entry/normalization/parameters/flats"][()] == 2
        assert_process_names_its_input(f, "normalization", source)
    assert [p.name for p in output.parent.iterdir()] == ["scan_normalized.nxs"]  # no partial file left


def test_normalization_without_flats_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "darks_only.nxs"
    with h5py.File(path, "w") as f:
        f["entry/instrument/detector/data"] = np.zeros((2, 2, 2), dtype=np.uint16)
        f["entry/instrument/detector/image_key"] = np.array([2, 0])
    with pytest.raises(ConfigurationError, match="no flat"):
        normalize_tomography(path, tmp_path / "out.nxs")
    assert not (tmp_path / "out.nxs").exists()


def test_alignment_recovers_known_integer_shifts(tmp_path):
    source = write_shifted_stack(tmp_path / "stack.h5")
    output = align_images(source, tmp_path / "aligned.nxs")
    with h5py.File(output) as f:
        shifts = f["entry/data/shifts"][()]
        assert f["entry/data/shifts"].attrs["units"] == "pixel"
        assert list(f["entry/data/frame_number"][()]) == [0, 1, 2, 3]
        assert_process_names_its_input(f, "alignment", source)
        assert "scikit-image" in text(f["entry/alignment/program"][()])
    # scikit-image's convention: the shift that registers each frame back onto the first
    np.testing.assert_allclose(shifts, -np.array(SHIFTS, dtype=float), atol=0.05)


def test_azimuthal_integration_finds_the_ceo2_rings_from_the_nxmx_metadata(ceo2_nxmx, tmp_path):
    output = integrate_azimuthally(ceo2_nxmx, tmp_path / "ceo2_integrated.nxs", npt=1000)
    with h5py.File(output) as f:
        q, intensity = f["entry/data/q"], f["entry/data/I"]
        assert q.shape == intensity.shape == (1000,)
        assert q.attrs["units"] == "1/nm" and intensity.attrs["units"] == "counts"
        assert_peaks_at_ceo2(f["entry/peaks/q"][()])
        parameters = f["entry/integration/parameters"]
        assert parameters["wavelength"][()] == pytest.approx(WAVELENGTH_ANGSTROM * 1e-10)
        assert parameters["distance"][()] == pytest.approx(DISTANCE_MM / 1000.0)
        assert parameters["beam_center_x"][()] == 205.0 and parameters["beam_center_y"][()] == 190.0
        assert parameters["frames_summed"][()] == 4
        assert_process_names_its_input(f, "integration", ceo2_nxmx)


def test_an_existing_output_is_never_overwritten(tmp_path):
    source = write_small_nxtomo(tmp_path / "scan.nxs")
    existing = tmp_path / "taken.nxs"
    existing.write_bytes(b"someone else's result")
    with pytest.raises(FilePathError, match="already exists"):
        normalize_tomography(source, existing)
    assert existing.read_bytes() == b"someone else's result"


def test_a_missing_input_is_reported_with_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.nxs"):
        integrate_azimuthally(tmp_path / "absent.nxs", tmp_path / "out.nxs")
    assert not (tmp_path / "out.nxs").exists()
