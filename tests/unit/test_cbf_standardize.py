"""``photonflow standardize cbf``: a 360-image PILATUS rotation series, written as CBF files by the
simulated camserver, becomes an NXmx file that validates, whose frames are the CBF images and
whose geometry is what the miniCBF headers say; a folder that is not one series is refused
naming the file, and an existing output is never touched."""

from __future__ import annotations

import shutil
from pathlib import Path

import fabio
import h5py
import hdf5plugin  # noqa: F401  (the bitshuffle filter, to read the frames)
import numpy as np
import pytest
from fabio.cbfimage import CbfImage

from photonflow.clients.cli import main
from photonflow.drivers.camserver import CamserverClient
from photonflow.errors import ConfigurationError, FilePathError
from photonflow.simulators.pilatus_camserver import Camserver, CamserverState, start_server
from photonflow.standardizing.cbf import HEADER_KEY, standardize_cbf
from photonflow.standardizing.nexus import value_sources
from photonflow.standardizing.validation import validate_nexus

FRAMES = 360
START, INCREMENT = 10.0, 0.5
WAVELENGTH, DISTANCE, BEAM = 0.97721, 0.125, (244.0, 98.0)
BITSHUFFLE = 32008


@pytest.fixture(scope="module")
def cbf_series(tmp_path_factory) -> Path:
    """360 CBF images from the simulated camserver, driven through its TCP protocol."""
    images = tmp_path_factory.mktemp("cbf") / "lysozyme_1"
    images.mkdir()
    camserver = Camserver(CamserverState("pilatus3_100k", "24-0111", images, seed=11))
    server = start_server(camserver)
    try:
        with CamserverClient(server.address) as client:
            for command in ("exptime 0.001", "expperiod 0.002", f"nimages {FRAMES}", f"imgpath {images}",
                            f"mxsettings Wavelength {WAVELENGTH} Detector_distance {DISTANCE} "
                            f"Beam_xy ({BEAM[0]}, {BEAM[1]}) Start_angle {START} Angle_increment {INCREMENT}"):
                client.command(command)
            client.command("exposure lysozyme_1.cbf")
            end = client.read_reply(120)
            assert end.code == 7 and end.ok, end
    finally:
        camserver.stop()
        server.shutdown()
        server.server_close()
    return images


@pytest.fixture(scope="module")
def standardized(cbf_series, tmp_path_factory) -> tuple[Path, Path]:
    output = tmp_path_factory.mktemp("nexus") / "lysozyme_1.nxs"
    return standardize_cbf(cbf_series, output, beamline="MANACA", sample="lysozyme")


def cbf(series: Path, number: int):
    return fabio.open(str(series / f"lysozyme_1_{number:05d}.cbf"))


def test_the_nxmx_file_validates(standardized):
    output, data = standardized
    assert data == output.with_name("lysozyme_1_data.h5")
    report = validate_nexus(output)
    assert report.definition == "NXmx" and report.problems == ()


def test_each_frame_read_through_the_nxmx_is_the_cbf_image(standardized, cbf_series):
    output, data = standardized
    with h5py.File(output, "r") as f:
        link = f["entry/data"].get("data", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename == data.name  # relative: the folder can move
        assert f["entry/instrument/pilatus"].get("data", getlink=True).filename == data.name
        frames = f["entry/data/data"]
        assert frames.shape == (FRAMES, 195, 487) and frames.dtype == np.int32
        for number in (0, FRAMES // 2, FRAMES - 1):
            np.testing.assert_array_equal(frames[number], cbf(cbf_series, number).data)


def test_omega_steps_per_frame_as_the_headers_say(standardized, cbf_series):
    output, _ = standardized
    with h5py.File(output, "r") as f:
        assert f["entry/sample/depends_on"][()] == b"/entry/sample/transformations/omega"
        omega = f["entry/sample/transformations/omega"]
        assert omega.attrs["units"] == "deg" and omega.attrs["transformation_type"] == "rotation"
        assert list(omega.attrs["vector"]) == [-1.0, 0.0, 0.0]
        np.testing.assert_allclose(omega[()], START + INCREMENT * np.arange(FRAMES))
        for number in (0, 137, FRAMES - 1):
            assert omega[number] == pytest.approx(cbf(cbf_series, number).pilatus_headers["Start_angle"], abs=1e-4)


def test_wavelength_distance_beam_centre_pixel_and_sensor_are_the_headers(standardized, cbf_series):
    output, _ = standardized
    header = cbf(cbf_series, 0).pilatus_headers
    with h5py.File(output, "r") as f:
        entry = f["entry"]
        assert entry["instrument/beam/incident_wavelength"][()] == pytest.approx(header["Wavelength"])
        assert entry["instrument/beam/incident_wavelength"].attrs["units"] == "angstrom"
        detector = entry["instrument/pilatus"]
        assert detector["distance"][()] == pytest.approx(header["Detector_distance"]) == pytest.approx(DISTANCE)
        assert entry[detector["depends_on"][()].decode()][()] == pytest.approx(DISTANCE)  # det_z, along the beam
        assert (detector["beam_center_x"][()], detector["beam_center_y"][()]) == header["Beam_xy"] == BEAM
        assert detector["beam_center_x"].attrs["units"] == "pixel"
        assert detector["x_pixel_size"][()] == detector["y_pixel_size"][()] == pytest.approx(172e-6)
        assert detector["x_pixel_size"].attrs["units"] == "m"
        assert detector["sensor_material"][()] == b"Si"
        assert detector["sensor_thickness"][()] == pytest.approx(header["sensor"][1])
        assert detector["count_time"][()] == pytest.approx(header["Exposure_time"])
        assert detector["frame_time"][()] == pytest.approx(header["Exposure_period"])
        assert detector["saturation_value"][()] == header["Count_cutoff"]
        assert detector["serial_number"][()] == b"24-0111"
        assert detector["description"][()] == b"PILATUS3 100K"
        assert entry["sample/name"][()] == b"lysozyme" and entry["source/name"][()] == b"MANACA"
    sources = value_sources(output)
    assert sources["/entry/sample/name"] == "operator: photonflow standardize cbf --sample"  # not the headers


def test_the_data_file_is_bitshuffle_lz4_and_keeps_every_header_verbatim(standardized, cbf_series):
    _, data = standardized
    with h5py.File(data, "r") as f:
        frames = f["entry/instrument/pilatus/data"]
        assert frames.chunks == (1, 195, 487)
        plist = frames.id.get_create_plist()
        assert BITSHUFFLE in [plist.get_filter(n)[0] for n in range(plist.get_nfilters())]
        headers = [text.decode() for text in f["entry/instrument/pilatus/cbf_headers"][()]]
        assert headers[0].startswith("# Detector: PILATUS3 100K, S/N 24-0111")
        for number in (0, 200, FRAMES - 1):
            assert headers[number] == cbf(cbf_series, number).header[HEADER_KEY]
        assert len(set(headers)) == FRAMES  # each image's own header, not the first one repeated
        assert f["entry/series_id"][()] == 1
        assert f["entry/instrument/pilatus/detector_specific/omega_increment"].attrs["units"] == "deg"


def small_series(cbf_series: Path, folder: Path, numbers=range(4)) -> Path:
    folder.mkdir()
    for number in numbers:
        shutil.copy(cbf_series / f"lysozyme_1_{number:05d}.cbf", folder)
    return folder


def resized(cbf_series: Path, folder: Path) -> str:
    image = cbf(cbf_series, 2)
    target = folder / "lysozyme_1_00002.cbf"
    CbfImage(data=np.ascontiguousarray(image.data[:100, :200]), header={
        "_array_data.header_convention": "PILATUS_1.2", HEADER_KEY: image.header[HEADER_KEY]}).write(str(target))
    return r"lysozyme_1_00002.cbf: the image is 200 x 100 pixels but lysozyme_1_00000.cbf is 487 x 195"


def stranger(cbf_series: Path, folder: Path) -> str:
    (folder / "notes.txt").write_text("crystal 1, cryo")
    return r"notes.txt is not a CBF file"


def not_cbf(cbf_series: Path, folder: Path) -> str:
    (folder / "lysozyme_1_00004.cbf").write_text("not an image")
    return r"lysozyme_1_00004.cbf is not a readable CBF image"


def missing(cbf_series: Path, folder: Path) -> str:
    (folder / "lysozyme_1_00002.cbf").unlink()
    return r"lysozyme_1_00003.cbf: Start_angle 11.5 deg, expected 11.0000 deg .*an image is missing"


def emptied(cbf_series: Path, folder: Path) -> str:
    for path in folder.iterdir():
        path.unlink()
    return r"holds no CBF images"


@pytest.mark.parametrize("spoil", [resized, stranger, not_cbf, missing, emptied])
def test_a_folder_that_is_not_one_series_is_refused_naming_the_file(cbf_series, tmp_path, spoil):
    folder = small_series(cbf_series, tmp_path / "series")
    message = spoil(cbf_series, folder)
    output = tmp_path / "out.nxs"
    with pytest.raises(ConfigurationError, match=message):
        standardize_cbf(folder, output)
    assert sorted(tmp_path.iterdir()) == [folder]  # neither the NXmx file nor the data file is left behind


def test_an_existing_output_is_refused_and_left_intact(cbf_series, tmp_path):
    folder = small_series(cbf_series, tmp_path / "series")
    output = tmp_path / "out.nxs"
    output.write_bytes(b"yesterday's file")
    with pytest.raises(FilePathError, match="out.nxs already exists"):
        standardize_cbf(folder, output)
    assert output.read_bytes() == b"yesterday's file"
    assert not (tmp_path / "out_data.h5").exists()


def test_the_command_prints_the_file_and_its_validation_and_refuses_to_overwrite(cbf_series, tmp_path, capsys):
    folder = small_series(cbf_series, tmp_path / "series")
    output = tmp_path / "out.nxs"
    arguments = ["standardize", "cbf", str(folder), "-o", str(output), "--beamline", "MANACA", "--sample", "lysozyme"]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert f"{output} (frames in out_data.h5)" in printed and "out.nxs: valid NXmx" in printed
    written = output.read_bytes()
    assert main(arguments) == 2
    assert f"{output} already exists" in capsys.readouterr().err
    assert output.read_bytes() == written
