"""The event bus: "experiment done" events after each standardized NeXus file (issue 10 §2).

No Tango here. ``bus`` holds the event and its transports (Redis streams, Kafka); ``redis_server``
the Redis-compatible server the suite starts itself when no external bus is configured.
"""

from photonflow.events.bus import (
    DEFAULT_STREAM,
    BusMessage,
    EventBus,
    KafkaBus,
    RedisStreamBus,
    assonant_experiment_done,
    event_bus_from_url,
    experiment_done_event,
    parse_bus_url,
)
from photonflow.events.redis_server import EmbeddedRedis, RedisInstallation

__all__ = [
    "DEFAULT_STREAM",
    "BusMessage",
    "EmbeddedRedis",
    "EventBus",
    "KafkaBus",
    "RedisInstallation",
    "RedisStreamBus",
    "assonant_experiment_done",
    "event_bus_from_url",
    "experiment_done_event",
    "parse_bus_url",
]
