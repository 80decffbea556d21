"""The Recorder's queue: bounded by frames and by bytes, first in first out, never stuck."""

import threading
import time

import pytest

from photonflow.recording.frame_queue import FrameQueue, QueueEmpty, QueueFull


def test_items_come_out_in_the_order_they_went_in():
    q = FrameQueue(max_items=10, max_bytes=1000)
    for n in range(5):
        q.put(n, 10, timeout=0.1)
    assert [q.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert q.qsize() == 0 and q.bytes_queued == 0


def test_the_frame_bound_holds_back_the_next_put():
    q = FrameQueue(max_items=2, max_bytes=10**9)
    q.put("a", 1, timeout=0.1)
    q.put("b", 1, timeout=0.1)
    with pytest.raises(QueueFull):
        q.put("c", 1, timeout=0.05)
    assert q.qsize() == 2


def test_the_byte_bound_holds_back_a_frame_that_would_exceed_it():
    q = FrameQueue(max_items=100, max_bytes=1000)
    q.put("first", 600, timeout=0.1)
    with pytest.raises(QueueFull):
        q.put("second", 600, timeout=0.05)
    q.put("small", 400, timeout=0.1)  # still fits: 600 + 400 = 1000
    assert q.bytes_queued == 1000
    assert q.get() == "first"
    q.put("second", 600, timeout=0.1)  # room again: 400 + 600
    assert [q.get(), q.get()] == ["small", "second"]


def test_a_frame_larger_than_the_byte_budget_still_gets_through_alone():
    q = FrameQueue(max_items=100, max_bytes=1000)
    q.put("huge", 5000, timeout=0.1)
    with pytest.raises(QueueFull):
        q.put("next", 1, timeout=0.05)
    assert q.get() == "huge"
    q.put("next", 1, timeout=0.1)


def test_a_waiting_put_goes_through_as_soon_as_the_writer_takes_an_item():
    q = FrameQueue(max_items=1, max_bytes=10**6)
    q.put("a", 1, timeout=0.1)
    done = threading.Event()

    def producer():
        q.put("b", 1, timeout=5)
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    time.sleep(0.05)  # time for a put that does not wait to show it; load can only hide it, never fake it
    assert not done.is_set()
    assert q.get() == "a"
    assert done.wait(2)
    thread.join()
    assert q.get(timeout=0.1) == "b"


def test_get_gives_up_after_its_timeout_or_at_once_without_one():
    q = FrameQueue(max_items=1, max_bytes=1)
    with pytest.raises(QueueEmpty):
        q.get()
    start = time.monotonic()
    with pytest.raises(QueueEmpty):
        q.get(timeout=0.05)
    assert time.monotonic() - start >= 0.04


@pytest.mark.parametrize("items, nbytes", [(0, 10), (10, 0)])
def test_a_queue_that_could_hold_nothing_is_refused(items, nbytes):
    with pytest.raises(ValueError, match=r"the queue must hold at least one (item|byte), got 0"):
        FrameQueue(items, nbytes)


def test_a_full_queue_lets_its_producer_go_only_once_drained_to_half():
    q = FrameQueue(max_items=4, max_bytes=10**6)
    for n in range(4):
        q.put(n, 1, timeout=0.1)
    done = threading.Event()

    def producer():
        q.put("next", 1, timeout=30)  # woken by the queue, not by its own timeout
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert q.get() == 0  # three left: above half, the producer keeps waiting
    assert not done.wait(0.2)
    assert q.get() == 1  # two left: half
    assert done.wait(5)
    thread.join()
    assert [q.get() for _ in range(3)] == [2, 3, "next"]


def test_batches_go_in_whole_and_come_out_in_order_up_to_the_limit():
    q = FrameQueue(max_items=10, max_bytes=1000)
    q.put_many([(n, 10) for n in range(5)], timeout=0.1)
    q.put_many([(n, 10) for n in range(5, 7)], timeout=0.1)
    assert q.qsize() == 7 and q.bytes_queued == 70
    assert q.get_many(limit=4) == [0, 1, 2, 3]
    assert q.get_many(timeout=0.1) == [4, 5, 6]


def test_a_batch_waits_for_room_for_all_of_it():
    q = FrameQueue(max_items=4, max_bytes=10**6)
    q.put_many([("a", 1), ("b", 1)], timeout=0.1)
    with pytest.raises(QueueFull):
        q.put_many([("c", 1), ("d", 1), ("e", 1)], timeout=0.05)  # 2 + 3 > 4: none of it goes in
    assert q.qsize() == 2
    q.put_many([("c", 1), ("d", 1)], timeout=0.1)
    assert q.get_many() == ["a", "b", "c", "d"]


def test_a_batch_handed_to_the_writer_counts_against_the_bounds_until_it_comes_back():
    q = FrameQueue(max_items=100, max_bytes=1000)
    q.put_many([("first", 400), ("second", 400)], timeout=0.1)
    assert q.get_many(limit=1) == ["first"]  # being written: its 400 bytes are still taken
    assert (q.qsize(), q.bytes_queued) == (2, 800)  # received and not yet written
    with pytest.raises(QueueFull):
        q.put("third", 400, timeout=0.05)  # 400 queued + 400 in the writer's hands + 400 > 1000
    assert q.get_many() == ["second"]  # the first is written now: its room is free
    q.put("third", 400, timeout=0.1)
    assert q.get_many() == ["third"]


def test_a_producer_waiting_for_room_is_woken_when_the_writer_comes_back_for_more():
    q = FrameQueue(max_items=2, max_bytes=10**6)
    q.put_many([("a", 1), ("b", 1)], timeout=0.1)
    assert q.get_many() == ["a", "b"]  # both in the writer's hands: the queue is empty, but full
    done = threading.Event()
    thread = threading.Thread(target=lambda: (q.put_many([("c", 1), ("d", 1)], timeout=5), done.set()))
    thread.start()
    with pytest.raises(QueueEmpty):
        q.get_many()  # the writer is back: a and b are written, their room is free
    assert done.wait(2)
    thread.join()
    assert q.get_many() == ["c", "d"]


def test_once_the_writer_says_its_batch_is_written_nothing_counts_as_waiting():
    q = FrameQueue(max_items=10, max_bytes=1000)
    q.put_many([("end", 10)], timeout=0.1)
    assert q.get_many() == ["end"] and (q.qsize(), q.bytes_queued) == (1, 10)  # in the writer's hands
    q.written()
    assert (q.qsize(), q.bytes_queued) == (0, 0)
