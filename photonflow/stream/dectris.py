"""DECTRIS detector streams (EIGER, EIGER2, PILATUS4), version 1 and version 2, in photonflow's model.

Why: a DECTRIS detector control unit (DCU) pushes its frames over ZeroMQ itself, already
compressed. Reading that stream directly lets the Recorder take an EIGER without any
photonflow code on the detector side; each frame stays compressed (``bslz4``) and becomes
one HDF5 chunk as it arrived. This module turns every DECTRIS message into a
``SeriesStart``, ``DataMessage`` or ``SeriesEnd`` (``photonflow.stream.stins``), refusing
anything malformed with a StreamMessageError that says what is wrong; and it encodes both
versions, for simulators and tests.

Specifications followed
-----------------------
- **Stream v2** (CBOR, one ZeroMQ part per message, DCU port 31001, release 2022.1+):
  ``stream_v2/README.md`` of https://github.com/dectris/documentation (SIMPLON API 1.8),
  its reference parser ``stream_v2/examples/stream2.c``, the compression tag
  ``cbor/dectris-compression-tag.md``; CBOR is RFC 8949, typed and multi-dimensional
  arrays RFC 8746. A message is ``55799(map)`` (self-described CBOR; accepted without the
  tag too) whose ``type`` is ``start``, ``image`` or ``end``. Image data is
  ``data: {channel: 40([[height, width], T(bytes)])}`` where ``T`` is an RFC 8746 typed
  array tag (69 = uint16 little-endian, 70 = uint32 LE, ...) and ``bytes`` is either the
  raw pixels or ``56500(["bslz4", element size, chunk])``: the modifier of tag 56500 is the
  element size, not the uncompressed size, which is the first 8 bytes of the chunk.
- **Stream v1** ("legacy", JSON multi-part, DCU port 9999): the stream chapter of the
  DECTRIS SIMPLON API manual. ``dheader-1.0`` {htype, series, header_detail} followed by,
  for ``basic``, the detector configuration (JSON) and for ``all`` also flatfield, pixel
  mask and count-rate table, each a JSON part {htype, shape, type} and a data part (8 parts
  in all; ``none``: the header alone); a header appendix adds one last part. ``dimage-1.0``
  {htype, series, frame, hash}, ``dimage_d-1.0`` {htype, shape [x, y], type, encoding,
  size}, the data blob, ``dconfig-1.0`` {htype, start_time, stop_time, real_time} (ns),
  plus one part for an image appendix. ``dseries_end-1.0`` {htype, series}.

In both versions a bslz4 payload is the HDF5 bitshuffle filter's chunk (12-byte header
first), which ``photonflow.stream.bslz4`` reads and writes; lz4-only compression and
big-endian pixels are refused, so are multi-channel (multi-threshold) images, which the
model, one 2-D frame per message, cannot hold yet.

How the fields map
------------------
``message_id``: DECTRIS messages have none; the decoder numbers the messages it decodes,
one counter per version for the whole process, in decoding order (so ids increase, but are
not the sender's and interleave when several DCUs are read).

v2 ``start`` -> SeriesStart: series_id <- ``series_id``; frame_count <- ``number_of_images``
(nimages x ntrigger; 0 if absent); shape <- (``image_size_y``, ``image_size_x``); dtype <-
``image_dtype`` if the DCU sends it (not in the published table), else None: the first
frame's typed-array tag tells; encoding None (the start message does not say whether
images are compressed); start_time <- ``arm_date``; detector <- the table ``V2_DETECTOR``
below (``threshold_energy`` <- the energy of the one channel; ``incident_wavelength``
converted from angstrom to metres; ``detector_translation`` <- ``detector_translation_x/y/z``
(m)); ``bit_depth_image`` <- the bits of ``image_dtype`` when sent (v2 has no bit depth field;
otherwise the frames' own pixel type tells); ``<axis>_start``/``<axis>_increment`` (deg) <-
``goniometer`` {axis: {start, increment}}; vendor "DECTRIS". Every other field is kept under its
own name (``user_data`` as it came: the Standardizer reads its sample, space group and unit
cell); with header_detail ``all`` flatfield, pixel_mask and countrate_correction_lookup_table
(the one channel's).

v2 ``image`` -> DataMessage: series_id <- ``series_id``; frame_number <- ``image_id`` (from
0); shape <- the array's [height, width]; dtype <- its typed-array tag; encoding ``bslz4``
(tag 56500) or ``raw``; payload <- the chunk or pixels, a view on the received buffer;
timestamp <- ``series_date`` + ``start_time`` (a rational, seconds), or the time of
decoding when either is absent.

v2 ``end`` -> SeriesEnd: series_id <- ``series_id``; frames_acquired and frames_sent
``UNKNOWN`` (the message has no counts: the receiver expects ``number_of_images``);
end_reason "completed" (the DCU sends ``end`` at disarm, whatever ended the series);
end_time: the time of decoding.

v1 ``dheader-1.0`` -> SeriesStart: series_id <- ``series``; from the configuration part
(``basic``/``all``): frame_count <- ``nimages`` x ``ntrigger``; shape <-
(``y_pixels_in_detector``, ``x_pixels_in_detector``); dtype <- ``bit_depth_image``;
encoding <- ``compression`` (bslz4 -> bslz4, none -> raw); start_time <-
``data_collection_date``; detector <- table ``V1_DETECTOR``, plus ``bit_depth_image`` (the images'
depth, beside the electronics' ``bit_depth_readout``), the goniometer's ``<axis>_start``/
``_increment`` under their own names, and the header appendix as ``header_appendix`` (SIMPLON's
``stream/config/header_appendix``, which v2 sends as ``user_data``). With ``none`` there is no
configuration: frame_count 0, shape, dtype, encoding None (the first frame tells),
detector {"vendor": "DECTRIS"}, start_time the time of decoding.

v1 ``dimage-1.0`` -> DataMessage: series_id <- ``series``; frame_number <- ``frame``;
shape <- ``dimage_d.shape`` reversed (DECTRIS writes [x, y], photonflow [rows, columns]);
dtype <- ``type``; encoding <- ``encoding`` ("<" -> raw, "bs16-lz4<" etc. -> bslz4); the
blob must have ``size`` bytes. ``hash`` is not verified. ``dconfig`` times are relative to
the detector's clock, so timestamp is the time of decoding.

v1 ``dseries_end-1.0`` -> SeriesEnd as for v2.
"""
from __future__ import annotations

from photonflow.stream.cbor import Tag, cbor_dumps, cbor_loads
from photonflow.stream.dectris_v1 import (
    HEADER_PARTS,
    V1_DETECTOR,
    decode_v1,
    encode_end_v1,
    encode_image_v1,
    encode_start_v1,
)
from photonflow.stream.dectris_v2 import V2_DETECTOR, decode_v2, encode_end_v2, encode_image_v2, encode_start_v2

__all__ = [
    "HEADER_PARTS", "V1_DETECTOR", "V2_DETECTOR", "Tag", "cbor_dumps", "cbor_loads", "decode_v1", "decode_v2",
    "encode_end_v1", "encode_end_v2", "encode_image_v1", "encode_image_v2", "encode_start_v1", "encode_start_v2",
]
