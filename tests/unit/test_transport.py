"""The ZeroMQ transport: a waiting receiver can be woken from another thread."""

import threading
import time

from photonflow.stream.transport import (
    RECEIVE_BUFFER_BYTES,
    RECEIVE_HIGH_WATER_MARK,
    UNSIZED_HIGH_WATER_MARK,
    StreamReceiver,
    StreamSender,
    receive_high_water_mark,
)


def test_wake_ends_a_receive_that_is_waiting_for_messages():
    sender = StreamSender("tcp://127.0.0.1:*")
    receiver = StreamReceiver(sender.endpoint)
    try:
        result = {}

        def waiting():
            start = time.monotonic()
            result["parts"] = receiver.receive(30_000)
            result["seconds"] = time.monotonic() - start

        thread = threading.Thread(target=waiting)
        thread.start()
        time.sleep(0.1)  # most often the receiver is waiting by now; a wake before that is kept for it
        receiver.wake()
        thread.join(10)
        assert not thread.is_alive()
        assert result["parts"] is None and result["seconds"] < 10  # woken, not timed out
        sender.send([b"after", b"wake"])  # the receiver still works afterwards
        parts = receiver.receive(5_000)
        assert [bytes(p) for p in parts] == [b"after", b"wake"]
    finally:
        receiver.close()
        sender.close()


def test_wake_after_close_is_harmless():
    receiver = StreamReceiver("tcp://127.0.0.1:1")
    receiver.close()
    receiver.wake()


def test_the_receive_buffer_is_fitted_to_the_frames_in_bytes_and_only_ever_lowered():
    receiver = StreamReceiver("tcp://127.0.0.1:1")
    try:
        assert receiver.high_water_mark == UNSIZED_HIGH_WATER_MARK
        small = receiver.fit_to_frames(256 * 256 * 2)  # 128 kB frames: hundreds of them in 64 MB
        assert small == RECEIVE_BUFFER_BYTES // (256 * 256 * 2) == receiver.high_water_mark
        big = receiver.fit_to_frames(2162 * 2068 * 4)  # 17.9 MB frames: never fewer than 16 messages
        assert big == RECEIVE_HIGH_WATER_MARK == receiver.high_water_mark
        assert receiver.fit_to_frames(256 * 256 * 2) == RECEIVE_HIGH_WATER_MARK  # raising it could stall ZeroMQ
        assert receive_high_water_mark(1) == UNSIZED_HIGH_WATER_MARK
    finally:
        receiver.close()


def test_a_stream_flows_on_after_its_receive_buffer_was_lowered_under_way():
    sender = StreamSender("tcp://127.0.0.1:*")
    receiver = StreamReceiver(sender.endpoint)
    try:
        count = 3000
        sending = threading.Thread(target=lambda: [sender.send([b"%d" % n, bytes(1000)]) for n in range(count)])
        sending.start()
        first = receiver.receive(5_000)  # the series' first message: the others stream in behind it
        assert receiver.fit_to_frames(RECEIVE_BUFFER_BYTES // 20) == 20
        numbers = [int(bytes(first[0]))]
        while len(numbers) < count:
            parts = receiver.receive(10_000)
            assert parts is not None, f"the stream stalled after {len(numbers)} of {count} messages"
            numbers.append(int(bytes(parts[0])))
        sending.join(10)
        assert numbers == list(range(count))
    finally:
        receiver.close()
        sender.close()
