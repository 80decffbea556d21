"""The NXtomo as the tomography tools read it: nxtomo's consistency check passes and tomoscan (what
nabu reads through) gives back the values of their sources; a copy that lost its frames is
refused by photonflow's readers, naming the missing file; the DataManager finds the NXtomo under
its own suffix and its variables work on it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from photonflow.datamanager.catalogue import Catalogue
from photonflow.datamanager.context import RunData, Skip, load_context
from photonflow.datamanager.manager import DataManager, SeriesResult
from photonflow.errors import FilePathError
from photonflow.standardizing.standard_files import require_virtual_sources, standardized_path
from photonflow.standardizing.validation import validate_nexus
from tests.helpers.paths import REPOSITORY
from tests.helpers.processing_inputs import write_small_nxtomo
from tests.helpers.tomography import TomographyTruth, write_tomography_of_phantom

TRUTH = TomographyTruth()
DEMO_CONTEXT = REPOSITORY / "config" / "context.py"
INSTALL = "pip install -e '.[tomo]' (make test does)"


@pytest.fixture(scope="module")
def nxtomo(tmp_path_factory) -> Path:
    return write_tomography_of_phantom(tmp_path_factory.mktemp("tomo"))


def test_an_nxtomo_takes_the_suffix_nabu_opens_and_an_nxmx_keeps_its_own():
    assert standardized_path("/d/0003_tomo_projections.h5", "NXtomo") == Path("/d/0003_tomo_projections.nx")
    assert standardized_path("/d/series.h5", "NXmx") == Path("/d/series.nxs")


def test_nxtomo_finds_the_file_consistent(nxtomo, caplog):
    application = pytest.importorskip("nxtomo.application.nxtomo", reason=f"nxtomo not installed: {INSTALL}")
    loaded = application.NXtomo().load(str(nxtomo), "entry")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nxtomo"):
        application.NXtomo.check_consistency(loaded, raises_error=True)  # raises on a count that differs
    frames = TRUTH.darks + TRUTH.flats + TRUTH.projections
    assert len(loaded.instrument.detector.data) == len(loaded.instrument.detector.image_key_control) == frames
    assert len(loaded.instrument.detector.count_time) == len(loaded.sample.rotation_angle) == frames
    # what it still notes is only what the beamline has no stage for (no sample y or z translation)
    assert {record.getMessage() for record in caplog.records} <= {
        ".sample.y_translation not defined", ".sample.z_translation not defined"}


def test_tomoscan_reads_every_value_as_its_source_gave_it(nxtomo):
    nxtomoscan = pytest.importorskip("tomoscan.esrf.scan.nxtomoscan", reason=f"tomoscan not installed: {INSTALL}")
    scan = nxtomoscan.NXtomoScan(str(nxtomo), "entry")
    assert scan.energy == pytest.approx(TRUTH.energy_kev)  # keV, the monochromator's
    assert scan.sample_detector_distance == pytest.approx(TRUTH.distance_mm / 1000)  # m, the detector stage's
    assert scan.detector_x_pixel_size == pytest.approx(TRUTH.pixel_size)  # the camera's description
    assert scan.detector_y_pixel_size == pytest.approx(TRUTH.pixel_size)
    assert str(scan.field_of_view.value) == "Full"  # the mapping's
    assert scan.sample_name == TRUTH.sample  # the DataManager's
    keys = np.asarray(scan.image_key)
    assert list(keys) == [2] * TRUTH.darks + [1] * TRUTH.flats + [0] * TRUTH.projections
    np.testing.assert_allclose(np.asarray(scan.rotation_angle)[keys == 0], TRUTH.angles)  # the position-compare's
    np.testing.assert_allclose(scan.count_time, TRUTH.count_time)  # one per frame, the camera's
    assert sorted(scan.projections) == list(range(TRUTH.darks + TRUTH.flats, len(keys)))
    from silx.io.utils import get_data  # how tomoscan's users read a frame: its DataUrl

    with h5py.File(nxtomo.with_name("0003_tomo_projections.h5")) as source:
        np.testing.assert_array_equal(get_data(scan.projections[TRUTH.darks + TRUTH.flats + 3]),
                                      source["entry/instrument/camera/data"][3])


def test_a_moved_nxtomo_that_lost_its_frames_is_refused_naming_the_missing_file(nxtomo, tmp_path):
    moved = Path(shutil.copy(nxtomo, tmp_path / nxtomo.name))
    with h5py.File(moved) as f:
        assert not f["entry/instrument/detector/data"][0].any()  # what HDF5 alone gives: zeros, no error
        with pytest.raises(FilePathError, match="0001_tomo_darks.h5") as refused:
            require_virtual_sources(f)
    assert refused.value.reason == "VirtualSourceMissing"
    with pytest.raises(FilePathError, match="0001_tomo_darks.h5"):
        validate_nexus(moved)
    run = RunData(number=3, raw_file=str(nxtomo.with_name("0003_tomo_projections.h5")), nexus=str(moved))
    try:
        with pytest.raises(FilePathError, match="lost the frames"):
            run.metadata("definition")
    finally:
        run.close()


def test_a_folder_moved_whole_keeps_its_frames(nxtomo, tmp_path):
    folder = Path(shutil.copytree(nxtomo.parent, tmp_path / "moved"))
    with h5py.File(folder / nxtomo.name) as f, h5py.File(folder / "0001_tomo_darks.h5") as darks:
        require_virtual_sources(f)
        np.testing.assert_array_equal(f["entry/instrument/detector/data"][0], darks["entry/instrument/camera/data"][0])


def test_the_demo_contexts_variables_work_on_an_nxtomo_run(nxtomo):
    variables = load_context(DEMO_CONTEXT).vars
    raw = nxtomo.with_name("0003_tomo_projections.h5")
    run = RunData(number=3, role="data", raw_file=str(raw), nexus=str(nxtomo))
    try:
        with h5py.File(raw) as f:
            frames = f["entry/instrument/camera/data"][()]
        np.testing.assert_allclose(variables["mean_intensity"].func(run), frames.mean(axis=(1, 2)))
        np.testing.assert_allclose(variables["ring_current"].func(run), 200.0)  # NXtomo's control/data (mA)
        wavelength = variables["wavelength"].func(run)
        assert variables["energy"].func(run, wavelength) == pytest.approx(TRUTH.energy_kev)
        assert variables["exposure"].func(run) == pytest.approx(TRUTH.count_time)
        assert variables["frames"].func(run) == TRUTH.projections
        with pytest.raises(Skip, match="is NXtomo, not NXmx"):
            variables["azimuthal_integration"].func(run, frames.sum(axis=0))
    finally:
        run.close()


class RecordedJobs:
    """A job engine that only notes what it was given."""

    def __init__(self):
        self.submitted = []

    def submit(self, name, function, source, output):
        self.submitted.append((name, function.__name__, Path(source)))
        return name

    def jobs(self):
        return []


def test_the_datamanager_catalogues_each_tomography_run_with_its_role_and_nxtomo(tmp_path):
    """Each run of the structure gets the NXtomo the Standardizer wrote beside its file (.nx), found
    by the Standardizer's event or on disk; the projections' run is normalized by its flats, not integrated."""
    jobs = RecordedJobs()
    manager = DataManager(tmp_path / "data", "tomo", tmp_path / "catalogue", jobs=jobs)
    try:
        manager.set_experiment("tm0002", "s1", "phantom")
        manager.load_structure(str(REPOSITORY / "config" / "structures" / "tomography.yaml"))
        manager.begin_sequence()
        files = []
        while (step := manager.next_acquisition()) is not None:
            raw = Path(step["controller"]["file"])
            files.append(raw)
            raw.parent.mkdir(parents=True, exist_ok=True)
            nxtomo = standardized_path(raw, "NXtomo")
            if step["role"] != "dark":  # the Standardizer was quicker: the file is there when the run is catalogued
                write_small_nxtomo(nxtomo)
            manager.series_ended(SeriesResult(len(files), str(raw), 5, 5, 0, "completed"))
            assert manager.wait_idle(10)
            if step["role"] == "dark":  # the Standardizer's event, after the run is catalogued
                manager.standardized(str(write_small_nxtomo(nxtomo)))
                assert manager.wait_idle(10)
    finally:
        manager.close()
    runs = Catalogue(tmp_path / "catalogue", "tm0002").runs()
    assert [(run.role, run.nexus_file) for run in runs] == [
        (role, str(raw.with_suffix(".nx"))) for role, raw in zip(("dark", "flat", "data"), files, strict=True)]
    assert jobs.submitted == [("normalization-r3", "normalize_tomography", files[2].with_suffix(".nx"))]
    exported = (tmp_path / "catalogue" / "tm0002_icat" / "tm0002_r0001.icat.json").read_text()
    assert str(files[0].with_suffix(".nx")) in exported  # the ICAT export lists the dark run's NXtomo
