"""LImA's face on photonflow, with a plain-Python Controller: LImA's settings become one Configure,
its commands the Controller's, the Controller's state and counters LImA's acq_status and
last_image_*; what photonflow cannot do is refused saying what it can."""

import struct

import h5py
import numpy as np
import pytest

from photonflow import states
from photonflow.control.lima_face import (
    ALL_FRAMES_IN_ONE_FILE,
    DATA_ARRAY_HEADER,
    DATASET,
    FAULT,
    NO_ERROR,
    READY,
    RUNNING,
    data_array,
)
from photonflow.errors import ConfigurationError, FilePathError, PhotonflowError, StateError
from tests.helpers.lima import FakePipeline, face_on


@pytest.fixture
def pipeline(tmp_path):
    return FakePipeline(tmp_path / "data")


@pytest.fixture
def face(pipeline):
    return face_on(pipeline)


def saving_to(face, directory, prefix="scan_", mode="AUTO_FRAME"):
    for name, value in (("saving_mode", mode), ("saving_directory", str(directory)), ("saving_format", "HDF5"),
                        ("saving_suffix", ".h5"), ("saving_index_format", "%04d"), ("saving_prefix", prefix)):
        face.write(name, value)


def configure(face, frames=3, expo=0.01, latency=0.005, trigger="INTERNAL_TRIGGER"):
    for name, value in (("acq_nb_frames", frames), ("acq_expo_time", expo), ("latency_time", latency),
                        ("acq_trigger_mode", trigger)):
        face.write(name, value)


def test_prepare_acq_is_one_configure_of_the_controller_with_limas_settings(face, pipeline):
    saving_to(face, pipeline.root / "sample1")
    configure(face, frames=5, expo=0.1, latency=0.02)
    face.prepare()
    assert pipeline.calls == [("configure", {"frames": 5, "exposure": 0.1, "period": pytest.approx(0.12),
                                             "trigger_mode": "internal",
                                             "file": str(pipeline.root / "sample1" / "scan_0000.h5")})]
    assert face.acq_status() == (READY, NO_ERROR)  # prepared, not started: LImA is Ready
    assert face.last_image_saved() == -1 and face.last_image_acquired() == -1


def test_start_acq_starts_the_series_and_acq_status_follows_it_to_ready(face, pipeline):
    saving_to(face, pipeline.root)
    configure(face, frames=3)
    face.prepare()
    face.start()
    assert pipeline.calls[-1] == "start"
    assert face.acq_status()[0] == RUNNING and not face.ready_for_next_acq()
    pipeline.take(2, saved=1)
    face.refresh()
    assert (face.last_image_acquired(), face.last_image_saved()) == (1, 0)
    pipeline.take(3)
    pipeline.end()
    face.refresh()
    assert face.acq_status()[0] == READY and face.ready_for_next_acq()
    assert (face.last_image_acquired(), face.last_image_saved()) == (2, 2)


def test_internal_trigger_multi_starts_at_prepare_and_each_start_acq_is_one_frame(face, pipeline):
    saving_to(face, pipeline.root)
    configure(face, frames=2, trigger="INTERNAL_TRIGGER_MULTI")
    face.prepare()
    assert pipeline.calls[1:] == ["start"] and pipeline.calls[0][1]["trigger_mode"] == "client"
    assert face.acq_status()[0] == READY and face.last_image_saved() == -1  # armed, waiting for startAcq
    face.start()
    assert pipeline.calls[-1] == "trigger"
    assert face.acq_status()[0] == RUNNING and not face.ready_for_next_image()
    pipeline.take(1)
    face.refresh()
    assert face.acq_status()[0] == READY and face.ready_for_next_image() and face.last_image_saved() == 0
    face.start()
    assert face.acq_status()[0] == RUNNING
    pipeline.take(2)  # every frame in the file: Ready while photonflow still closes it
    face.refresh()
    assert pipeline.state == states.RUNNING and face.acq_status()[0] == READY
    with pytest.raises(StateError, match="all 2 frames of the prepared series were started"):
        face.start()


def test_a_prepare_acq_after_an_unfinished_multi_trigger_series_stops_it_first(face, pipeline):
    saving_to(face, pipeline.root)
    configure(face, frames=5, trigger="INTERNAL_TRIGGER_MULTI")
    face.prepare()
    face.start()
    pipeline.take(1)
    pipeline.stop = lambda: (pipeline.calls.append("stop"), pipeline.end())  # the series ends with 1 frame
    face.prepare()
    assert pipeline.calls[:4] == [pipeline.calls[0], "start", "trigger", "stop"]
    assert pipeline.calls[4][0] == "configure"
    assert pipeline.calls[4][1]["file"].endswith("scan_0001.h5")  # the stopped series' file is kept


def test_start_acq_without_prepare_acq_is_refused_as_lima_refuses_it(face):
    with pytest.raises(StateError, match="Run prepareAcq before starting acquisition"):
        face.start()


def test_a_started_series_needs_prepare_acq_again(face, pipeline):
    configure(face)
    face.prepare()
    face.start()
    with pytest.raises(StateError, match="prepareAcq again"):
        face.start()


def test_an_external_trigger_start_returns_once_the_detector_is_armed(face, pipeline):
    configure(face, trigger="EXTERNAL_TRIGGER_MULTI")
    face.prepare()
    assert pipeline.calls[0][1]["trigger_mode"] == "external"
    pipeline.acquirer_armed = lambda: False  # never armed: the wait gives up and aborts
    with pytest.raises(PhotonflowError, match="the Acquirer to be armed") as refused:
        face.start()
    assert refused.value.reason == "PhotonflowTimeout" and pipeline.calls[-1] == "abort"


def test_trigger_modes_photonflow_lacks_are_refused_naming_what_is_supported(face, pipeline):
    assert face.value_list("acq_trigger_mode") == ["INTERNAL_TRIGGER", "INTERNAL_TRIGGER_MULTI",
                                                   "EXTERNAL_TRIGGER_MULTI"]
    with pytest.raises(ConfigurationError) as refused:
        face.write("acq_trigger_mode", "EXTERNAL_START_STOP")
    assert refused.value.reason == "TriggerModeNotSupported"
    assert "no start/stop trigger" in str(refused.value)
    assert "supported are INTERNAL_TRIGGER, INTERNAL_TRIGGER_MULTI, EXTERNAL_TRIGGER_MULTI" in str(refused.value)
    with pytest.raises(ConfigurationError, match="EXTERNAL_GATE is not supported: this detector does not offer it"):
        face.write("acq_trigger_mode", "external_gate")
    with pytest.raises(ConfigurationError, match="not a LImA trigger mode"):
        face.write("acq_trigger_mode", "SOFTWARE")
    face.write("acq_trigger_mode", "external_trigger_multi")
    assert face.value("acq_trigger_mode") == "EXTERNAL_TRIGGER_MULTI"


def test_internal_trigger_falls_back_to_the_software_trigger_of_a_camera_without_internal_timing(tmp_path):
    pipeline = FakePipeline(tmp_path, offered=("software",))
    face = face_on(pipeline)
    face.prepare()
    assert pipeline.calls[0][1]["trigger_mode"] == "software"


def test_the_saving_directory_must_be_under_photonflows_data_root(face, pipeline, tmp_path):
    for outside in (str(tmp_path / "elsewhere"), str(pipeline.root / ".." / "escape"), "/tmp"):
        with pytest.raises(FilePathError, match="outside photonflow's data root") as refused:
            face.write("saving_directory", outside)
        assert refused.value.reason == "FileOutsideDataRoot"
    with pytest.raises(FilePathError, match="not an absolute path"):
        face.write("saving_directory", "sample1")
    face.write("saving_directory", str(pipeline.root / "sample1" / "run1"))
    assert face.value("saving_directory") == str(pipeline.root.resolve() / "sample1" / "run1")


@pytest.mark.parametrize("name, value, reason, says", [
    ("saving_format", "EDF", "SavingFormatNotSupported", "give HDF5 or HDF5BS"),
    ("saving_format", "CBF", "SavingFormatNotSupported", "writes HDF5"),
    ("saving_suffix", ".edf", "SavingFormatNotSupported", ".h5, .hdf5, .nxs"),
    ("saving_overwrite_policy", "OVERWRITE", "OverwriteNotSupported", "never overwrites"),
    ("saving_mode", "AUTO_HEADER", "SavingModeNotSupported", "AUTO_FRAME names the file"),
    ("saving_managed_mode", "HARDWARE", "SavingModeNotSupported", "SOFTWARE"),
    ("acq_mode", "ACCUMULATION", "AcqModeNotSupported", "SINGLE"),
    ("acq_nb_frames", 0, "InvalidConfiguration", "acquire until stopAcq"),
    ("acq_expo_time", 0.0, "InvalidConfiguration", "positive number of seconds"),
    ("latency_time", float("nan"), "InvalidConfiguration", "0 or a positive number"),
    ("saving_index_format", "%s", "InvalidConfiguration", "%04d"),
    ("saving_prefix", "a/b", "InvalidConfiguration", "without '/'"),
])
def test_what_photonflow_cannot_do_is_refused_saying_what_it_can(face, name, value, reason, says):
    before = face.value(name)
    with pytest.raises(ConfigurationError) as refused:
        face.write(name, value)
    assert refused.value.reason == reason and says in str(refused.value)
    assert face.value(name) == before


def test_hdf5bs_is_photonflows_hdf5_and_frames_per_file_is_the_whole_series(face):
    face.write("saving_format", "hdf5bs")
    face.write("saving_frame_per_file", 1)  # sardana-limaccd writes its default at start-up
    assert face.value("saving_format") == "HDF5BS"
    assert ALL_FRAMES_IN_ONE_FILE == 2**31 - 1


def test_saving_next_number_names_the_series_file_until_the_next_prepare_takes_the_next(face, pipeline):
    saving_to(face, pipeline.root)
    face.write("saving_next_number", 7)
    configure(face, frames=1)
    face.prepare()
    assert face.saving_next_number() == 7
    face.start()
    pipeline.take(1)
    pipeline.end()
    face.refresh()
    assert face.saving_next_number() == 7  # read after startAcq, however fast the series ended
    face.prepare()
    assert pipeline.calls[-1][1]["file"] == str(pipeline.root.resolve() / "scan_0008.h5")
    face.prepare()  # never started: its number is still free
    assert pipeline.calls[-1][1]["file"] == str(pipeline.root.resolve() / "scan_0008.h5")


def test_saving_next_number_minus_one_takes_the_number_after_the_highest_on_disk(face, pipeline):
    pipeline.root.mkdir(parents=True)
    for name in ("scan_0003.h5", "scan_0011.h5", "other_0050.h5", "scan_0099.edf"):
        (pipeline.root / name).touch()
    saving_to(face, pipeline.root)
    face.write("saving_next_number", -1)
    assert face.saving_next_number() == 12
    face.prepare()
    assert pipeline.calls[-1][1]["file"].endswith("scan_0012.h5")


def test_an_existing_file_refuses_prepare_acq_as_lima_abort_policy_does(face, pipeline):
    pipeline.root.mkdir(parents=True)
    (pipeline.root / "scan_0000.h5").touch()
    saving_to(face, pipeline.root)
    with pytest.raises(FilePathError, match="already exists; photonflow never overwrites") as refused:
        face.prepare()
    assert refused.value.reason == "FileExists" and pipeline.calls == []


def test_manual_saving_lets_the_recorder_name_the_file(face, pipeline):
    saving_to(face, pipeline.root, mode="MANUAL")
    face.prepare()
    assert "file" not in pipeline.calls[0][1]


def test_auto_frame_without_a_directory_says_to_set_one(face):
    face.write("saving_mode", "AUTO_FRAME")
    with pytest.raises(ConfigurationError, match="needs saving_directory"):
        face.prepare()


def test_prepare_acq_while_the_controller_runs_another_series_is_refused(face, pipeline):
    pipeline.state, pipeline.status = states.RUNNING, "Series 4 acquiring: 3 of 100 frames written."
    face.refresh()
    assert face.acq_status()[0] == RUNNING  # not this face's series: LImA's detector is busy
    assert face.last_image_saved() == -1
    with pytest.raises(StateError, match="stopAcq or abortAcq it first"):
        face.prepare()


def test_a_series_that_lost_frames_is_a_fault_until_abort_acq_acknowledges_it(face, pipeline):
    configure(face, frames=10)
    face.prepare()
    face.start()
    pipeline.take(9)
    pipeline.end(states.ALARM, "Frames lost in series 1: requested 10, acquired 10, received 9, written 9")
    face.refresh()
    assert face.acq_status() == (FAULT, pipeline.status)
    assert face.tango_state()[0] == states.ALARM
    face.abort()
    assert face.acq_status() == (READY, NO_ERROR) and "abort" not in pipeline.calls  # nothing ran: no Abort
    face.prepare()  # works again


def test_a_controller_in_fault_or_unreachable_is_a_fault(face, pipeline):
    pipeline.state, pipeline.status = states.FAULT, "The acquirer is unreachable"
    face.refresh()
    assert face.acq_status() == (FAULT, "The acquirer is unreachable")
    assert face.tango_state()[0] == states.FAULT
    pipeline.reachable = False
    face.refresh()
    status, error = face.acq_status()
    assert status == FAULT and "cannot be read" in error and "not exported" in error
    with pytest.raises(PhotonflowError, match="cannot be read") as refused:
        face.prepare()
    assert refused.value.reason == "PhotonflowUnreachable"


def test_abort_acq_aborts_the_running_series_and_returns_once_it_ended(face, pipeline):
    configure(face, frames=100)
    face.prepare()
    face.start()
    face.abort()
    assert pipeline.calls[-1] == "abort" and face.acq_status()[0] == READY
    with pytest.raises(StateError, match="stopped"):
        face.start()


def test_stop_acq_stops_a_running_series_and_is_nothing_when_idle(face, pipeline):
    face.stop()
    assert pipeline.calls == []
    face.prepare()
    face.start()
    face.stop()
    assert pipeline.calls[-1] == "stop"


def test_reset_sets_the_acquisition_settings_back_and_keeps_the_saving_ones(face, pipeline):
    saving_to(face, pipeline.root, prefix="kept_")
    configure(face, frames=9, expo=0.5, trigger="INTERNAL_TRIGGER_MULTI")
    face.prepare()
    face.reset()
    assert (face.value("acq_nb_frames"), face.value("acq_expo_time"), face.value("acq_trigger_mode")) == (
        1, 1.0, "INTERNAL_TRIGGER")
    assert face.value("saving_prefix") == "kept_" and pipeline.calls[-1] == "abort"
    with pytest.raises(StateError, match="Run prepareAcq"):
        face.start()


def test_the_detectors_image_in_limas_words(face):
    assert face.image_type() == "Bpp16"
    assert face.image_sizes() == [0, 2, 3, 4]  # unsigned, 2 bytes, width, height
    assert face.value_list("saving_format") == ["HDF5", "HDF5BS"]
    assert face.value_list("image_roi") == []


def write_series(path, frames):
    with h5py.File(path, "w") as f:
        f.create_dataset(DATASET, data=frames)


def test_read_image_seq_gives_the_saved_frames_of_the_file_as_a_data_array(face, pipeline):
    frames = np.arange(5 * 4 * 3, dtype=np.uint16).reshape(5, 4, 3)
    configure(face, frames=5)
    face.prepare()
    face.start()
    write_series(pipeline.last_file, frames)
    pipeline.take(4, saved=3)
    read = face.frames(1, 3)
    np.testing.assert_array_equal(read, frames[1:3])
    with pytest.raises(PhotonflowError, match="Frame\\(s\\) not available yet") as refused:
        face.frames(2, 4)  # frame 3 is written, not yet in the file for its readers
    assert refused.value.reason == "FramesNotAvailable"
    np.testing.assert_array_equal(face.image(-1), frames[2])

    encoded = data_array(read, 1, stack=True)
    header = DATA_ARRAY_HEADER.unpack_from(encoded)
    magic, version, length, category, dtype, big_endian, dims = header[0], header[1], header[2], header[3], \
        header[4], header[5], header[6]
    assert (magic, version, length, category, dtype, big_endian, dims) == (0x44544159, 4, 80, 4, 1, 0, 3)
    assert header[7:10] == (3, 4, 2) and header[13:16] == (2, 6, 24) and header[19] == 1  # width, height, frames
    decoded = np.frombuffer(encoded, dtype="<u2", offset=length).reshape(2, 4, 3)
    np.testing.assert_array_equal(decoded, frames[1:3])
    assert struct.calcsize("<IHHIIHHHHHHHHIIIIIIQQII") == DATA_ARRAY_HEADER.size


def test_sardana_limaccds_own_decoder_reads_the_data_array_of_one_frame(face):
    """Lima2DCtrl reads each point's frame with readImageSeq(n, n + 1). (Its decoder expects a header
    before every frame of a longer sequence, which LImA's one-header stack does not have.)"""
    client = pytest.importorskip("sardana_limaccd.client")
    frames = (np.arange(2 * 4 * 3, dtype=np.uint32) * 1000).reshape(2, 4, 3)
    for number, frame in enumerate(frames):
        (decoded,) = client.LimaImageFormat(4).decode(data_array(frames[number:number + 1], number, stack=True))
        np.testing.assert_array_equal(decoded, frame)
