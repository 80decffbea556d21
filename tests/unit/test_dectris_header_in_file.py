"""Every field of a DECTRIS header reaches the file, with units: masks and flatfields where
NXdetector puts them, the goniometer, user data, the detector's own counts and firmware in
detector_specific."""

import json

import h5py
import numpy as np
import pytest

from photonflow import states
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.stream import dectris
from photonflow.stream.transport import StreamSender

SHAPE = (12, 10)
FRAME = (np.arange(120, dtype=np.uint16).reshape(SHAPE) * 3) % 17
PIXEL_MASK = np.zeros(SHAPE, np.uint32)
PIXEL_MASK[3, 4], PIXEL_MASK[0, :] = 1, 8  # a dead pixel, a gap row
FLATFIELD = np.linspace(0.9, 1.1, 120, dtype=np.float32).reshape(SHAPE)
COUNTRATE_TABLE = np.arange(16, dtype=np.uint32).reshape(2, 8)
DETECTOR = {"serial_number": "E-32-0123", "count_time": 0.01, "incident_energy": 12400.0,
            "incident_wavelength": 1.0e-10, "flatfield_applied": True}


@pytest.fixture
def sender():
    stream = StreamSender("tcp://127.0.0.1:*")
    yield stream
    stream.close()


def record(tmp_path, sender, protocol, start, image, end):
    recorder = Recorder(tmp_path)
    path = recorder.arm(RecordingRequest(1, 5, sender.endpoint, f"{protocol}.h5", protocol=protocol))
    for parts in (start, image, end):
        sender.send(parts)
    assert recorder.wait(10)
    assert recorder.state == states.ON, recorder.status
    return path


def detector_group(f):
    return next(g for g in f["entry/instrument"].values() if g.attrs.get("NX_class") == "NXdetector")


def test_stream_v2_keeps_masks_goniometer_user_data_and_units(tmp_path, sender):
    start = dectris.encode_start_v2(
        5, shape=SHAPE, frame_count=1, detector=DETECTOR, image_dtype="uint16",
        extra={
            "goniometer": {"omega": {"start": 10.0, "increment": 0.1}, "chi": {"start": 2.0, "increment": 0.0}},
            "user_data": {"sample": "lysozyme", "shots": [1, 2]},
            "pixel_mask": PIXEL_MASK, "flatfield": FLATFIELD, "countrate_correction_lookup_table": COUNTRATE_TABLE,
        },
    )
    path = record(tmp_path, sender, "dectris-v2", start, dectris.encode_image_v2(5, 0, FRAME, encoding="raw"),
                  dectris.encode_end_v2(5))
    with h5py.File(path, "r") as f:
        detector = detector_group(f)
        np.testing.assert_array_equal(detector["pixel_mask"][()], PIXEL_MASK)
        np.testing.assert_array_equal(detector["flatfield"][()], FLATFIELD)
        np.testing.assert_array_equal(detector["countrate_correction_lookup_table"][()], COUNTRATE_TABLE)
        assert detector["flatfield_applied"][()] and detector["flatfield_applied"].dtype == np.bool_
        specific = detector["detector_specific"]
        assert (specific["omega_start"][()], specific["omega_increment"][()]) == (10.0, 0.1)
        assert specific["omega_start"].attrs["units"] == specific["chi_increment"].attrs["units"] == "deg"
        assert json.loads(specific["user_data"][()]) == {"sample": "lysozyme", "shots": [1, 2]}
        assert specific["incident_energy"][()] == 12400.0 and specific["incident_energy"].attrs["units"] == "eV"
        assert specific["incident_wavelength"].attrs["units"] == "m"
        assert specific["number_of_images"][()] == 1
        np.testing.assert_array_equal(f["entry/data/data"][0], FRAME)


def test_stream_v1_keeps_tables_goniometer_counts_firmware_and_appendix(tmp_path, sender):
    start = dectris.encode_start_v1(
        5, shape=SHAPE, dtype="uint16", frame_count=1, detector=DETECTOR, encoding="raw", header_detail="all",
        appendix={"beamline": "MANACA"},
        extra={"omega_start": 10.0, "omega_increment": 0.1, "phi_start": 0.0, "two_theta_start": 0.0,
               "eiger_fw_version": "release-2022.1", "frame_count_time": 0.0099, "ntrigger": 1},
        tables={"pixel_mask": PIXEL_MASK, "flatfield": FLATFIELD, "countrate_correction_lookup_table": COUNTRATE_TABLE},
    )
    path = record(tmp_path, sender, "dectris-v1", start, dectris.encode_image_v1(5, 0, FRAME, encoding="raw"),
                  dectris.encode_end_v1(5))
    with h5py.File(path, "r") as f:
        detector = detector_group(f)
        np.testing.assert_array_equal(detector["pixel_mask"][()], PIXEL_MASK)
        np.testing.assert_array_equal(detector["flatfield"][()], FLATFIELD)
        np.testing.assert_array_equal(detector["countrate_correction_lookup_table"][()], COUNTRATE_TABLE)
        specific = detector["detector_specific"]
        assert specific["omega_increment"][()] == 0.1 and specific["omega_increment"].attrs["units"] == "deg"
        assert specific["two_theta_start"].attrs["units"] == "deg"
        assert specific["eiger_fw_version"][()].decode() == "release-2022.1"
        assert specific["frame_count_time"].attrs["units"] == "s"
        assert (specific["nimages"][()], specific["ntrigger"][()]) == (1, 1)
        assert json.loads(specific["header_appendix"][()]) == {"beamline": "MANACA"}
        assert specific["incident_energy"].attrs["units"] == "eV"
        np.testing.assert_array_equal(f["entry/data/data"][0], FRAME)
