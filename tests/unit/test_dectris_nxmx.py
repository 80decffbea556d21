"""A DECTRIS stream's header in the NXmx: bit depths true to the frames (uint32 images say 32, as
DIALS needs), the stream's user_data (sample, space group, unit cell, axis directions; the rest as
it came), the goniometer angles the mapping does not name as fields with units, each with its
source; malformed user_data is a capture problem, never a crash."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from photonflow.acquisition.acquirer import Acquirer
from photonflow.acquisition.dectris import DectrisCamera, DectrisSettings
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.dectris_dcu import DetectorModel, SimulatedDcu, start_server
from photonflow.standardizing.nexus import value_sources
from photonflow.standardizing.validation import validate_nexus
from photonflow.stream import dectris
from tests.helpers.dectris import DETECTOR, SERIES, record_dectris
from tests.helpers.recording import acquire_into
from tests.helpers.standardizing import BeamlineReader, beamline_values, standardize

SHAPE = (12, 14)
USER_DATA = {"sample_name": "CeO2_NIST_674b", "space_group": "F m -3 m",
             "unit_cell": [5.4116, 5.4116, 5.4116, 90.0, 90.0, 90.0], "attenuator": "Al 0.1 mm",
             "attenuator_transmission": 0.61, "omega_axis": [-1.0, 0.0, 0.0]}
GONIOMETER = {"omega": {"start": 0.0, "increment": 0.1}, "chi": {"start": 2.5, "increment": 0.0},
              "phi": {"start": 30.0, "increment": 0.0}, "two_theta": {"start": -1.5, "increment": 0.0}}


def frames(dtype: str, count: int = 2) -> list[np.ndarray]:
    base = np.arange(math.prod(SHAPE), dtype=np.uint64).reshape(SHAPE)
    return [((base * 7919 + n) % 100_000).astype(dtype) for n in range(count)]


def v2_start(image_dtype: str | None = None, **extra) -> list:
    return dectris.encode_start_v2(SERIES, SHAPE, 2, DETECTOR, image_dtype=image_dtype, extra=extra)


def nxmx(tmp_path, protocol: str, start: list, dtype: str, sample: str = "ceo2"):
    """(the NXmx file, its Standardizer, the Recorder's file) of a two-frame series."""
    recorded = record_dectris(tmp_path, "mx/series.h5", protocol, start, frames(dtype))
    output, standardizer = standardize(recorded, BeamlineReader({**beamline_values(), "datamanager/Sample": sample}))
    return output, standardizer, recorded


def detector_of(f: h5py.File) -> h5py.Group:
    return next(g for g in f["entry/instrument"].values() if g.attrs.get("NX_class") == "NXdetector")


def test_stream_v1_uint32_images_say_32_bits_whatever_the_readout_and_dials_reader_takes_them(tmp_path):
    """An EIGER2 sums its 16-bit readout into 32-bit images: the NXmx's bit_depth_readout is the
    images' 32 (NXmx readers flag 2^32-1 and need 32 for uint32), the electronics' 16 kept apart."""
    start = dectris.encode_start_v1(SERIES, SHAPE, "uint32", 2, {**DETECTOR, "bit_depth_readout": 16}, encoding="raw")
    output, _, _ = nxmx(tmp_path, "dectris-v1", start, "uint32")
    with h5py.File(output) as f:
        detector = detector_of(f)
        assert detector["bit_depth_readout"][()] == 32
        assert detector["detector_specific/bit_depth_image"][()] == 32
        assert detector["detector_specific/bit_depth_readout"][()] == 16  # the header's, not lost
        assert f["entry/data/data"].dtype == np.uint32
        import nxmx as diamond_nxmx  # what dxtbx builds on

        assert diamond_nxmx.NXmx(f).entries[0].instruments[0].detectors[0].bit_depth_readout == 32
        name = detector.name
    sources = value_sources(output)
    assert sources[f"{name}/bit_depth_readout"] == "the frames: uint32 pixels in the Recorder's file"
    assert sources[f"{name}/detector_specific/bit_depth_readout"] == "detector header: bit_depth_readout"


def test_a_dcu_summing_into_32_bit_images_over_stream_v1_gives_an_nxmx_of_32_bits(tmp_path):
    """The issue's case end to end: a DCU whose readout is 16 bits sends uint32 images on the legacy
    stream; the NXmx says 32, the DCU's own 16 beside it."""
    model = DetectorModel("Dectris EIGER2 Si test", 96, 64, 75e-6, "Si", 450e-6, 2000.0, 3e-6)
    simulated = SimulatedDcu(model, serial_number="E-08-0042", seed=3, bit_depth_image=32)
    server = start_server(simulated)
    try:
        camera = DectrisCamera(DectrisSettings(server.url, stream_endpoint=simulated.sender.endpoint,
                                               stream_format="legacy"))
        acquirer = Acquirer(camera, sender=None)
        acquirer.update_settings(frame_count=2, exposure=0.001, period=0.002)
        recorded = acquire_into(acquirer, Recorder(tmp_path), RecordingRequest(
            2, 1, acquirer.stream_endpoint, "mx/eiger.h5", acquirer.stream_protocol))
        camera.close()
    finally:
        server.shutdown()
        server.server_close()
        simulated.close()
    output, _ = standardize(recorded, BeamlineReader(beamline_values()))
    with h5py.File(output) as f, h5py.File(recorded) as master:
        assert detector_of(master)["data"].dtype == np.uint32
        assert detector_of(master)["bit_depth_readout"][()] == 16  # what the DCU's header says
        detector = detector_of(f)
        assert detector["bit_depth_readout"][()] == detector["detector_specific/bit_depth_image"][()] == 32
        assert detector["detector_specific/bit_depth_readout"][()] == 16
    assert validate_nexus(output).problems == ()


@pytest.mark.parametrize(("image_dtype", "dtype"), [(None, "uint32"), ("uint16", "uint16")])
def test_stream_v2_has_no_bit_depth_the_images_pixel_type_gives_it(tmp_path, image_dtype, dtype):
    output, standardizer, recorded = nxmx(tmp_path, "dectris-v2", v2_start(image_dtype), dtype)
    bits = np.dtype(dtype).itemsize * 8
    with h5py.File(output) as f, h5py.File(recorded) as master:
        detector = detector_of(f)
        assert detector["bit_depth_readout"][()] == detector["detector_specific/bit_depth_image"][()] == bits
        told = detector_of(master).get("detector_specific/bit_depth_image")
        assert (told[()] if told is not None else None) == (bits if image_dtype else None)
    assert standardizer.state == "ON", standardizer.status


def test_user_data_and_the_headers_angles_reach_the_nxmx_with_units_and_sources(tmp_path):
    start = v2_start("uint16", goniometer=GONIOMETER, user_data=json.dumps(USER_DATA))
    output, standardizer, _ = nxmx(tmp_path, "dectris-v2", start, "uint16")
    assert standardizer.state == "ON", standardizer.status
    with h5py.File(output) as f:
        sample = f["entry/sample"]
        assert sample["name"][()].decode() == "ceo2"  # the DataManager's sample first
        assert sample["space_group"][()].decode() == USER_DATA["space_group"]
        np.testing.assert_array_equal(sample["unit_cell_abc"][()], USER_DATA["unit_cell"][:3])
        np.testing.assert_array_equal(sample["unit_cell_alphabetagamma"][()], USER_DATA["unit_cell"][3:])
        assert (sample["unit_cell_abc"].attrs["units"], sample["unit_cell_alphabetagamma"].attrs["units"]) == (
            "angstrom", "deg")
        angles = sample["detector_goniometer"]
        for axis in ("chi", "phi", "two_theta"):  # the mapping names omega only
            assert angles[f"{axis}_start"][()] == GONIOMETER[axis]["start"]
            assert angles[f"{axis}_start"].attrs["units"] == angles[f"{axis}_increment"].attrs["units"] == "deg"
        assert "omega_start" not in angles  # omega is in the depends_on chain
        np.testing.assert_array_equal(angles["omega_axis"][()], USER_DATA["omega_axis"])
        rest = detector_of(f)["user_data"]
        assert rest["attenuator"][()].decode() == "Al 0.1 mm" and rest["attenuator_transmission"][()] == 0.61
        detector = detector_of(f).name
    sources = value_sources(output)
    assert sources["/entry/sample/name"] == "DataManager: test/photonflow/datamanager/Sample"
    assert sources["/entry/sample/space_group"] == "detector header: user_data space_group"
    assert sources["/entry/sample/detector_goniometer/chi_start"] == "detector header: chi_start"
    assert sources[f"{detector}/beam_center_x"] == "detector header: beam_center_x"
    assert sources[f"{detector}/saturation_value"] == "detector header: saturation_value"
    assert validate_nexus(output).problems == ()


def test_with_no_experiment_sample_the_stream_v1_appendix_names_it(tmp_path):
    """No DataManager sample: /entry/sample/name is the one the beamline told the detector (v1 sends
    user_data as the header's appendix), and says so."""
    start = dectris.encode_start_v1(SERIES, SHAPE, "uint16", 2, DETECTOR, encoding="raw", appendix=USER_DATA)
    output, standardizer, _ = nxmx(tmp_path, "dectris-v1", start, "uint16", sample="")
    assert standardizer.state == "ON", standardizer.status
    with h5py.File(output) as f:
        assert f["entry/sample/name"][()].decode() == USER_DATA["sample_name"]
    assert value_sources(output)["/entry/sample/name"] == "detector header: header_appendix sample_name"


@pytest.mark.parametrize(("user_data", "problem", "space_group"), [
    ("sample=lysozyme; sg=P43212", "detector/user_data: not JSON", None),
    (json.dumps(["lysozyme"]), "detector/user_data: a JSON list, not an object", None),
    (json.dumps({"space_group": "P 43 21 2", "unit_cell": [78.1, 78.1, 37.2, 90.0, 90.0]}),
     "detector/user_data: 'unit_cell' must be 6 positive numbers", "P 43 21 2"),
    (json.dumps({"space_group": "P 43 21 2", "omega_axis": [1.0, 0.0, 0.0]}),
     "detector/user_data: omega_axis [1.0, 0.0, 0.0] is not the mapping's [-1.0, 0.0, 0.0]", "P 43 21 2"),
])
def test_malformed_user_data_is_a_named_problem_never_a_crash(tmp_path, user_data, problem, space_group):
    output, standardizer, _ = nxmx(tmp_path, "dectris-v2", v2_start("uint16", user_data=user_data), "uint16")
    assert standardizer.state == "ALARM" and problem in standardizer.status
    with h5py.File(output) as f:
        problems = " ".join(p.decode() for p in f["entry/capture_problems/problems"][()])
        assert problem in problems
        assert f["entry/sample/name"][()].decode() == "ceo2"
        found = f["entry/sample"].get("space_group")
        assert (found[()].decode() if found is not None else None) == space_group
    assert validate_nexus(output).problems == ()
