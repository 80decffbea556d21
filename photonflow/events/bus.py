"""The event bus: "experiment done" announcements for catalogues, processing and dashboards.

After each standardized NeXus file is written, photonflow publishes one event: which beamline,
which file, which NeXus definition, which series, when, and the standardized entry itself as
JSON. Two transports, one ``EventBus`` protocol:

- ``RedisStreamBus``: a Redis stream (XADD, one field ``event`` holding the JSON document), on the
  Redis-compatible server the suite starts itself (``EmbeddedRedis``) or a facility's Redis;
- ``KafkaBus``: a Kafka topic (confluent-kafka, as LNLS' Assonant and EuXFEL's DAMNIT use), when a
  facility runs a broker. confluent-kafka is optional: ``pip install confluent-kafka``.

``event_bus_from_url`` picks one by URL: ``redis://host:port[/db]`` or ``kafka://host:port/topic``.

A failed publication raises ``EventBusError``. The caller (the Standardizer) records it, e.g. in
its status and a counter, and carries on: the file is already written and complete, and a bus
that is down must never fail an acquisition.

Compatibility with Assonant (``assonant.data_classes.events.ExperimentDone``): Assonant's event
has exactly two fields, ``beamline`` and ``filepath``, and its Kafka sender sends the model's
JSON as the message value. photonflow's event carries those two fields under the same names
with the same meaning (``filepath``: the absolute path of the NeXus file), so
``ExperimentDone(**assonant_experiment_done(event))`` rebuilds Assonant's event from ours.
What differs: photonflow adds ``type``, ``definition`` (e.g. ``NXmx``), ``series_id``, ``time``
(ISO 8601, UTC) and ``entry`` (the standardized entry, JSON); Assonant's model forbids extra
fields, so a consumer hands it only those two. On Kafka the value is the JSON document, as with
Assonant; on Redis it is the stream field ``event``.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, NamedTuple, Protocol

from photonflow.errors import ConfigurationError, EventBusError

DEFAULT_STREAM = "photonflow:experiments"
DEFAULT_MAXLEN = 10000
EXPERIMENT_DONE = "ExperimentDone"
# The fields of Assonant's ExperimentDone event, which photonflow's event carries unchanged.
ASSONANT_FIELDS = ("beamline", "filepath")


class EventBus(Protocol):
    """Where photonflow announces finished files."""

    def publish(self, event: Mapping[str, Any]) -> str:
        """Send one event; returns its id on the bus. Raises EventBusError when it cannot."""

    def close(self) -> None:
        """Release connections (idempotent)."""


class BusMessage(NamedTuple):
    """One event read back: its id on the bus and the decoded document."""

    id: str
    event: dict[str, Any]


def experiment_done_event(
    beamline: str,
    file_path: str | PurePath,
    definition: str,
    series_id: int,
    entry: Mapping[str, Any],
    *,
    time: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The "experiment done" message for a written NeXus file, JSON-safe.

    ``entry`` is the standardized entry as a nested mapping (groups as dicts, datasets as values);
    numpy scalars and arrays become numbers and lists, bytes become text. ``time`` (default: now)
    is when the file was completed; naive times are taken as UTC.
    """
    when = time or datetime.datetime.now(datetime.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return {
        "type": EXPERIMENT_DONE,
        "beamline": str(beamline),
        "filepath": str(file_path),
        "definition": str(definition),
        "series_id": int(series_id),
        "time": when.isoformat(),
        "entry": json_safe(dict(entry)),
    }


def assonant_experiment_done(event: Mapping[str, Any]) -> dict[str, str]:
    """The fields of Assonant's ExperimentDone from a photonflow event (Assonant forbids extra fields)."""
    return {name: event[name] for name in ASSONANT_FIELDS}


def json_safe(value: Any) -> Any:
    """A value JSON can carry: numpy scalars and arrays to numbers and lists, bytes to text, paths
    and times to text, tuples and sets to lists; NaN and infinities to null (JSON has none)."""
    if isinstance(value, Mapping):
        return {str(_text_of(key)): json_safe(item) for key, item in value.items()}
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes | bytearray):
        return _text_of(bytes(value))
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, without importing numpy
    if callable(tolist):
        return json_safe(tolist())
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    raise TypeError(f"cannot send {type(value).__name__} on the event bus: {value!r}")


def _text_of(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def encode_event(event: Mapping[str, Any]) -> str:
    """The JSON document of an event, as it travels (strict JSON: no NaN)."""
    return json.dumps(json_safe(dict(event)), allow_nan=False, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------- URLs

@dataclass(frozen=True)
class BusAddress:
    """A parsed event-bus URL."""

    scheme: str  # "redis" (also rediss) or "kafka"
    url: str
    servers: str = ""  # Kafka: bootstrap servers, host:port[,host:port]
    topic: str = ""  # Kafka: the topic


_HOST_PORT = r"[A-Za-z0-9_.\-]+:[0-9]{1,5}"
_REDIS_URL = re.compile(rf"^(redis|rediss)://(?:[^@/]*@)?{_HOST_PORT}(?:/[0-9]+)?/?$")
_KAFKA_URL = re.compile(rf"^kafka://(?P<servers>{_HOST_PORT}(?:,{_HOST_PORT})*)/(?P<topic>[A-Za-z0-9._\-]+)$")


def parse_bus_url(url: str) -> BusAddress:
    """Check an event-bus URL without connecting; ConfigurationError says what is expected."""
    url = url.strip()
    if _REDIS_URL.match(url):
        return BusAddress("redis", url)
    kafka = _KAFKA_URL.match(url)
    if kafka:
        return BusAddress("kafka", url, kafka["servers"], kafka["topic"])
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme in ("redis", "rediss", "kafka"):
        expected = "redis://host:port[/db]" if scheme.startswith("redis") else "kafka://host:port[,host:port]/topic"
        raise ConfigurationError(f"event bus URL {url!r} is malformed; expected {expected}")
    raise ConfigurationError(
        f"event bus URL {url!r}: unsupported scheme {scheme or '(none)'!r}; "
        "expected redis://host:port or kafka://host:port/topic"
    )


def event_bus_from_url(url: str, stream: str = DEFAULT_STREAM, maxlen: int = DEFAULT_MAXLEN) -> EventBus:
    """The bus a URL names: a Redis stream (``stream``, trimmed to about ``maxlen`` events) or a
    Kafka topic."""
    address = parse_bus_url(url)
    if address.scheme == "kafka":
        return KafkaBus(address.servers, address.topic)
    return RedisStreamBus(address.url, stream=stream, maxlen=maxlen)


# --------------------------------------------------------------------------------------- transports

class RedisStreamBus:
    """Events as entries of a Redis stream: ``XADD <stream> MAXLEN ~ <maxlen> * event <json>``.

    Any Redis reader sees them: ``redis-cli XRANGE photonflow:experiments - +``. The stream keeps
    about ``maxlen`` latest events; a consumer that needs all of them reads them before that.
    """

    def __init__(self, url: str, stream: str = DEFAULT_STREAM, maxlen: int = DEFAULT_MAXLEN,
                 timeout: float = 5.0):
        import redis

        if parse_bus_url(url).scheme != "redis":
            raise ConfigurationError(f"{url!r} is not a redis:// URL")
        self.url, self.stream, self.maxlen = url, stream, maxlen
        self._redis_error = redis.RedisError
        self._client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)

    def publish(self, event: Mapping[str, Any]) -> str:
        document = encode_event(event)
        try:
            entry_id = self._client.xadd(self.stream, {"event": document}, maxlen=self.maxlen, approximate=True)
        except self._redis_error as error:
            raise EventBusError(f"cannot publish on {self.url} (stream {self.stream}): {error}") from error
        return entry_id.decode()

    def read(self, since: str = "0-0", count: int = 100, block_ms: int | None = None) -> list[BusMessage]:
        """Events after the id ``since`` (``"0-0"``: from the oldest kept; ``"$"``: only new ones),
        at most ``count``; waits up to ``block_ms`` for the first one (None: does not wait)."""
        try:
            answer = self._client.xread({self.stream: since}, count=count, block=block_ms)
        except self._redis_error as error:
            raise EventBusError(f"cannot read {self.url} (stream {self.stream}): {error}") from error
        return [BusMessage(entry_id.decode(), _decode_entry(fields))
                for _stream, entries in answer or [] for entry_id, fields in entries]

    def last_id(self) -> str:
        """The id of the newest event kept ("0-0": none): read after it, a reader misses nothing new."""
        try:
            newest = self._client.xrevrange(self.stream, count=1)
        except self._redis_error as error:
            raise EventBusError(f"cannot read {self.url} (stream {self.stream}): {error}") from error
        return newest[0][0].decode() if newest else "0-0"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RedisStreamBus:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _decode_entry(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """The event of a stream entry; an entry someone else wrote in another form is shown as its
    raw fields (under ``fields``) rather than stopping the reader."""
    try:
        return json.loads(fields[b"event"])
    except (KeyError, ValueError):
        return {"fields": {_text_of(key): _text_of(value) for key, value in fields.items()}}


class KafkaBus:
    """Events as messages of a Kafka topic (value: the JSON document; key: the series id).

    Needs confluent-kafka (``pip install confluent-kafka``), imported only when a Kafka bus is
    configured. ``publish`` waits up to ``timeout`` for the broker to acknowledge.
    """

    def __init__(self, bootstrap_servers: str, topic: str, timeout: float = 5.0,
                 producer_config: Mapping[str, Any] | None = None):
        try:
            import confluent_kafka
        except ImportError:
            raise ConfigurationError(
                f"the Kafka event bus ({bootstrap_servers}/{topic}) needs the Python package confluent-kafka: "
                "pip install confluent-kafka"
            ) from None
        self.bootstrap_servers, self.topic, self.timeout = bootstrap_servers, topic, timeout
        self._producer = confluent_kafka.Producer(
            {"bootstrap.servers": bootstrap_servers, "message.timeout.ms": int(timeout * 1000),
             **(producer_config or {})}
        )

    def publish(self, event: Mapping[str, Any]) -> str:
        outcome: dict[str, Any] = {}

        def delivered(error, message):
            outcome["error"], outcome["message"] = error, message

        key = str(event.get("series_id", "")).encode() or None
        where = f"Kafka {self.bootstrap_servers} topic {self.topic}"
        try:
            self._producer.produce(self.topic, value=encode_event(event).encode(), key=key, on_delivery=delivered)
            self._producer.flush(self.timeout)
        except Exception as error:  # confluent_kafka.KafkaException, BufferError
            raise EventBusError(f"cannot publish on {where}: {error}") from error
        if outcome.get("error") is not None or "message" not in outcome:
            reason = outcome.get("error") or f"no acknowledgement within {self.timeout:g} s"
            raise EventBusError(f"cannot publish on {where}: {reason}")
        message = outcome["message"]
        return f"{message.topic()}/{message.partition()}/{message.offset()}"

    def close(self) -> None:
        self._producer.flush(self.timeout)
