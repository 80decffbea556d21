"""The DECTRIS driver against the simulated DCU: SIMPLON over real HTTP, frames over real ZeroMQ."""

import json
import time
import urllib.request

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle filter for reading
import numpy as np
import pytest

from photonflow import states
from photonflow.acquisition.acquirer import Acquirer
from photonflow.acquisition.beamline import Beamline, BeamlineNames
from photonflow.acquisition.dectris import BeamlineFollowingDectris, DectrisCamera, DectrisSettings
from photonflow.camera import AcquisitionSettings, Rotation
from photonflow.drivers.simplon import SimplonClient
from photonflow.errors import ConfigurationError, DetectorConnectionLost, DetectorError
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.dectris_dcu import (
    DetectorModel,
    SimplonError,
    SimulatedDcu,
    start_server,
)
from photonflow.simulators.diffraction import DiffractionFrames, PatternSettings
from photonflow.stream.bslz4 import compress
from tests.helpers.recording import acquire_into
from tests.helpers.trigger_line import (
    WatchedTriggerLine,
    acquirer_and_recorder,
    assert_recorded_frames_are_the_pulses,
    pulse_fewer_than_asked,
    start_recorded_series,
)

# A small EIGER2-like sensor keeps the series quick; the geometry is read back from the DCU.
SMALL = DetectorModel("Dectris EIGER2 Si test", 96, 64, 75e-6, "Si", 450e-6, 2000.0, 3e-6)


@pytest.fixture
def dcu():
    simulated = SimulatedDcu(SMALL, serial_number="E-08-0042", seed=3)
    server = start_server(simulated)
    yield simulated, server
    server.shutdown()
    server.server_close()
    simulated.close()


def fail_next(server, fault, **extra):
    """Tell the simulated DCU to fail its next SIMPLON request (its own control URL)."""
    request = urllib.request.Request(
        f"{server.url}/simulator/api/1.0/command/fail", method="PUT",
        data=json.dumps({"value": fault, **extra}).encode(), headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).read()


def test_config_values_come_with_their_simplon_description(dcu):
    _, server = dcu
    with SimplonClient(server.url) as client:
        check_descriptions(client)


def check_descriptions(client):
    count_time = client.describe("detector", "count_time")
    assert count_time["value_type"] == "float" and count_time["unit"] == "s" and count_time["access_mode"] == "rw"
    assert count_time["min"] == 3e-6 and count_time["max"] == 3600.0
    assert client.get("detector", "x_pixels_in_detector") == 96
    assert client.describe("detector", "trigger_mode")["allowed_values"] == ["ints", "inte", "exts", "exte"]
    assert client.set("detector", "photon_energy", 8000.0) == ["photon_energy", "wavelength", "threshold_energy"]
    assert client.get("detector", "wavelength") == pytest.approx(12398.42 / 8000.0, rel=1e-5)


def test_the_dcus_refusals_reach_the_operator_in_its_own_words(dcu):
    _, server = dcu
    with SimplonClient(server.url) as client:
        check_refusals(client)


def check_refusals(client):
    with pytest.raises(DetectorError, match=r"HTTP 400\): count_time: value 99999.0 out of range \[3e-06, 3600.0\]"):
        client.set("detector", "count_time", 99999)
    with pytest.raises(DetectorError, match=r"HTTP 403\): detector: x_pixel_size is read-only"):
        client.set("detector", "x_pixel_size", 1.0)
    with pytest.raises(DetectorError, match=r"HTTP 404\): detector: no config parameter 'nonsense'"):
        client.get("detector", "nonsense")
    with pytest.raises(DetectorError, match="arm is not allowed in state na"):
        client.command("arm")


@pytest.mark.parametrize("fault, error, message", [
    ("http_error", DetectorError, r"HTTP 500\): internal error: simulated DCU failure"),
    ("drop", DetectorConnectionLost, "no answer from the DCU"),
    ("stall", DetectorConnectionLost, "timed out"),
])
def test_a_failing_dcu_gives_a_clear_error_and_the_next_request_works(dcu, fault, error, message):
    _, server = dcu
    with SimplonClient(server.url, timeout=0.5) as client:
        assert client.status("detector", "state") == "na"
        fail_next(server, fault, seconds=2)
        with pytest.raises(error, match=message):
            client.status("detector", "state")
        assert client.status("detector", "state") == "na"


def test_an_unreachable_dcu_is_a_lost_connection_naming_it():
    with pytest.raises(DetectorConnectionLost, match=r"no answer from the DCU at http://127.0.0.1:9"):
        with SimplonClient("http://127.0.0.1:9", timeout=1) as client:
            client.status("detector", "state")


def record_series(dcu, stream_format, frames, trigger_mode="internal", tmp_path=None, stop_after=None,
                  series_id=1, file="eiger.h5"):
    simulated, server = dcu
    camera = DectrisCamera(DectrisSettings(server.url, stream_endpoint=simulated.sender.endpoint,
                                           stream_format=stream_format))
    acquirer = Acquirer(camera, sender=None)
    recorder = Recorder(tmp_path)
    acquirer.update_settings(frame_count=frames, exposure=0.001, period=0.002, trigger_mode=trigger_mode)
    request = RecordingRequest(frames, series_id, acquirer.stream_endpoint, file, acquirer.stream_protocol)
    path = acquire_into(acquirer, recorder, request, stop_after)
    camera.close()
    return acquirer, recorder, path


@pytest.mark.parametrize("stream_format, protocol", [("cbor", "dectris-v2"), ("legacy", "dectris-v1")])
def test_a_series_reaches_the_file_as_the_dcu_streamed_it(dcu, tmp_path, stream_format, protocol):
    simulated, _ = dcu
    acquirer, recorder, path = record_series(dcu, stream_format, 20, tmp_path=tmp_path)
    assert acquirer.stream_protocol == protocol
    assert acquirer.state == states.ON and acquirer.frames_acquired == 20, acquirer.status
    assert recorder.state == states.ON and recorder.counters.frames_written == 20, recorder.status
    with h5py.File(path, "r") as f:
        data = f["entry/data/data"]
        assert data.shape == (20, 64, 96)
        for n in (0, 7, 19):
            expected = simulated.frame(n)
            np.testing.assert_array_equal(data[n], expected)  # decompressed by the HDF5 filter
            mask, chunk = data.id.read_direct_chunk((n, 0, 0))
            assert mask == 0 and chunk == bytes(compress(expected))  # stored as the DCU sent it
        (detector,) = [group for group in f["entry/instrument"].values() if group.attrs.get("NX_class") == "NXdetector"]
        assert detector["serial_number"][()].decode() == "E-08-0042"
        assert detector["sensor_material"][()].decode() == "Si"


def test_trigger_modes_and_the_exposure_limit_are_the_dcus(dcu):
    _, server = dcu
    camera = DectrisCamera(DectrisSettings(server.url))
    acquirer = Acquirer(camera, sender=None)
    with pytest.raises(ConfigurationError, match=r"exposure must be between 3e-06 s"):
        acquirer.update_settings(exposure=1e-7)
    with pytest.raises(ConfigurationError,
                       match="internal, internal_enable, external_start, external, external_enable"):
        acquirer.update_settings(trigger_mode="gate")
    assert camera.frame_shape == (64, 96) and camera.frame_dtype == "uint16"
    assert camera.stream_endpoint == "tcp://127.0.0.1:31001"  # the DCU's own port when none is given
    # What the Controller's Configure asks (CheckSettings): the DCU's own frame rate limit, nothing armed.
    with pytest.raises(ConfigurationError, match=r"frame_time 0.0001 s is outside what the detector accepts: "
                                                 r"0.0005 to 3600.0 s"):
        acquirer.check_settings(exposure=1e-5, period=1e-4)
    acquirer.check_settings(exposure=1e-3, period=1e-3)
    camera.close()


def test_stop_mid_series_ends_it_at_the_dcu_and_the_file_holds_what_was_taken(dcu, tmp_path):
    simulated, _ = dcu
    simulated.config["detector"]["frame_time"].min = 0.0
    acquirer, recorder, path = record_series(dcu, "cbor", 2000, tmp_path=tmp_path, stop_after=5)
    assert acquirer.last_end_reason == "stopped" and 5 <= acquirer.frames_acquired < 2000
    assert recorder.counters.frames_written == acquirer.frames_acquired
    with h5py.File(path, "r") as f:
        assert f["entry/data/data"].shape[0] == acquirer.frames_acquired


def test_a_dcu_that_fails_mid_series_puts_the_acquirer_in_fault_with_its_message(dcu, tmp_path):
    simulated, server = dcu
    camera = DectrisCamera(DectrisSettings(server.url, stream_endpoint=simulated.sender.endpoint, timeout=1))
    acquirer = Acquirer(camera, sender=None)
    recorder = Recorder(tmp_path)
    acquirer.update_settings(frame_count=500, exposure=0.001, period=0.002)
    recorder.arm(RecordingRequest(500, 1, acquirer.stream_endpoint, "broken.h5", acquirer.stream_protocol))
    acquirer.prepare()
    acquirer.start()
    while acquirer.frames_acquired < 3:
        acquirer.wait(0.01)
    fail_next(server, "http_error")
    assert acquirer.wait(30)
    assert acquirer.state == states.FAULT
    assert "simulated DCU failure" in acquirer.status
    recorder.abort()
    recorder.wait(10)
    camera.close()


def test_series_after_series_are_recorded_whatever_ids_the_dcu_gives_them(dcu, tmp_path):
    simulated, _ = dcu
    for series_id in (10, 11, 12):  # the DCU numbers them 1, 2, 3 itself
        acquirer, recorder, path = record_series(dcu, "cbor", 5, tmp_path=tmp_path, series_id=series_id,
                                                 file=f"series_{series_id}.h5")
        assert recorder.counters.frames_written == 5 and recorder.counters.messages_rejected == 0, recorder.status
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["entry/data/data"][4], simulated.frame(4))
    assert simulated.sequence_id == 3


def test_a_dcu_without_an_images_sent_status_still_completes_the_series(dcu, tmp_path):
    simulated, _ = dcu
    answer = simulated.get_status

    def without_images_sent(subsystem, name):
        if (subsystem, name) == ("stream", "images_sent"):
            raise SimplonError(404, "stream: no status parameter 'images_sent'")
        return answer(subsystem, name)

    simulated.get_status = without_images_sent
    acquirer, recorder, path = record_series(dcu, "cbor", 10, tmp_path=tmp_path)
    assert acquirer.state == states.ON and acquirer.frames_acquired == 10, acquirer.status
    assert recorder.counters.frames_written == 10


def test_an_external_trigger_series_takes_its_images_at_each_edge(dcu, tmp_path):
    simulated, server = dcu
    camera = DectrisCamera(DectrisSettings(server.url, stream_endpoint=simulated.sender.endpoint))
    acquirer = Acquirer(camera, sender=None)
    recorder = Recorder(tmp_path)
    acquirer.update_settings(frame_count=6, exposure=0.001, period=0.002, trigger_mode="external_start")
    recorder.arm(RecordingRequest(6, 1, acquirer.stream_endpoint, "exts.h5", acquirer.stream_protocol))
    acquirer.prepare()
    assert simulated.config["detector"]["trigger_mode"].value == "exts"
    acquirer.start()
    assert not acquirer.wait(0.5) and acquirer.frames_acquired == 0  # waits for the edge
    with SimplonClient(server.url) as edge:  # the simulated DCU takes a trigger command as the edge
        edge.command("trigger")
    assert acquirer.wait(30) and recorder.wait(30)
    assert acquirer.state == states.ON and acquirer.frames_acquired == 6, acquirer.status
    assert recorder.counters.frames_written == 6
    camera.close()


def test_internal_enable_takes_one_image_per_trigger_each_with_the_exposure_as_its_value(dcu, tmp_path):
    simulated, _ = dcu
    acquirer, recorder, path = record_series(dcu, "cbor", 5, trigger_mode="internal_enable", tmp_path=tmp_path)
    assert acquirer.state == states.ON and acquirer.frames_acquired == 5, acquirer.status
    detector_config = simulated.config["detector"]
    assert detector_config["trigger_mode"].value == "inte"
    assert (detector_config["nimages"].value, detector_config["ntrigger"].value) == (1, 5)
    with h5py.File(path, "r") as f:
        for n in (0, 4):
            np.testing.assert_array_equal(f["entry/data/data"][n], simulated.frame(n))


@pytest.mark.parametrize("trigger_mode, simplon_mode, edge_value", [
    ("external", "exts", None),  # one image per edge
    ("external_enable", "exte", 0.001),  # one image per gate; the simulated gate's width is the value
])
def test_each_external_edge_or_gate_takes_one_image(dcu, tmp_path, trigger_mode, simplon_mode, edge_value):
    simulated, server = dcu
    camera = DectrisCamera(DectrisSettings(server.url, stream_endpoint=simulated.sender.endpoint))
    acquirer = Acquirer(camera, sender=None)
    recorder = Recorder(tmp_path)
    acquirer.update_settings(frame_count=3, exposure=0.001, period=0.002, trigger_mode=trigger_mode)
    recorder.arm(RecordingRequest(3, 1, acquirer.stream_endpoint, "edges.h5", acquirer.stream_protocol))
    acquirer.prepare()
    detector_config = simulated.config["detector"]
    assert detector_config["trigger_mode"].value == simplon_mode
    assert (detector_config["nimages"].value, detector_config["ntrigger"].value) == (1, 3)
    acquirer.start()
    with SimplonClient(server.url) as edge:  # the simulated DCU takes a trigger command as the edge
        for taken in range(3):
            edge.command("trigger", edge_value)
            deadline = time.monotonic() + 10
            while acquirer.frames_acquired <= taken and time.monotonic() < deadline:
                acquirer.wait(0.02)
            assert acquirer.frames_acquired == taken + 1  # one image per edge, not the whole series
    assert acquirer.wait(30) and recorder.wait(30)
    assert acquirer.state == states.ON and recorder.counters.frames_written == 3, acquirer.status
    camera.close()


def test_the_dcus_own_file_writer_and_monitor_are_set_as_the_beamline_asks(dcu):
    simulated, server = dcu
    simulated.config["filewriter"]["mode"].value = "enabled"  # left on by someone else
    camera = DectrisCamera(DectrisSettings(server.url, filewriter_mode="disabled", monitor_mode="enabled"))
    assert simulated.config["filewriter"]["mode"].value == "disabled"
    assert simulated.config["monitor"]["mode"].value == "enabled"
    camera.close()
    with pytest.raises(DetectorError, match=r"refused PUT /filewriter/api/1.8.0/config/mode \(HTTP 400\): "
                                            r"mode: 'off' is not one of enabled, disabled"):
        DectrisCamera(DectrisSettings(server.url, filewriter_mode="off"))


# What the beamline reads while these tests prepare: Å from the monochromator, mm from detz.
BEAMLINE = {("bl/mono", "Wavelength"): 0.8, ("bl/detz", "Position"): 12.0}


def fixed_beamline(device, attribute):
    return BEAMLINE[(device, attribute)]


def test_prepare_tells_the_dcu_the_beamline_geometry_and_its_frames_are_drawn_there(dcu):
    simulated, server = dcu
    link = Beamline(BeamlineNames(monochromator="bl/mono", distance_motor="bl/detz"), fixed_beamline,
                    beam_centre=(30.5, 41.25))
    camera = BeamlineFollowingDectris(DectrisSettings(server.url, stream_endpoint=simulated.sender.endpoint), link)
    acquirer = Acquirer(camera, sender=None)
    acquirer.update_settings(frame_count=3, exposure=0.001, period=0.002)
    acquirer.prepare()
    config = simulated.config["detector"]
    assert config["wavelength"].value == 0.8
    assert config["photon_energy"].value == pytest.approx(12398.419843320026 / 0.8)
    assert config["detector_distance"].value == pytest.approx(0.012)
    assert (config["beam_center_x"].value, config["beam_center_y"].value) == (41.25, 30.5)
    expected = DiffractionFrames(PatternSettings(
        height=64, width=96, dtype="uint16", seed=3, exposure=0.001, wavelength=0.8 * 1e-10,
        distance=12.0 / 1000.0, pixel_size=75e-6, beam_centre=(30.5, 41.25),
    ))
    np.testing.assert_array_equal(simulated.frame(0), expected.frame(0))
    assert simulated.frame(0).sum() > 0
    acquirer.abort()
    # An unchanged beamline writes nothing: a new energy would move a threshold set by hand.
    config["threshold_energy"].value = 5000.0
    acquirer.prepare()
    assert config["threshold_energy"].value == 5000.0 and config["wavelength"].value == 0.8
    acquirer.abort()
    camera.close()


def test_a_dcu_without_wavelength_is_told_the_photon_energy_and_an_unreadable_device_changes_nothing(dcu):
    simulated, server = dcu
    del simulated.config["detector"]["wavelength"]  # SIMPLON without it: GET is 404
    distance_before = simulated.config["detector"]["detector_distance"].value

    def motor_down(device, attribute):
        if device == "bl/detz":
            raise ConnectionError("bl/detz is not exported")
        return fixed_beamline(device, attribute)

    link = Beamline(BeamlineNames(monochromator="bl/mono", distance_motor="bl/detz"), motor_down)
    camera = BeamlineFollowingDectris(DectrisSettings(server.url), link)
    camera.configure_series(AcquisitionSettings(frame_count=1, exposure=0.001, period=0.002))
    config = simulated.config["detector"]
    assert config["photon_energy"].value == pytest.approx(12398.419843320026 / 0.8)
    assert config["detector_distance"].value == distance_before
    camera.close()


@pytest.mark.parametrize("trigger_mode, width, stream_format", [
    ("external", 0.0, "cbor"), ("external_enable", 0.002, "cbor"), ("external", 0.0, "legacy"),
])
def test_pulses_on_the_dcus_trigger_input_give_one_image_each_at_the_pulses_time(
        tmp_path, trigger_mode, width, stream_format):
    line = WatchedTriggerLine(f"ipc://{tmp_path}/run/omega.trigger")
    simulated = SimulatedDcu(SMALL, serial_number="E-08-0042", seed=3, trigger_line=line.address)
    server = start_server(simulated)
    line.wait_for_inputs(1)
    camera = DectrisCamera(DectrisSettings(server.url, stream_endpoint=simulated.sender.endpoint,
                                           stream_format=stream_format))
    try:
        with acquirer_and_recorder(tmp_path / "data", camera, streams=False) as (acquirer, recorder):
            path = start_recorded_series(acquirer, recorder, trigger_mode, exposure=0.001, period=0.002)  # DCU armed
            times = [time.time() + 0.05 + 0.01 * i for i in range(3)]  # 3 of the 5 frames
            pulses = pulse_fewer_than_asked(line, acquirer, times, width)
            assert recorder.wait(30)
            if stream_format == "cbor":  # v2 images carry the arm's date and their start: the pulse's edge
                assert_recorded_frames_are_the_pulses(path, pulses, simulated.frame)
            else:  # v1 times count on the detector's own clock: the file has the times of receipt
                assert_recorded_frames_are_the_pulses(path, pulses, simulated.frame, atol=5.0)
    finally:
        server.shutdown()
        server.server_close()
        simulated.close()
        line.close()


@pytest.mark.parametrize("stream_format", ["cbor", "legacy"])
def test_a_scans_rotation_reaches_the_file_through_the_dcus_own_header(dcu, tmp_path, stream_format):
    """The Controller tells the Acquirer the scan; the DCU (not photonflow) puts it in its stream
    header, as a real EIGER does, and the Recorder writes what the header says."""
    simulated, server = dcu
    camera = DectrisCamera(DectrisSettings(server.url, stream_endpoint=simulated.sender.endpoint,
                                           stream_format=stream_format))
    acquirer, recorder = Acquirer(camera, sender=None), Recorder(tmp_path)
    acquirer.update_settings(frame_count=3, exposure=0.001, period=0.002, rotation=Rotation("omega", 12.5, -0.25))
    scanned = acquire_into(acquirer, recorder, RecordingRequest(3, 1, acquirer.stream_endpoint, "scan.h5",
                                                                acquirer.stream_protocol))
    acquirer.update_settings(rotation=None)  # the next series is a still one: no rotation told
    still = acquire_into(acquirer, recorder, RecordingRequest(3, 2, acquirer.stream_endpoint, "still.h5",
                                                              acquirer.stream_protocol))
    camera.close()
    for path, start, increment in ((scanned, 12.5, -0.25), (still, 12.5, 0.0)):
        with h5py.File(path, "r") as f:
            detector = next(g for g in f["entry/instrument"].values() if g.attrs.get("NX_class") == "NXdetector")
            specific = detector["detector_specific"]
            assert (specific["omega_start"][()], specific["omega_increment"][()]) == (start, increment), path


@pytest.mark.parametrize(("stream_format", "name"), [("cbor", "user_data"), ("legacy", "header_appendix")])
def test_the_dcus_header_appendix_goniometer_and_image_depth_reach_the_file(tmp_path, stream_format, name):
    """What a beamline wrote to the DCU (its header_appendix, chi) is in the stream's header, as a
    real DCU sends it (v2 user_data, v1's appendix), and the Recorder keeps it with units."""
    told = json.dumps({"sample_name": "thaumatin_3", "space_group": "P 41 21 2"})
    simulated = SimulatedDcu(SMALL, serial_number="E-08-0042", seed=3, user_data=told)
    server = start_server(simulated)
    try:
        simulated.set_config("detector", "chi_start", 2.5)
        camera = DectrisCamera(DectrisSettings(server.url, stream_endpoint=simulated.sender.endpoint,
                                               stream_format=stream_format))
        acquirer = Acquirer(camera, sender=None)
        acquirer.update_settings(frame_count=1, exposure=0.001, period=0.002)
        path = acquire_into(acquirer, Recorder(tmp_path), RecordingRequest(1, 1, acquirer.stream_endpoint, "ud.h5",
                                                                           acquirer.stream_protocol))
        camera.close()
    finally:
        server.shutdown()
        server.server_close()
        simulated.close()
    with h5py.File(path, "r") as f:
        detector = next(g for g in f["entry/instrument"].values() if g.attrs.get("NX_class") == "NXdetector")
        specific = detector["detector_specific"]
        assert specific[name][()].decode() == told
        assert specific["chi_start"][()] == 2.5 and specific["chi_start"].attrs["units"] == "deg"
        assert specific["bit_depth_image"][()] == 16 == 8 * detector["data"].dtype.itemsize
