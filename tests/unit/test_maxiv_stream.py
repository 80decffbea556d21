"""MAX IV's legacy stream becomes photonflow's model; what breaks it is refused with the reason.
Also the registry through which a Recorder input picks its protocol."""

import json
import random

import msgspec
import numpy as np
import pytest

from photonflow.errors import ConfigurationError, StreamMessageError
from photonflow.stream import bslz4, dectris, maxiv, stins
from photonflow.stream.protocols import PROTOCOLS, decoder_for
from photonflow.stream.stins import UNKNOWN, DataMessage, SeriesEnd, SeriesStart

FRAME = np.random.default_rng(4).poisson(3.0, size=(9, 14)).astype(np.uint32)


def as_bytes(parts):
    return [p.tobytes() if isinstance(p, np.ndarray) else bytes(p) for p in parts]


def test_series_round_trip():
    metadata = {"count_time": 0.1, "threshold_energy": 7000.0, "nimages": 5, "ntrigger": 2, "trigger_mode": "exts", "rotate": 0}
    start = maxiv.decode(as_bytes(maxiv.encode_start(0, "/data/visit/scan_0001.h5", metadata)))
    image = maxiv.decode(as_bytes(maxiv.encode_image(1, 0, FRAME, "bslz4")))
    raw = maxiv.decode(as_bytes(maxiv.encode_image(2, 1, FRAME)))
    end = maxiv.decode(as_bytes(maxiv.encode_end(3)))

    assert isinstance(start, SeriesStart)
    assert (start.message_id, start.series_id, start.frame_count) == (0, UNKNOWN, 10)
    assert (start.shape, start.dtype, start.encoding) == (None, None, None)  # the header does not describe frames
    assert start.detector == {"count_time": 0.1, "threshold_energy": 7000.0, "nimages": 5, "ntrigger": 2, "trigger_mode": "exts", "rotate": 0}
    assert isinstance(image, DataMessage)
    assert (image.message_id, image.series_id, image.frame_number, image.shape, image.dtype, image.encoding) == (
        1, UNKNOWN, 0, (9, 14), "uint32", "bslz4",
    )
    assert bytes(image.payload) == bslz4.compress(FRAME)  # left compressed, ready for write_direct_chunk
    np.testing.assert_array_equal(image.to_array(), FRAME)
    assert (raw.encoding, raw.frame_number) == ("raw", 1)
    np.testing.assert_array_equal(raw.to_array(), FRAME)
    assert isinstance(end, SeriesEnd)
    assert (end.message_id, end.series_id, end.frames_acquired, end.frames_sent, end.end_reason) == (
        3, UNKNOWN, UNKNOWN, UNKNOWN, "completed",
    )


def test_header_without_metadata_and_metadata_renamed_to_nxdetector_names():
    assert maxiv.decode(as_bytes(maxiv.encode_start(0))).detector == {}
    start = maxiv.decode(as_bytes(maxiv.encode_start(0, metadata={"exposure_time": 0.5, "photon_energy": 12000.0})))
    assert start.detector == {"count_time": 0.5, "incident_energy": 12000.0}


def test_senders_may_add_keys_to_an_image_header():
    header = {"htype": "image", "msg_number": 4, "frame": 2, "shape": [9, 14], "type": "uint32", "compression": "none", "exposure_time": 0.1}
    assert maxiv.decode([json.dumps(header).encode(), FRAME.tobytes()]).frame_number == 2


def refuse_every_header(_header):
    raise msgspec.ValidationError("refused, so that the general path decodes it")


@pytest.mark.parametrize("changes", [{}, {"exposure_time": 0.1}, {"compression": "bslz4"}])
def test_the_fast_path_decodes_an_image_as_the_general_path_does(changes, monkeypatch):
    payload = bslz4.compress(FRAME) if changes.get("compression") == "bslz4" else None
    parts = image_parts(payload, **changes)
    fast = maxiv.decode(parts)
    monkeypatch.setattr(maxiv, "_decode_image_header", refuse_every_header)
    general = maxiv.decode(parts)
    assert (fast.frame_number, fast.message_id, fast.series_id, fast.shape, fast.dtype, fast.encoding) == (
        general.frame_number, general.message_id, general.series_id, general.shape, general.dtype, general.encoding)
    np.testing.assert_array_equal(fast.to_array(), FRAME)
    np.testing.assert_array_equal(general.to_array(), FRAME)


def test_a_precompressed_chunk_is_sent_as_it_is():
    chunk = bslz4.compress(FRAME)
    parts = maxiv.encode_image(1, 0, chunk, "bslz4", shape=(9, 14), dtype="uint32")
    assert parts[1] is chunk and json.loads(parts[0])["compression"] == "bslz4"


def image_parts(payload=None, **changes):
    header = {"htype": "image", "msg_number": 1, "frame": 0, "shape": [9, 14], "type": "uint32", "compression": "none", **changes}
    header = {k: v for k, v in header.items() if v is not None}
    return [json.dumps(header).encode(), FRAME.tobytes() if payload is None else payload]


@pytest.mark.parametrize(
    "parts, complaint",
    [
        ([], "empty message"),
        ([b"\xff\xfe"], "part 1 is not JSON"),
        ([b'"header"'], "part 1 must be a JSON object, got str"),
        (image_parts(htype="frame"), "'htype' must be one of header, image, series_end, got 'frame'"),
        (image_parts(htype=None), "got None"),
        (image_parts(msg_number=None), "image 0 lacks 'msg_number'"),
        (image_parts(msg_number=-4), "'msg_number' must be an integer >= 0, got -4"),
        (image_parts(frame=None), "image lacks 'frame'"),
        (image_parts(frame=True), "'frame' must be an integer >= 0, got True"),
        (image_parts(frame=2.5), "'frame' must be an integer >= 0, got 2.5"),
        (image_parts(compression=None), "image 0 lacks 'compression'"),
        (image_parts(shape=[9, 14, 2]), "is not [rows, columns]; photonflow records one 2-D frame per message"),
        (image_parts(shape=[9, 0]), "'shape' must be [rows, columns] of positive integers"),
        (image_parts(type="uint64"), "'type' must be one of"),
        (image_parts(compression="lz4"), "'compression' must be one of none, bslz4, got 'lz4'"),
        (image_parts(compression=["bslz4"]), "'compression' must be one of none, bslz4"),
        (image_parts()[:1], "image 0 has 2 part(s), got 1"),
        (image_parts() + [FRAME.tobytes()], "image 0 has 2 part(s), got 3"),
        (image_parts(FRAME.tobytes()[:-4]), "raw frame has 500 bytes; [9, 14] of uint32 needs 504"),
        (image_parts(bslz4.compress(FRAME)[12:], compression="bslz4"), "is the 12-byte HDF5 header missing?"),
        (image_parts(bslz4.compress(FRAME[:8]), compression="bslz4"), "declares 448 uncompressed bytes"),
        (maxiv.encode_start(0, "f.h5", {"nimages": 1}) + [b"{}"], "header has 1 or 2 part(s), got 3"),
        (maxiv.encode_start(0, "f.h5", {"nimages": -1}), "'nimages' must be an integer >= 0"),
        ([json.dumps({"htype": "header", "msg_number": 0, "filename": 5}).encode()], "'filename' must be a string"),
        (maxiv.encode_start(0)[:1] + [b"[1, 2]"], "metadata (part 2) must be a JSON object"),
        (maxiv.encode_end(3) + [b"{}"], "series_end has 1 part(s), got 2"),
        ([b'{"htype": "series_end"}'], "series_end lacks 'msg_number'"),
    ],
)
def test_malformed_messages_are_refused_with_the_reason(parts, complaint):
    with pytest.raises(StreamMessageError) as caught:
        maxiv.decode(parts)
    assert complaint in str(caught.value)


def test_damaged_messages_raise_only_stream_message_errors():
    rng = random.Random(11)
    good = [
        as_bytes(maxiv.encode_start(0, "f.h5", {"nimages": 3, "exposure_time": 0.1})),
        as_bytes(maxiv.encode_image(1, 0, FRAME[:3, :5], "bslz4")),
        as_bytes(maxiv.encode_end(2)),
    ]
    refusals = []
    for parts in good:
        for _ in range(300):
            damaged = list(parts)
            index = rng.randrange(len(damaged))
            data = bytearray(damaged[index])
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            damaged[index] = bytes(data)
            try:
                maxiv.decode(damaged)
            except StreamMessageError as error:  # any other exception fails the test
                refusals.append(str(error))
    assert refusals
    assert [r for r in refusals if "could not be decoded" in r] == []  # every refusal has its own reason


# ---------------------------------------------------------------------------------------------
# The registry of protocols


def test_every_protocol_has_its_decoder():
    assert PROTOCOLS == {
        "stins": stins.decode,
        "dectris-v1": dectris.decode_v1,
        "dectris-v2": dectris.decode_v2,
        "maxiv": maxiv.decode,
    }
    for name, decoder in PROTOCOLS.items():
        assert decoder_for(name) is decoder


def test_each_decoder_reads_its_own_stream_into_the_same_model():
    streams = {
        "stins": stins.StinsEncoder().data(1, 0, FRAME, 0.0, encoding="bslz4"),
        "dectris-v1": dectris.encode_image_v1(1, 0, FRAME),
        "dectris-v2": dectris.encode_image_v2(1, 0, FRAME),
        "maxiv": maxiv.encode_image(1, 0, FRAME, "bslz4"),
    }
    for name, parts in streams.items():
        message = decoder_for(name)(as_bytes(parts))
        assert (message.frame_number, message.shape, message.dtype, message.encoding) == (0, (9, 14), "uint32", "bslz4"), name
        assert bytes(message.payload) == bslz4.compress(FRAME), name


@pytest.mark.parametrize("name", ["dectris", "STINS", "", None])
def test_an_unknown_protocol_is_a_configuration_error_naming_the_known_ones(name):
    with pytest.raises(ConfigurationError) as caught:
        decoder_for(name)
    assert f"unknown stream protocol {name!r}; known protocols: stins, dectris-v1, dectris-v2, maxiv" in str(caught.value)
