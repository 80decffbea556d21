"""The ZeroMQ transport: a waiting receiver can be woken from another thread."""

import threading
import time

from photonflow.stream.transport import StreamReceiver, StreamSender


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
