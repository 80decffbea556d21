"""The STINS codec: what a sender encodes, a receiver decodes; what breaks the protocol is refused."""

import json

import msgspec
import numpy as np
import pytest

from photonflow.errors import StreamMessageError
from photonflow.stream import stins
from photonflow.stream.stins import DataMessage, SeriesEnd, SeriesStart, StinsEncoder, decode


def parts_as_bytes(parts):
    return [bytes(p) if not isinstance(p, np.ndarray) else p.tobytes() for p in parts]


def test_series_round_trip_keeps_every_field_and_the_frame():
    encoder = StinsEncoder()
    frame = np.arange(12, dtype=np.uint16).reshape(3, 4)
    start = decode(parts_as_bytes(encoder.series_start(7, 2, (3, 4), "uint16", {"model": "X"}, "2026-01-01T00:00:00+00:00")))
    data = decode(parts_as_bytes(encoder.data(7, 0, frame, 1234.5)))
    end = decode(parts_as_bytes(encoder.series_end(7, 2, 1, "stopped", "2026-01-01T00:00:01+00:00")))

    assert start == SeriesStart(0, 7, 2, (3, 4), "uint16", "raw", {"model": "X"}, "2026-01-01T00:00:00+00:00")
    assert isinstance(data, DataMessage)
    assert (data.message_id, data.series_id, data.frame_number, data.timestamp) == (1, 7, 0, 1234.5)
    np.testing.assert_array_equal(data.to_array(), frame)
    assert end == SeriesEnd(2, 7, 2, 1, "stopped", "2026-01-01T00:00:01+00:00")


def test_message_id_increments_with_every_message():
    encoder = StinsEncoder()
    frame = np.zeros((2, 2), np.uint8)
    ids = [json.loads(encoder.data(1, n, frame, 0.0)[0])["message_id"] for n in range(3)]
    ids.append(json.loads(encoder.series_end(1, 3, 3)[0])["message_id"])
    assert ids == [0, 1, 2, 3]


def test_big_endian_frames_go_out_little_endian():
    frame = np.arange(4, dtype=">u2").reshape(2, 2)
    header, payload = StinsEncoder().data(1, 0, frame, 0.0)
    decoded = decode([header, payload.tobytes()])
    np.testing.assert_array_equal(decoded.to_array(), frame)


def good_data_header(**changes):
    header = {
        "version": 1, "message_type": "data", "message_id": 3, "series_id": 1, "frame_number": 0,
        "shape": [2, 2], "dtype": "uint16", "encoding": "raw", "timestamp": 1.0,
    }
    header.update(changes)
    return json.dumps(header).encode()


@pytest.mark.parametrize(
    "parts, complaint",
    [
        ([b"not json"], "not JSON"),
        ([b"[1, 2]"], "JSON object"),
        ([good_data_header(version=2), bytes(8)], "unsupported STINS version 2"),
        ([json.dumps({"message_type": "data"}).encode()], "missing mandatory key 'version'"),
        ([good_data_header(message_type="frame"), bytes(8)], "'message_type' must be one of"),
        ([good_data_header(message_id=-1), bytes(8)], "'message_id' must be an integer >= 0"),
        ([good_data_header(custom=1), bytes(8)], "unknown key(s) custom"),
        ([good_data_header()], "must have 2 part(s)"),
        ([good_data_header(), bytes(7)], "raw frame has 7 bytes"),
        ([good_data_header(shape=[2]), bytes(8)], "'shape' must be [rows, columns]"),
        ([good_data_header(dtype="complex64"), bytes(8)], "'dtype' must be one of"),
        ([good_data_header(timestamp="noon"), bytes(8)], "'timestamp' must be a number"),
        ([good_data_header(metadata=[1.0]), bytes(8)], "'metadata' must be a JSON object of numbers, got list"),
        ([good_data_header(metadata={"start angle": 1.0}), bytes(8)], "metadata name 'start angle' must be"),
        ([good_data_header(metadata={"gated": True}), bytes(8)], "value of 'gated' must be a finite number"),
        ([good_data_header(metadata={"flux": float("nan")}), bytes(8)], "value of 'flux' must be a finite number"),
        ([good_data_header(metadata={f"v{n}": n for n in range(65)}), bytes(8)], "65 entries; at most 64"),
        ([good_data_header(metadata={"v" * 65: 1.0}), bytes(8)], "up to 64 characters"),
        ([good_data_header(frame_number=True), bytes(8)], "'frame_number' must be an integer >= 0"),
        ([good_data_header(frame_number=1.5), bytes(8)], "'frame_number' must be an integer >= 0"),
        ([good_data_header(series_id=-2), bytes(8)], "'series_id' must be an integer >= 0"),
        ([good_data_header(shape=[2, 0]), bytes(8)], "'shape' must be [rows, columns]"),
        ([good_data_header(shape=[2, True]), bytes(8)], "'shape' must be [rows, columns]"),
        ([good_data_header(encoding="zstd"), bytes(8)], "'encoding' must be one of"),
        ([good_data_header(timestamp=True), bytes(8)], "'timestamp' must be a number"),
        ([good_data_header(timestamp=float("inf")), bytes(8)], "'timestamp' must be a number"),
        ([good_data_header(message_type="series_end"), bytes(8)], "lacks end_reason"),
        ([b'{"version": 1, "message_type": "series_end", "message_id": 1, "series_id": 1}'], "lacks end_reason"),
        ([], "empty message"),
    ],
)
def test_malformed_messages_are_refused_with_the_reason(parts, complaint):
    with pytest.raises(StreamMessageError) as caught:
        decode(parts)
    assert complaint in str(caught.value)


def test_a_well_formed_data_header_is_accepted():
    message = decode([good_data_header(), bytes(8)])
    assert message.shape == (2, 2)


def refuse_every_header(_header):
    raise msgspec.ValidationError("refused, so that the general path decodes it")


@pytest.mark.parametrize("header", [
    good_data_header(),
    good_data_header(metadata={"start_angle": 10.25, "counter": 3}),
    good_data_header(timestamp=7, message_id=2**40, dtype="float32", shape=[1, 2]),
])
def test_the_fast_path_decodes_a_data_message_as_the_general_path_does(header, monkeypatch):
    fast = decode([header, bytes(8)])
    monkeypatch.setattr(stins, "_decode_data_header", refuse_every_header)
    general = decode([header, bytes(8)])
    assert fast == general
    assert bytes(fast.payload) == bytes(general.payload) == bytes(8)


def good_start_header(**changes):
    header = {
        "version": 1, "message_type": "series_start", "message_id": 0, "series_id": 1, "frame_count": 2,
        "shape": [2, 2], "dtype": "uint16", "encoding": "raw", "start_time": "2026-01-01T00:00:00+00:00",
        "detector": {},
    }
    header.update(changes)
    return json.dumps(header).encode()


def test_per_frame_values_travel_under_the_names_series_start_announced():
    encoder = StinsEncoder()
    start = decode(parts_as_bytes(encoder.series_start(3, 2, (2, 2), "uint16", {}, frame_metadata=("start_angle",))))
    data = decode(parts_as_bytes(encoder.data(3, 1, np.zeros((2, 2), np.uint16), 5.0, metadata={"start_angle": 10.1})))
    plain = decode(parts_as_bytes(encoder.data(3, 0, np.zeros((2, 2), np.uint16), 5.0)))
    assert start.frame_metadata == ("start_angle",)
    assert data.metadata == {"start_angle": 10.1}
    assert plain.metadata is None and b"metadata" not in encoder.data(3, 0, np.zeros((2, 2), np.uint16), 5.0)[0]


@pytest.mark.parametrize("names, complaint", [
    ("start_angle", "'frame_metadata' must be a list of names"),
    (["start_angle", "start_angle"], "names a value twice"),
    (["2theta"], "metadata name '2theta' must be letters"),
    ([f"v{n}" for n in range(65)], "65 names; at most 64"),
])
def test_bad_metadata_announcements_are_refused(names, complaint):
    with pytest.raises(StreamMessageError, match=complaint):
        decode([good_start_header(frame_metadata=names)])
