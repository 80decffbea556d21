"""The stream protocols a Recorder input can speak, each decoded into photonflow's model.

Every protocol is a ``decode(parts)`` function turning the ZeroMQ parts of one message into
a ``SeriesStart``, ``DataMessage`` or ``SeriesEnd`` (``photonflow.stream.stins``), and
refusing anything malformed with StreamMessageError, never another exception: the Recorder
handles every input alike and knows no vendor format.

- ``stins``      photonflow's own stream (``docs/stins.md``), what the Acquirer sends.
- ``dectris-v1`` a DECTRIS DCU's legacy JSON stream (port 9999, ``format: legacy``).
- ``dectris-v2`` a DECTRIS DCU's CBOR stream (port 31001, ``format: cbor``).
- ``maxiv``      MAX IV's streaming-receiver format (htype header / image / series_end).

What each protocol does not carry (series ids, end counts, a start message's frame
description) the model marks ``UNKNOWN`` or None: see the docstrings of ``dectris`` and
``maxiv``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from photonflow.errors import ConfigurationError
from photonflow.stream import dectris, maxiv, stins

Decoder = Callable[[Sequence], stins.StinsMessage]

PROTOCOLS: dict[str, Decoder] = {
    "stins": stins.decode,
    "dectris-v1": dectris.decode_v1,
    "dectris-v2": dectris.decode_v2,
    "maxiv": maxiv.decode,
}


def decoder_for(name: str) -> Decoder:
    """The decoder of protocol ``name``; ConfigurationError naming the known ones otherwise."""
    decoder = PROTOCOLS.get(name) if isinstance(name, str) else None
    if decoder is None:
        raise ConfigurationError(
            f"unknown stream protocol {name!r}; known protocols: {', '.join(PROTOCOLS)}"
        )
    return decoder
