"""A Dask scheduler killed under the DataManager: asking for the jobs answers at once with a
JobEngineLost error saying what to do, the DataManager goes ALARM saying why, the jobs the
scheduler took with it are failed with that reason, and a scheduler restarted at the same address
is used again by itself (no Init)."""

from __future__ import annotations

import operator
import os
import signal
import time

import pytest

from photonflow import states
from photonflow.datamanager.jobs import DONE, FAILED, EmbeddedDask, JobBoard, JobEngineLost
from photonflow.datamanager.manager import DataManager
from tests.helpers.dask_engine import kill_group, scheduler_at
from tests.helpers.waiting import wait_until


class Listener:
    def state_changed(self, state: str, status: str) -> None:
        pass

    def counters_changed(self, counters) -> None:
        pass


def test_a_killed_scheduler_is_said_at_once_and_a_restarted_one_used_again(tmp_path):
    engine = EmbeddedDask(tmp_path / "dask", workers=1, threads_per_worker=1)
    address = engine.start()
    board = JobBoard(address=address)
    manager = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue", Listener(), jobs=board)
    try:
        manager.set_experiment("jl0001", "s1", "a")
        long_job = board.submit("long sleep", time.sleep, 120)
        assert [job["id"] for job in manager.job_states()] == [long_job]
        kill_group(engine.processes["scheduler"])
        wait_until(lambda: not board.connected, 60, what="the client noticing its scheduler is gone")

        with pytest.raises(JobEngineLost) as lost:
            manager.job_states()
        assert lost.value.reason == "JobEngineLost"
        assert address in str(lost.value) and "start it again" in str(lost.value)
        assert manager.state == states.ALARM and str(lost.value) in manager.status
        with pytest.raises(JobEngineLost):
            board.submit("add", operator.add, 1, 2)

        with scheduler_at(address, tmp_path / "restarted"):
            listed = wait_until(manager.job_states, 120, what="the restarted scheduler answering",
                                tolerate=(JobEngineLost,))
            (before,) = listed
            assert (before["id"], before["state"]) == (long_job, FAILED)
            assert before["error"].startswith("lost with the job engine") and address in before["error"]
            assert manager.state == states.ON and manager.status == "Job engine answering again"
            again = board.submit("add", operator.add, 1, 2)
            assert board.wait(again, timeout=120) == DONE and board.result(again) == 3
    finally:
        manager.close()
        board.close()
        engine.stop()


def test_a_scheduler_that_hangs_is_said_and_used_again_once_it_answers(tmp_path):
    """Stopped (SIGSTOP), not dead: the client sees no closed connection, so only a deadline on the
    question tells; once the scheduler goes on (SIGCONT) it is used again."""
    engine = EmbeddedDask(tmp_path / "dask", workers=1, threads_per_worker=1)
    address = engine.start()
    board = JobBoard(address=address, answer_timeout=2.0)
    manager = DataManager(tmp_path / "data", "demo", tmp_path / "catalogue", Listener(), jobs=board)
    scheduler = engine.processes["scheduler"].pid
    try:
        done = board.submit("add", operator.add, 2, 3)
        assert board.wait(done, timeout=120) == DONE
        os.killpg(scheduler, signal.SIGSTOP)
        try:
            with pytest.raises(JobEngineLost, match=f"{address} did not answer within 2.0 s") as lost:
                manager.job_states()
            assert manager.state == states.ALARM and str(lost.value) in manager.status
        finally:
            os.killpg(scheduler, signal.SIGCONT)
        listed = wait_until(manager.job_states, 60, what="the scheduler answering again", tolerate=(JobEngineLost,))
        assert [(job["id"], job["state"]) for job in listed] == [(done, DONE)]
        assert manager.state == states.ON
    finally:
        manager.close()
        board.close()
        engine.stop()
