"""The event bus without Tango: the embedded Redis-compatible server with its modules, and
"experiment done" events published there and read back by another process."""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import redis

from photonflow.errors import ConfigurationError, EventBusError, EventServerError
from photonflow.events import (
    EmbeddedRedis,
    KafkaBus,
    RedisInstallation,
    RedisStreamBus,
    assonant_experiment_done,
    event_bus_from_url,
    experiment_done_event,
)
from photonflow.events.redis_server import free_port

pytestmark = pytest.mark.timeout(60)

COMPLETED = datetime.datetime(2026, 11, 27, 10, 30, 5, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as running:
        yield running


def diffraction_event(series_id: int, frames: int) -> dict:
    entry = {
        "definition": "NXmx",
        "instrument": {
            "detector": {
                "description": b"EIGER2 X 4M",
                "x_pixel_size": np.float32(75e-6),
                "frame_count": np.int64(frames),
                "beam_center": np.array([512.5, 530.25]),
                "mask_rows": np.arange(3, dtype=np.uint16),
            },
        },
        "sample": {"name": "lysozyme", "temperature": np.float64(100.0)},
    }
    return experiment_done_event(
        "MANACA", f"/data/2026/series_{series_id:05d}.nxs", "NXmx", series_id, entry, time=COMPLETED
    )


def read_stream_in_another_process(url: str, stream: str) -> list[dict]:
    """What any Redis client sees: a separate Python process reads the stream with plain redis-py."""
    reader = textwrap.dedent(f"""
        import json, redis
        client = redis.Redis.from_url({url!r})
        for entry_id, fields in client.xrange({stream!r}):
            print(json.dumps({{"id": entry_id.decode(), "event": json.loads(fields[b"event"])}}))
        client.close()
    """)
    output = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, timeout=30, check=True)
    return [json.loads(line) for line in output.stdout.splitlines()]


def test_the_embedded_server_runs_rejson_and_search(server):
    assert server.url == f"redis://127.0.0.1:{server.port}"
    assert {"ReJSON", "search"} <= set(server.modules())


def test_two_events_are_read_back_unchanged_by_another_process(server):
    stream = "test:two-events"
    sent = [diffraction_event(17, 1000), diffraction_event(18, 250)]
    with RedisStreamBus(server.url, stream=stream) as bus:
        ids = [bus.publish(event) for event in sent]

    received = read_stream_in_another_process(server.url, stream)

    assert [message["id"] for message in received] == ids
    assert [message["event"] for message in received] == sent
    first = received[0]["event"]
    assert first["type"] == "ExperimentDone"
    assert first["beamline"] == "MANACA"
    assert first["filepath"] == "/data/2026/series_00017.nxs"
    assert first["definition"] == "NXmx"
    assert first["series_id"] == 17
    assert first["time"] == "2026-11-27T10:30:05+00:00"
    detector = first["entry"]["instrument"]["detector"]
    assert detector["beam_center"] == [512.5, 530.25]
    assert detector["mask_rows"] == [0, 1, 2]
    assert detector["frame_count"] == 1000
    assert detector["description"] == "EIGER2 X 4M"
    assert detector["x_pixel_size"] == pytest.approx(75e-6)


def test_read_gives_the_events_after_an_id(server):
    with RedisStreamBus(server.url, stream="test:since") as bus:
        first = bus.publish(diffraction_event(1, 10))
        second = bus.publish(diffraction_event(2, 20))
        everything = bus.read()
        after_first = bus.read(since=first)

    assert [message.id for message in everything] == [first, second]
    assert [message.event["series_id"] for message in after_first] == [2]
    assert after_first[0].event["entry"]["instrument"]["detector"]["frame_count"] == 20


def test_an_entry_written_in_another_form_is_shown_as_its_fields(server):
    client = redis.Redis.from_url(server.url)
    foreign = client.xadd("test:foreign", {"scan": "42", "state": "done"}).decode()
    client.close()
    with RedisStreamBus(server.url, stream="test:foreign") as bus:
        (message,) = bus.read()

    assert message == (foreign, {"fields": {"scan": "42", "state": "done"}})


def test_photonflow_events_tail_prints_the_events_as_json_lines(server):
    stream = "test:tail"
    sent = [diffraction_event(5, 5), diffraction_event(6, 6)]
    with RedisStreamBus(server.url, stream=stream) as bus:
        ids = [bus.publish(event) for event in sent]

    output = subprocess.run(
        [sys.executable, "-m", "photonflow.clients.cli", "events", "tail", "--url", server.url, "--stream", stream],
        capture_output=True, text=True, timeout=60, check=True,
    )
    lines = [json.loads(line) for line in output.stdout.splitlines()]

    assert lines == [{"id": entry_id, "event": event} for entry_id, event in zip(ids, sent, strict=True)]


def test_the_event_carries_assonants_experiment_done(server):
    events = pytest.importorskip("assonant.data_classes.events")
    event = diffraction_event(3, 30)

    rebuilt = events.ExperimentDone(**assonant_experiment_done(event))

    assert rebuilt.beamline == "MANACA"
    assert rebuilt.filepath == "/data/2026/series_00003.nxs"


def test_a_stopped_server_is_gone(tmp_path):
    server = EmbeddedRedis(tmp_path)
    server.start()
    port, process = server.port, server.process

    server.stop()

    assert process.poll() is not None
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_publishing_to_a_bus_that_is_down_raises_an_error_the_caller_can_record():
    bus = RedisStreamBus(f"redis://127.0.0.1:{free_port()}", timeout=2)

    with pytest.raises(EventBusError) as raised:
        bus.publish(diffraction_event(9, 9))
    bus.close()

    assert raised.value.reason == "EventBusUnavailable"
    assert "photonflow:experiments" in str(raised.value)


def test_a_missing_module_is_named(tmp_path):
    real = RedisInstallation.from_packages()
    absent = tmp_path / "modules" / "redisearch.so"
    server = EmbeddedRedis(tmp_path, RedisInstallation(real.server, (real.modules[0], absent)))

    with pytest.raises(EventServerError) as raised:
        server.start()

    assert raised.value.reason == "EventServerModuleMissing"
    assert str(absent) in str(raised.value)
    assert server.process is None


def test_a_missing_server_binary_is_named(tmp_path):
    real = RedisInstallation.from_packages()
    absent = tmp_path / "bin" / "valkey-server"

    with pytest.raises(EventServerError) as raised:
        EmbeddedRedis(tmp_path, RedisInstallation(absent, real.modules)).start()

    assert raised.value.reason == "EventServerMissing"
    assert str(absent) in str(raised.value)


def test_a_module_that_does_not_load_stops_the_start_with_the_end_of_the_log(tmp_path):
    real = RedisInstallation.from_packages()
    broken = tmp_path / "broken.so"
    broken.write_bytes(b"not a shared object")
    server = EmbeddedRedis(tmp_path / "run", RedisInstallation(real.server, (*real.modules, broken)))

    with pytest.raises(EventServerError) as raised:
        server.start()

    assert raised.value.reason == "EventServerNotStarted"
    assert "broken.so" in str(raised.value)  # the server's own complaint, from its log
    assert server.process is None


@pytest.mark.parametrize("url, complaint", [
    ("http://127.0.0.1:6379", "unsupported scheme 'http'"),
    ("127.0.0.1:6379", "unsupported scheme '(none)'"),
    ("redis://127.0.0.1", "expected redis://host:port"),
    ("kafka://broker:9092", "expected kafka://host:port[,host:port]/topic"),
])
def test_a_bad_url_is_refused(url, complaint):
    with pytest.raises(ConfigurationError) as raised:
        event_bus_from_url(url)

    assert complaint in str(raised.value)


def test_a_kafka_url_without_confluent_kafka_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # as if not installed

    with pytest.raises(ConfigurationError) as raised:
        event_bus_from_url("kafka://broker.example:9092/experiments")

    assert "confluent-kafka" in str(raised.value)
    assert "broker.example:9092/experiments" in str(raised.value)
    with pytest.raises(ConfigurationError):
        KafkaBus("broker.example:9092", "experiments")


def test_a_kafka_broker_that_is_down_raises_an_error_the_caller_can_record():
    pytest.importorskip("confluent_kafka")  # optional: pip install confluent-kafka
    bus = KafkaBus(f"127.0.0.1:{free_port()}", "experiments", timeout=1, producer_config={"log_level": 0})

    with pytest.raises(EventBusError) as raised:
        bus.publish(diffraction_event(9, 9))
    bus.close()

    assert raised.value.reason == "EventBusUnavailable"
    assert "topic experiments" in str(raised.value)


def test_the_event_is_json_safe_whatever_the_entry_holds():
    event = experiment_done_event("b", "/f.nxs", "NXtomo", np.int32(4), {
        "angles": np.linspace(0, 1, 3), "flag": np.bool_(True), "missing": float("nan"), "shape": (2, 3),
    }, time=datetime.datetime(2026, 1, 2, 3, 4, 5))

    assert json.loads(json.dumps(event, allow_nan=False)) == event
    assert event["series_id"] == 4
    assert event["time"] == "2026-01-02T03:04:05+00:00"
    assert event["entry"] == {"angles": [0.0, 0.5, 1.0], "flag": True, "missing": None, "shape": [2, 3]}
