"""DECTRIS streams v1 and v2: what an EIGER's DCU sends becomes photonflow's model, frames still
compressed; whatever breaks the protocol is refused with the reason, never with another error."""

import json
import random
from datetime import datetime

import h5py
import hdf5plugin
import numpy as np
import pytest
import zmq

from photonflow.errors import StreamMessageError
from photonflow.stream import bslz4, dectris
from photonflow.stream.dectris import Tag, cbor_dumps
from photonflow.stream.stins import UNKNOWN, DataMessage, SeriesEnd, SeriesStart

FRAME = np.random.default_rng(3).poisson(2.0, size=(21, 13)).astype(np.uint16)  # not square: rows != columns
DETECTOR = {
    "description": "Dectris EIGER2 Si 1M",
    "serial_number": "E-32-0123",
    "count_time": 0.0099,
    "frame_time": 0.01,
    "x_pixel_size": 7.5e-05,
    "y_pixel_size": 7.5e-05,
    "sensor_material": "Si",
    "sensor_thickness": 0.00045,
    "threshold_energy": 6000.0,
    "beam_center_x": 512.5,
    "beam_center_y": 520.25,
    "saturation_value": 65534,
    "incident_energy": 12400.0,
    "incident_wavelength": 1e-10,
    "countrate_correction_applied": True,
    "flatfield_applied": True,
    "pixel_mask_applied": False,
    "virtual_pixel_interpolation_applied": True,
}
V1_ONLY = {"distance": 0.2, "detector_readout_time": 1e-7, "bit_depth_readout": 16, "trigger_mode": "ints", "software_version": "1.8.0"}
V2_ONLY = {"series_unique_id": "01GRXWT80JSDY2FNW8SGCCDZD9", "detector_translation_x": 0.0, "detector_translation_y": 0.01, "detector_translation_z": 0.2}


def as_bytes(parts):
    return [p.tobytes() if isinstance(p, np.ndarray) else bytes(p) for p in parts]


def refusal(decode, parts) -> str:
    with pytest.raises(StreamMessageError) as caught:
        decode(parts)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------
# Stream v2 (CBOR)


def test_v2_series_round_trip_maps_every_field():
    start = dectris.decode_v2(
        dectris.encode_start_v2(7, FRAME.shape, 100, {**DETECTOR, **V2_ONLY}, arm_date="2026-01-02T03:04:05.5+01:00")
    )
    image = dectris.decode_v2(dectris.encode_image_v2(7, 0, FRAME))
    end = dectris.decode_v2(dectris.encode_end_v2(7))

    assert isinstance(start, SeriesStart)
    assert (start.series_id, start.frame_count, start.shape) == (7, 100, (21, 13))
    assert (start.dtype, start.encoding) == (None, None)  # a v2 start does not say; the first image does
    assert start.detector == {"vendor": "DECTRIS", **DETECTOR, **V2_ONLY, "number_of_images": 100}  # the detector's own count, kept
    assert start.start_time == "2026-01-02T03:04:05.500000+01:00"
    assert isinstance(image, DataMessage)
    assert (image.series_id, image.frame_number, image.shape, image.dtype, image.encoding) == (7, 0, (21, 13), "uint16", "bslz4")
    np.testing.assert_array_equal(image.to_array(), FRAME)
    assert isinstance(end, SeriesEnd)
    assert (end.series_id, end.frames_acquired, end.frames_sent, end.end_reason) == (7, UNKNOWN, UNKNOWN, "completed")
    assert start.message_id < image.message_id < end.message_id  # synthesised in decoding order


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("encoding", ["bslz4", "raw"])
def test_v2_images_keep_their_encoding_and_come_back_equal(dtype, encoding):
    frame = FRAME.astype(dtype)
    image = dectris.decode_v2(dectris.encode_image_v2(1, 5, frame, encoding=encoding))
    assert (image.dtype, image.encoding) == (dtype, encoding)
    np.testing.assert_array_equal(image.to_array(), frame)


def test_v2_payload_is_the_compressed_chunk_viewed_in_the_received_buffer():
    chunk = bslz4.compress(FRAME)
    message = dectris.encode_image_v2(1, 0, chunk, shape=FRAME.shape, dtype="uint16")[0]
    frame = zmq.Frame(message)
    image = dectris.decode_v2([frame])
    assert bytes(image.payload) == chunk
    assert image.payload.obj is frame.buffer.obj  # a view, not a copy


def test_v2_payload_goes_straight_into_an_hdf5_chunk(tmp_path):
    image = dectris.decode_v2(dectris.encode_image_v2(1, 0, FRAME))
    with h5py.File(tmp_path / "eiger.h5", "w") as f:
        data = f.create_dataset("data", shape=(1, 21, 13), chunks=(1, 21, 13), dtype="uint16", **hdf5plugin.Bitshuffle(cname="lz4"))
        data.id.write_direct_chunk((0, 0, 0), image.payload)
        np.testing.assert_array_equal(data[0], FRAME)


def test_v2_image_time_is_the_series_date_plus_its_start_time():
    image = dectris.decode_v2(
        dectris.encode_image_v2(1, 0, FRAME, series_date="2026-01-02T03:04:05+00:00", start_time=(25, 10))
    )
    assert image.timestamp == datetime.fromisoformat("2026-01-02T03:04:07.5+00:00").timestamp()


def test_v2_start_may_announce_the_pixel_type():
    start = dectris.decode_v2(dectris.encode_start_v2(1, FRAME.shape, image_dtype="uint32"))
    assert start.dtype == "uint32"


def test_v2_message_a_third_party_cbor_encoder_made_is_read():
    # Canonical CBOR as cbor2 writes it: shortest floats (half, single), map keys sorted.
    message = (
        "d9d9f7"  # self-described CBOR
        "a5"  # map of 5
        "6464617461"  # "data"
        "a1"  # one channel
        "6b7468726573686f6c645f31"  # "threshold_1"
        "d8" "28" "82" "82" "02" "03" "d8" "45" "4c" + "0100020003000400050006" + "00"  # 40([[2, 3], 69(h'...')])
        "6474797065" "65696d616765"  # "type": "image"
        "68696d6167655f6964" "01"  # "image_id": 1
        "697365726965735f6964" "19" "0100"  # "series_id": 256
        "6a73746172745f74696d65" "82" "01" "02"  # "start_time": [1, 2]
    )
    image = dectris.decode_v2([bytes.fromhex(message)])
    assert (image.series_id, image.frame_number, image.shape, image.dtype) == (256, 1, (2, 3), "uint16")
    np.testing.assert_array_equal(image.to_array(), [[1, 2, 3], [4, 5, 6]])


def image_message(**changes):
    message = {
        "type": "image",
        "series_id": 1,
        "series_unique_id": "",
        "image_id": 4,
        "data": {"threshold_1": Tag(40, [[21, 13], Tag(69, Tag(56500, ["bslz4", 2, bslz4.compress(FRAME)]))])},
    }
    message.update(changes)
    return [cbor_dumps({k: v for k, v in message.items() if v is not None})]


def pixels(typed_array_tag, content, dimensions=(21, 13)):
    return {"threshold_1": Tag(40, [list(dimensions), Tag(typed_array_tag, content)])}


GOOD_V2_IMAGE = image_message()[0]


@pytest.mark.parametrize(
    "parts, complaint",
    [
        ([], "one ZeroMQ part, got 0"),
        ([GOOD_V2_IMAGE, b""], "one ZeroMQ part, got 2"),
        ([b""], "empty message"),
        ([GOOD_V2_IMAGE[:-40]], "CBOR message truncated"),
        ([GOOD_V2_IMAGE + b"\x00"], "1 byte(s) after its item"),
        ([b"\x81" * 40 + b"\x00"], "CBOR items nested deeper than 32 levels"),
        ([b"\xa1\x78\x30key"], "CBOR message truncated: 48 byte(s) needed at byte 3, 3 left"),
        ([b"\xa1\x62\xc3\x28\x00"], "CBOR text string is not UTF-8"),
        ([cbor_dumps([1, 2])], "is a CBOR map"),
        (image_message(type="frame"), "'type' must be one of start, image, end, got 'frame'"),
        (image_message(type=None), "'type' must be one of start, image, end, got None"),
        (image_message(image_id=None), "image message lacks 'image_id'"),
        (image_message(series_id=None), "image 4 lacks 'series_id'"),
        (image_message(series_id=-1), "'series_id' must be an unsigned integer, got -1"),
        (image_message(data=None), "'data' must be a map of channel to image"),
        (image_message(data={"threshold_1": FRAME.tobytes()}), "multi-dimensional array (tag 40)"),
        (image_message(data={**pixels(69, FRAME.tobytes()), "threshold_2": 1}), "carries 2 channels (threshold_1, threshold_2)"),
        (image_message(data=pixels(69, FRAME.tobytes(), (21,))), "[height, width] of positive integers"),
        (image_message(data=pixels(69, FRAME.tobytes()[:-2])), "raw frame has 544 bytes; [21, 13] of uint16 needs 546"),
        (image_message(data=pixels(65, FRAME.tobytes())), "big-endian uint16"),
        (image_message(data=pixels(87, FRAME.tobytes())), "little-endian float128"),
        (image_message(data=pixels(69, Tag(56500, ["lz4", 0, b"x" * 12]))), "compressed with 'lz4'"),
        (image_message(data=pixels(69, Tag(56500, ["bslz4", 4, bslz4.compress(FRAME)]))), "element size 4 does not match uint16"),
        (image_message(data=pixels(69, Tag(56500, ["bslz4", 2]))), "[algorithm, element size, bytes]"),
        (image_message(data=pixels(69, Tag(56500, ["bslz4", 2, bslz4.compress(FRAME[:-1])]))), "declares 520 uncompressed bytes"),
        (image_message(series_date=Tag(0, "yesterday"), start_time=[1, 2]), "'series_date' must be an RFC 3339 date-time"),
        (image_message(start_time=[1, 0]), "'start_time' must be [numerator, denominator > 0]"),
        ([cbor_dumps({"type": "end"})], "end message lacks 'series_id'"),
        ([cbor_dumps({"type": "start", "series_id": 1, "channels": ["threshold_1", "threshold_2"]})], "2 channels"),
        ([cbor_dumps({"type": "start", "series_id": 1, "image_size_x": 13})], "'image_size_x' and 'image_size_y' must both"),
        ([cbor_dumps({"type": "start", "series_id": 1, "count_time": "fast"})], "'count_time' must be a finite number"),
        ([cbor_dumps({"type": "start", "series_id": 1, "image_dtype": "uint64"})], "'image_dtype' must be one of"),
        ([cbor_dumps({"type": "start", "series_id": 1, "detector_translation": [0, 0]})], "'detector_translation' must be 3"),
    ],
)
def test_v2_malformed_messages_are_refused_with_the_reason(parts, complaint):
    assert complaint in refusal(dectris.decode_v2, parts)


def test_v2_damaged_messages_raise_only_stream_message_errors():
    rng = random.Random(5)
    message = dectris.encode_image_v2(1, 0, FRAME[:3, :5], series_date="2026-01-02T03:04:05+00:00", start_time=(1, 2))[0]
    damaged = [message[:cut] for cut in range(len(message))]
    for _ in range(400):
        flipped = bytearray(message)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        damaged.append(bytes(flipped))
    refusals = []
    for data in damaged:
        try:
            dectris.decode_v2([data])
        except StreamMessageError as error:  # any other exception fails the test
            refusals.append(str(error))
    assert refusals
    assert [r for r in refusals if "could not be decoded" in r] == []  # every refusal has its own reason


# ---------------------------------------------------------------------------------------------
# Stream v1 (legacy JSON multi-part)


@pytest.mark.parametrize("header_detail, part_count", [("none", 1), ("basic", 2), ("all", 8)])
def test_v1_header_has_the_parts_its_header_detail_calls_for(header_detail, part_count):
    parts = dectris.encode_start_v1(3, FRAME.shape, "uint16", 50, DETECTOR, header_detail=header_detail)
    assert len(parts) == part_count
    start = dectris.decode_v1(as_bytes(parts))
    assert start.series_id == 3
    with_appendix = dectris.encode_start_v1(3, FRAME.shape, "uint16", 50, DETECTOR, header_detail=header_detail, appendix={"user": "x"})
    assert dectris.decode_v1(as_bytes(with_appendix)).series_id == 3


def test_v1_series_round_trip_maps_every_field():
    start = dectris.decode_v1(
        as_bytes(dectris.encode_start_v1(3, FRAME.shape, "uint16", 50, {**DETECTOR, **V1_ONLY}, start_time="2026-01-02T03:04:05+00:00"))
    )
    image = dectris.decode_v1(as_bytes(dectris.encode_image_v1(3, 9, FRAME)))
    end = dectris.decode_v1(as_bytes(dectris.encode_end_v1(3)))

    assert (start.series_id, start.frame_count, start.shape, start.dtype, start.encoding) == (3, 50, (21, 13), "uint16", "bslz4")
    assert start.detector == {"vendor": "DECTRIS", **DETECTOR, **V1_ONLY, "nimages": 50, "ntrigger": 1,
                              "bit_depth_image": 16}  # the images' depth, beside the readout's
    assert start.start_time == "2026-01-02T03:04:05+00:00"
    assert (image.series_id, image.frame_number, image.shape, image.dtype, image.encoding) == (3, 9, (21, 13), "uint16", "bslz4")
    np.testing.assert_array_equal(image.to_array(), FRAME)
    assert (end.series_id, end.frames_acquired, end.frames_sent, end.end_reason) == (3, UNKNOWN, UNKNOWN, "completed")
    assert start.message_id < image.message_id < end.message_id


def test_v1_without_configuration_leaves_the_frames_to_describe_themselves():
    start = dectris.decode_v1(as_bytes(dectris.encode_start_v1(3, header_detail="none")))
    assert (start.frame_count, start.shape, start.dtype, start.encoding, start.detector) == (0, None, None, None, {"vendor": "DECTRIS"})


def test_v1_shape_is_x_y_on_the_wire_and_rows_columns_in_photonflow():
    parts = dectris.encode_image_v1(3, 0, FRAME, encoding="raw", appendix="free text")
    assert json.loads(parts[1])["shape"] == [13, 21] and json.loads(parts[1])["encoding"] == "<"
    image = dectris.decode_v1(as_bytes(parts))
    assert (image.shape, image.encoding) == ((21, 13), "raw")
    np.testing.assert_array_equal(image.to_array(), FRAME)


def test_v1_uint32_frames_are_bs32():
    frame = FRAME.astype(np.uint32)
    parts = dectris.encode_image_v1(3, 0, frame)
    assert json.loads(parts[1])["encoding"] == "bs32-lz4<"
    np.testing.assert_array_equal(dectris.decode_v1(as_bytes(parts)).to_array(), frame)


def v1_image(description=None, times=None, payload=None, header=None, extra=()):
    parts = as_bytes(dectris.encode_image_v1(3, 9, FRAME))
    if header is not None:
        parts[0] = json.dumps({**json.loads(parts[0]), **header}).encode()
    if description is not None:
        parts[1] = json.dumps({k: v for k, v in {**json.loads(parts[1]), **description}.items() if v is not None}).encode()
    if payload is not None:
        parts[2] = payload
    if times is not None:
        parts[3] = json.dumps(times).encode()
    return parts + list(extra)


def v1_header(detail="basic", config=None, drop=(), replace=None, **changes):
    parts = as_bytes(dectris.encode_start_v1(3, FRAME.shape, "uint16", 50, DETECTOR, header_detail=detail))
    parts[0] = json.dumps({**json.loads(parts[0]), **changes}).encode()
    if config is not None:
        parts[1] = json.dumps({**json.loads(parts[1]), **config}).encode()
    parts = [(replace or {}).get(i, p) for i, p in enumerate(parts)]
    return [p for i, p in enumerate(parts) if i not in drop]


RAW_DESCRIPTION = {"encoding": "<", "size": FRAME.nbytes}


@pytest.mark.parametrize(
    "parts, complaint",
    [
        ([], "empty message"),
        ([b"not json"], "part 1 is not JSON"),
        ([b"[1]"], "part 1 must be a JSON object"),
        ([json.dumps({"htype": "dimage-2.0"}).encode()], "'htype' must be one of dheader-1.0, dimage-1.0, dseries_end-1.0"),
        (v1_header("basic", drop=(1,)), "header_detail 'basic' has 2 part(s) (3 with a header appendix), got 1"),
        (v1_header("all", drop=(7,)), "header_detail 'all' has 8 part(s) (9 with a header appendix), got 7"),
        (v1_header("basic") + [b"{}", b"{}"], "got 4"),
        (v1_header(header_detail="everything"), "'header_detail' must be one of none, basic, all"),
        (v1_header(series="3"), "'series' must be an unsigned integer"),
        (v1_header(config={"bit_depth_image": 12}), "'bit_depth_image' must be 8, 16 or 32, got 12"),
        (v1_header(config={"compression": "lz4"}), "compresses with 'lz4'"),
        (v1_header(config={"x_pixels_in_detector": 0}), "x_ and y_pixels_in_detector must both be positive"),
        (v1_header(config={"data_collection_date": "today"}), "'data_collection_date' must be an RFC 3339 date-time"),
        (v1_header("all", replace={3: b"x"}), "flatfield has 1 bytes; [13, 21] of float32 needs 1092"),
        (v1_header("all", replace={2: b'{"htype": "dpixelmask-1.0"}'}), "part 3 must have htype 'dflatfield-1.0'"),
        (v1_header("all", replace={6: b'{"htype": "dcountrate_table-1.0", "shape": [8, 2], "type": "float99"}'}), "unknown 'type' 'float99'"),
        (v1_image(extra=[b"{}", b"{}"]), "4 parts (dimage, dimage_d, data, dconfig; 5 with an image appendix), got 6"),
        (v1_image()[:3], "got 3"),
        (v1_image(header={"frame": -1}), "'frame' must be an unsigned integer, got -1"),
        (v1_image(description={"htype": "dimage-1.0"}), "part 2 must have htype 'dimage_d-1.0'"),
        (v1_image(description={"shape": [13, 21, 2]}), "is not [x, y]; photonflow records 2-D frames"),
        (v1_image(description={"type": "complex64"}), "'type' must be one of"),
        (v1_image(description={"encoding": "lz4<"}), "compressed with lz4 ('lz4<')"),
        (v1_image(description={"encoding": "bs16-lz4>"}), "is big-endian"),
        (v1_image(description={"encoding": "bs32-lz4<"}), "'bs32-lz4<' does not match uint16 pixels"),
        (v1_image(description={"encoding": "zstd"}), "unknown encoding 'zstd'"),
        (v1_image(description={"size": None}), "lacks 'size'"),
        (v1_image(description={"size": 7}), "dimage_d 'size' says 7"),
        (v1_image(description=RAW_DESCRIPTION, payload=FRAME.tobytes()[:-2] + b"xy" + b"z"), "data part has 547 bytes"),
        (v1_image(description={**RAW_DESCRIPTION, "size": 544}, payload=FRAME.tobytes()[:-2]), "raw frame has 544 bytes"),
        (v1_image(description={"size": FRAME.nbytes}, payload=FRAME.tobytes()), "is the 12-byte HDF5 header missing?"),
        (v1_image(times={"htype": "dconfig-1.0", "start_time": 0, "stop_time": "soon", "real_time": 0}), "'stop_time' must be a finite number"),
        (v1_image(times={"htype": "dseries_end-1.0"}), "part 4 must have htype 'dconfig-1.0'"),
        (dectris.encode_end_v1(3) + [b"{}"], "dseries_end-1.0 has 1 part, got 2"),
        ([json.dumps({"htype": "dseries_end-1.0"}).encode()], "dseries_end-1.0 lacks 'series'"),
    ],
)
def test_v1_malformed_messages_are_refused_with_the_reason(parts, complaint):
    assert complaint in refusal(dectris.decode_v1, parts)


def test_v1_damaged_messages_raise_only_stream_message_errors():
    rng = random.Random(7)
    good = [as_bytes(dectris.encode_start_v1(1, (3, 5), "uint16", 2, DETECTOR, header_detail="all")), v1_image()]
    refusals = []
    for parts in good:
        for _ in range(300):
            damaged = list(parts)
            index = rng.randrange(len(damaged))
            data = bytearray(damaged[index])
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            damaged[index] = bytes(data[: rng.randrange(len(data) + 1)]) if rng.random() < 0.3 else bytes(data)
            try:
                dectris.decode_v1(damaged)
            except StreamMessageError as error:  # any other exception fails the test
                refusals.append(str(error))
    assert refusals
    assert [r for r in refusals if "could not be decoded" in r] == []  # every refusal has its own reason
