"""The PILATUS3 driver against the simulated camserver: its TCP protocol and real CBF files."""

import time
from datetime import datetime

import fabio
import h5py
import numpy as np
import pytest

from photonflow import states
from photonflow.acquisition.acquirer import Acquirer
from photonflow.acquisition.beamline import Beamline, BeamlineNames
from photonflow.acquisition.pilatus import BeamlineFollowingPilatus, PilatusCamera, PilatusSettings
from photonflow.camera import AcquisitionSettings, Rotation
from photonflow.drivers.camserver import CamserverClient
from photonflow.errors import ConfigurationError, DetectorConnectionLost, DetectorError
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.pilatus_camserver import (
    Camserver,
    CamserverState,
    minicbf_header,
    start_server,
)
from photonflow.stream.transport import StreamSender
from tests.helpers.recording import acquire_into
from tests.helpers.trigger_line import (
    WatchedTriggerLine,
    acquirer_and_recorder,
    assert_recorded_frames_are_the_pulses,
    pulse_fewer_than_asked,
    start_recorded_series,
)
from tests.helpers.waiting import wait_until


@pytest.fixture
def camserver(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    simulated = Camserver(CamserverState("pilatus3_100k", "24-0111", images, seed=5))
    server = start_server(simulated)
    yield simulated, server, images
    simulated.stop()
    server.shutdown()
    server.server_close()


def test_settings_are_acknowledged_and_bad_ones_refused_in_camservers_words(camserver):
    _, server, _ = camserver
    client = CamserverClient(server.address)
    try:
        assert client.command("exptime 0.5").text == "Exposure time set to: 0.5000000 sec."
        assert client.command("nimages 3").code == 15
        with pytest.raises(DetectorError, match=r"camserver refused 'nimages 0': 15 ERR nimages: value 0 below"):
            client.command("nimages 0")
        with pytest.raises(DetectorError, match=r"1 ERR \*\*\* Unrecognized command: fly"):
            client.command("fly")
        with pytest.raises(DetectorError, match="threshold 100000 eV outside 2000 to 40000 eV"):
            client.command("setthreshold 100000")
        assert "Settings: autog gain; threshold: 9000 eV" in client.command("setthreshold 9000").text
    finally:
        client.close()


@pytest.mark.parametrize("fault, error, message", [
    ("error", DetectorError, "simulated camserver failure: detector not responding"),
    ("drop", DetectorConnectionLost, "closed the connection|dropped the connection"),
    ("stall", DetectorConnectionLost, "did not answer within 0.5 s"),
])
def test_a_failing_camserver_gives_a_clear_error(camserver, fault, error, message):
    _, server, _ = camserver
    client = CamserverClient(server.address, timeout=0.5)
    try:
        client.command(f"simfail {fault}")
        with pytest.raises(error, match=message):
            client.command("exptime 0.1")
    finally:
        client.close()


def test_an_absent_camserver_is_a_lost_connection_naming_it():
    with pytest.raises(DetectorConnectionLost, match="cannot reach camserver at 127.0.0.1:9"):
        CamserverClient("127.0.0.1:9", timeout=1)


def run_series(camserver, tmp_path, frames, stop_after=None, model="pilatus3_100k", bad_pixels=()):
    simulated, server, images = camserver
    camera = PilatusCamera(PilatusSettings(server.address, model, str(images), serial_number="24-0111",
                                           bad_pixels=bad_pixels))
    camera.mx_settings(Wavelength=0.97721, Detector_distance=0.125, Beam_xy=(244.0, 98.0),
                       Start_angle=10.0, Angle_increment=0.1)
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(camera, sender)
    recorder = Recorder(tmp_path / "data")
    acquirer.update_settings(frame_count=frames, exposure=0.002, period=0.005)
    path = acquire_into(acquirer, recorder, RecordingRequest(frames, 1, acquirer.stream_endpoint, "pilatus.h5"),
                        stop_after)
    sender.close()
    return simulated, camera, acquirer, recorder, path, images


def test_each_cbf_image_reaches_the_file_equal_to_what_camserver_wrote(camserver, tmp_path):
    simulated, camera, acquirer, recorder, path, images = run_series(camserver, tmp_path, 12)
    assert acquirer.state == states.ON and acquirer.frames_acquired == 12, acquirer.status
    assert recorder.counters.frames_written == 12, recorder.status
    cbf_files = sorted(images.glob("*.cbf"))
    assert len(cbf_files) == 12
    with h5py.File(path, "r") as f:
        data = f["entry/data/data"]
        assert data.shape == (12, 195, 487) and data.dtype == np.int32
        for n in (0, 5, 11):
            np.testing.assert_array_equal(data[n], fabio.open(str(cbf_files[n])).data)
            np.testing.assert_array_equal(data[n], simulated.frame(n))
    # the miniCBF header, parsed: what the last image says about itself
    header = camera.last_header
    assert header["description"].startswith("PILATUS3 100K")
    assert header["x_pixel_size"] == pytest.approx(172e-6) and header["sensor_material"] == "Silicon"
    assert header["incident_wavelength"] == pytest.approx(0.97721e-10)
    assert header["beam_center_x"] == 244.0 and header["distance"] == pytest.approx(0.125)
    assert header["start_angle"] == pytest.approx(10.0 + 11 * 0.1)
    # and each image's header went with its frame into the file
    with h5py.File(path, "r") as f:
        assert f["entry/instrument/pilatus3_100k/bit_depth_readout"][()] == 20
        values = f["entry/instrument/pilatus3_100k/frame_metadata"]
        for n in (0, 5, 11):
            cbf = fabio.open(str(cbf_files[n])).pilatus_headers
            assert values["start_angle"][n] == pytest.approx(cbf["Start_angle"]) == pytest.approx(10.0 + n * 0.1)
            assert values["count_time"][n] == pytest.approx(cbf["Exposure_time"]) == pytest.approx(0.002)
        assert values["beam_center_x"].attrs["units"] == "pixel" and values["start_angle"].attrs["units"] == "deg"
        assert values["incident_wavelength"][11] == pytest.approx(0.97721e-10)
    camera.close()


def test_a_scans_rotation_goes_into_every_cbf_header_and_leaves_with_it(camserver):
    simulated, server, _ = camserver
    camera = PilatusCamera(PilatusSettings(server.address, "pilatus3_100k", str(simulated.state.image_path)))
    try:
        camera.prepare(AcquisitionSettings(frame_count=3, rotation=Rotation("omega", 12.5, 0.1)))
        assert (simulated.state.mx["Start_angle"], simulated.state.mx["Angle_increment"]) == ("12.50000", "0.10000")
        assert "# Angle_increment 0.10000 deg." in minicbf_header(simulated.state, 0, datetime.now())
        camera.prepare(AcquisitionSettings(frame_count=3))  # no scan now: the header says no oscillation
        assert simulated.state.mx["Angle_increment"] == "0.00000"
    finally:
        camera.close()


BAD_PIXELS = ((3, 4), (300, 200), (618, 486))  # row, column of a PILATUS3 300K's bad-pixel map


@pytest.fixture
def camserver_300k(tmp_path):
    """A three-module PILATUS3 300K whose bad-pixel map has BAD_PIXELS."""
    images = tmp_path / "images"
    images.mkdir()
    simulated = Camserver(CamserverState("pilatus3_300k", "24-0111", images, seed=5, bad_pixels=BAD_PIXELS))
    server = start_server(simulated)
    yield simulated, server, images
    simulated.stop()
    server.shutdown()
    server.server_close()


def test_camservers_images_hold_minus_one_in_the_module_gaps_and_minus_two_at_bad_pixels(camserver_300k, tmp_path):
    _, camera, *_, images = run_series(camserver_300k, tmp_path, 2, model="pilatus3_300k", bad_pixels=BAD_PIXELS)
    camera.close()
    image = fabio.open(str(sorted(images.glob("*.cbf"))[0]))
    gap_rows = [row for row in range(619) if (image.data[row] == -1).all()]
    assert gap_rows == [*range(195, 212), *range(407, 424)]  # 17 rows between each of its 3 modules of 195
    assert (image.data == -1).sum() == 2 * 17 * 487
    assert sorted(map(tuple, np.argwhere(image.data == -2).tolist())) == sorted(BAD_PIXELS)
    assert "# N_excluded_pixels = 3" in image.header["_array_data.header_contents"]


def test_the_files_pixel_mask_is_camservers_gaps_and_bad_pixels(camserver_300k, tmp_path):
    simulated, camera, acquirer, recorder, path, _ = run_series(camserver_300k, tmp_path, 2, model="pilatus3_300k",
                                                                bad_pixels=BAD_PIXELS)
    assert acquirer.state == states.ON and recorder.counters.frames_written == 2, recorder.status
    with h5py.File(path, "r") as f:
        mask = f["entry/instrument/pilatus3_300k/pixel_mask"]
        assert mask.dtype == np.uint32 and mask.shape == (619, 487)
        for number in (0, 1):
            frame = f["entry/data/data"][number]
            np.testing.assert_array_equal(frame, simulated.frame(number))
            np.testing.assert_array_equal(mask[()] == 1, frame == -1)  # NeXus bit 1: gap
            np.testing.assert_array_equal(mask[()] == 2, frame == -2)  # bit 2: dead
    camera.close()


def test_bad_pixels_the_configuration_does_not_know_put_the_acquirer_in_alarm_naming_them(camserver_300k, tmp_path):
    _, camera, acquirer, *_ = run_series(camserver_300k, tmp_path, 1, model="pilatus3_300k", bad_pixels=())
    camera.close()
    assert acquirer.state == states.ALARM
    assert "flags 3 pixels (-1 gap, -2 bad) otherwise than the pixel mask" in acquirer.status
    assert "(3, 4)" in acquirer.status and "set BadPixels" in acquirer.status


def test_a_bad_pixel_outside_the_detector_is_refused_naming_it():
    with pytest.raises(ConfigurationError, match=r"bad pixel \(row 619, column 0\) is outside the 487 x 619-pixel"):
        PilatusCamera(PilatusSettings("127.0.0.1:9", "pilatus3_300k", "/tmp", bad_pixels=((619, 0),)))


def test_stop_kills_the_exposure_and_the_file_holds_what_was_taken(camserver, tmp_path):
    _, camera, acquirer, recorder, path, _ = run_series(camserver, tmp_path, 400, stop_after=3)
    assert acquirer.last_end_reason == "stopped" and 3 <= acquirer.frames_acquired < 400
    assert recorder.counters.frames_written == acquirer.frames_acquired
    # camserver's "7 ERR kill" was taken: the next command gets its own reply
    assert camera.client.command("nimages 2").text == "N images set to: 2"
    camera.close()


def test_a_camserver_error_mid_series_is_a_fault_with_its_message(camserver, tmp_path):
    simulated, server, images = camserver
    camera = PilatusCamera(PilatusSettings(server.address, "pilatus3_100k", str(images), timeout=1))
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(camera, sender)
    recorder = Recorder(tmp_path / "data")
    acquirer.update_settings(frame_count=50, exposure=0.002, period=0.005)
    recorder.arm(RecordingRequest(50, 1, acquirer.stream_endpoint, "broken.h5"))
    acquirer.prepare()
    original = simulated._expose

    def failing(names, reply, mode):  # the detector module dies after two images
        simulated.state.n_images = 2
        original(names[:2], lambda code, status, text: reply(7, "ERR", "detector module 3 not responding"), mode)

    simulated._expose = failing
    acquirer.start()
    assert acquirer.wait(30)
    assert acquirer.state == states.FAULT
    assert "detector module 3 not responding" in acquirer.status
    recorder.wait(10)
    sender.close()
    camera.close()


@pytest.mark.parametrize("trigger_mode, command, edges", [
    ("external_start", "exttrigger", 1),  # one edge, then camserver's own timing
    ("external", "extmtrigger", 4),  # one image per edge
    ("external_enable", "extenable", 4),  # one image per gate
])
def test_external_trigger_modes_take_their_images_at_the_edges(camserver, tmp_path, trigger_mode, command, edges):
    simulated, server, images = camserver
    camera = PilatusCamera(PilatusSettings(server.address, "pilatus3_100k", str(images)))
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(camera, sender)
    recorder = Recorder(tmp_path / "data")
    acquirer.update_settings(frame_count=4, exposure=0.002, period=0.005, trigger_mode=trigger_mode)
    path = recorder.arm(RecordingRequest(4, 1, acquirer.stream_endpoint, f"{command}.h5"))
    acquirer.prepare()
    acquirer.start()
    assert not acquirer.wait(0.3) and acquirer.frames_acquired == 0  # nothing before the first edge
    with CamserverClient(server.address) as trigger_input:  # the simulator's trigger input, over TCP
        for _ in range(edges):
            assert trigger_input.command("simtrigger 0.003").text == "trigger"
            time.sleep(0.05)
    assert acquirer.wait(30) and recorder.wait(30)
    assert acquirer.state == states.ON and acquirer.frames_acquired == 4, acquirer.status
    with h5py.File(path, "r") as f:
        for n in (0, 3):
            np.testing.assert_array_equal(f["entry/data/data"][n], simulated.frame(n))
    sender.close()
    camera.close()


def test_camserver_rings_follow_the_wavelength_distance_and_beam_centre_of_its_header(tmp_path):
    from photonflow.simulators.pilatus_camserver import frame_source

    state = CamserverState("pilatus3_100k", "24-0111", tmp_path, seed=5)
    state.mx.update({"Wavelength": "0.80000", "Detector_distance": "0.15000", "Beam_xy": "(244.00, 98.00)"})
    pattern = frame_source(state).settings
    assert pattern.wavelength == pytest.approx(0.8e-10) and pattern.distance == pytest.approx(0.15)
    assert pattern.beam_centre == (98.0, 244.0) and pattern.pixel_size == pytest.approx(172e-6)
    state.mx["Beam_xy"] = "(0.00, 0.00)"  # camserver's default: not set
    assert frame_source(state).settings.beam_centre is None


def test_prepare_tells_camserver_the_beamline_geometry_and_an_unreadable_motor_changes_nothing(camserver):
    simulated, server, images = camserver
    values = {("bl/mono", "Wavelength"): 0.8, ("bl/detz", "Position"): ConnectionError("bl/detz is not exported")}

    def read(device, attribute):
        value = values[(device, attribute)]
        if isinstance(value, Exception):
            raise value
        return value

    beamline = Beamline(BeamlineNames(monochromator="bl/mono", distance_motor="bl/detz"), read,
                        beam_centre=(98.0, 244.0), unread="camserver keeps its value")
    camera = BeamlineFollowingPilatus(PilatusSettings(server.address, "pilatus3_100k", str(images)), beamline)
    try:
        camera.prepare(AcquisitionSettings(frame_count=1, exposure=0.01, period=0.02))
        assert simulated.state.mx["Wavelength"] == "0.80000"
        assert simulated.state.mx["Detector_distance"] == "0.25000"  # camserver's, as it was
        assert simulated.state.mx["Beam_xy"] == "(244.00, 98.00)"  # x = column, y = row
        values[("bl/detz", "Position")] = 150.0
        camera.prepare(AcquisitionSettings(frame_count=1, exposure=0.01, period=0.02))
        assert simulated.state.mx["Detector_distance"] == "0.15000"
    finally:
        camera.close()


@pytest.mark.parametrize("trigger_mode, width", [("external", 0.0), ("external_enable", 0.003)])
def test_pulses_on_the_trigger_line_give_one_image_each_dated_by_its_pulse(tmp_path, trigger_mode, width):
    images = tmp_path / "images"
    images.mkdir()
    line = WatchedTriggerLine(f"ipc://{tmp_path}/run/omega.trigger")
    simulated = Camserver(CamserverState("pilatus3_100k", "24-0111", images, seed=5), trigger_line=line.address)
    server = start_server(simulated)
    line.wait_for_inputs(1)
    camera = PilatusCamera(PilatusSettings(server.address, "pilatus3_100k", str(images)))
    try:
        with acquirer_and_recorder(tmp_path / "data", camera) as (acquirer, recorder):
            path = start_recorded_series(acquirer, recorder, trigger_mode, exposure=0.002, period=0.005)
            wait_until(lambda: simulated.exposing, 30, what="camserver exposing (pulses before it are not its own)")
            times = [time.time() + 0.05 + 0.01 * i for i in range(3)]  # 3 of the 5 frames
            pulses = pulse_fewer_than_asked(line, acquirer, times, width)
            assert recorder.wait(30) and acquirer.state == states.ON
            # the CBF header's date, to the millisecond, is the pulse's edge
            assert_recorded_frames_are_the_pulses(path, pulses, simulated.frame, atol=1.5e-3)
    finally:
        simulated.stop()
        server.shutdown()
        server.server_close()
        line.close()
