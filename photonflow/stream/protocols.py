"""The stream protocols a Recorder input can speak, each decoded into photonflow's model."""

from __future__ import annotations

from typing import Callable, Sequence

from photonflow.errors import ConfigurationError
from photonflow.stream import stins

Decoder = Callable[[Sequence], stins.StinsMessage]

PROTOCOLS: dict[str, Decoder] = {
    "stins": stins.decode,
}


def decoder_for(name: str) -> Decoder:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown stream protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}"
        ) from None
