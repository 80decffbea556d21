"""Each StreamReceiver's wake-up pair has an inproc name of its own, even when a receiver whose
wake socket was left open is collected and a new receiver gets its memory, and so its id (the
name was once id(self): the new receiver then failed to bind, "Address already in use", in a
full test run)."""

from __future__ import annotations

import zmq

from photonflow.stream.transport import StreamReceiver


def test_receivers_made_one_after_another_bind_though_each_left_its_wake_socket_open():
    left_open, names = [], []
    try:
        for _ in range(50):  # CPython gives each new receiver the last one's memory, so its id
            receiver = StreamReceiver("tcp://127.0.0.1:1")
            receiver.wake()  # the pair works
            assert receiver.receive(5_000) is None
            names.append(receiver._wake_in.getsockopt_string(zmq.LAST_ENDPOINT))
            receiver._socket.close()
            receiver._wake_out.close()
            left_open.append(receiver._wake_in)  # its inproc name stays taken in the process' context
            del receiver
        assert len(set(names)) == len(names)
    finally:
        for socket in left_open:
            socket.close()
