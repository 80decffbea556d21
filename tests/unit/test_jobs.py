"""Processing jobs on a real Dask engine: a `dask scheduler` and two `dask worker` processes
started on 127.0.0.1, a pyFAI integration of a real NXmx run there finding the CeO2 rings, a
failing job reported with its error, a long job cancelled, and nothing left running after stop."""

from __future__ import annotations

import operator
import os
import sys
import time

import h5py
import psutil
import pytest

from photonflow.datamanager.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    RUNNING,
    EmbeddedDask,
    ExternalScheduler,
    JobBoard,
    JobEngineError,
    SlurmEngine,
    client_for,
    engine_from_url,
)
from photonflow.datamanager.processing import integrate_azimuthally
from photonflow.errors import ConfigurationError
from tests.helpers.processing_inputs import assert_peaks_at_ceo2, write_ceo2_nxmx
from tests.helpers.waiting import wait_until


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    dask = EmbeddedDask(tmp_path_factory.mktemp("dask"), workers=2, threads_per_worker=1)
    dask.start()
    try:
        yield dask
    finally:
        dask.stop()


@pytest.fixture(scope="module")
def board(engine):
    client = client_for(engine.address)
    try:
        yield JobBoard(client)
    finally:
        client.close()


def wait_for_state(board: JobBoard, job: str, wanted: str, timeout: float = 60.0) -> str:
    wait_until(lambda: board.state(job) == wanted, timeout, what=f"job {job} {wanted} (it is {board.state(job)})")
    return wanted


def gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its (init) parent to reap it: nothing runs."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_scheduler_and_two_workers_run_as_separate_processes_on_loopback(engine, board):
    assert engine.address.startswith("tcp://127.0.0.1:")
    worker_pids = board.client.run(os.getpid)
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids.values()
    assert all(address.startswith("tcp://127.0.0.1:") for address in worker_pids)
    assert (engine.run_dir / "scheduler.log").exists() and (engine.run_dir / "worker-0.log").exists()


def test_an_azimuthal_integration_job_finds_the_ceo2_rings(engine, board, tmp_path):
    nxmx = write_ceo2_nxmx(tmp_path / "raw")
    output = tmp_path / "PROCESSED_DATA" / "ceo2_integrated.nxs"
    job = board.submit("integrate ceo2", integrate_azimuthally, nxmx, output, npt=1000)
    assert board.wait(job, timeout=240) == DONE
    assert board.result(job) == output
    described = board.job(job)
    assert described["name"] == "integrate ceo2" and described["error"] == ""
    assert described["worker"].startswith("tcp://127.0.0.1:") and described["started"] is not None
    assert "integrated 4 frames" in described["log"]
    with h5py.File(output) as f:
        assert_peaks_at_ceo2(f["entry/peaks/q"][()])


def test_a_failing_job_is_failed_with_its_error(board, tmp_path):
    job = board.submit("integrate nothing", integrate_azimuthally, tmp_path / "absent.nxs", tmp_path / "out.nxs")
    assert board.wait(job, timeout=120) == FAILED
    described = board.job(job)
    assert described["state"] == FAILED
    assert described["error"].startswith("FileNotFoundError") and "absent.nxs" in described["error"]
    assert "Traceback" in described["log"]
    other = board.submit("divide", operator.truediv, 1, 0)
    assert board.wait(other, timeout=120) == FAILED
    assert "ZeroDivisionError" in board.job(other)["error"]
    with pytest.raises(ZeroDivisionError):
        board.result(other)


def test_a_long_job_can_be_cancelled_while_it_runs(board):
    job = board.submit("long sleep", time.sleep, 30)
    assert wait_for_state(board, job, RUNNING) == RUNNING
    board.cancel(job)
    assert board.state(job) == CANCELLED
    listed = {entry["id"]: entry for entry in board.jobs()}
    assert listed[job]["state"] == CANCELLED and listed[job]["name"] == "long sleep"
    with pytest.raises(ConfigurationError, match="no job 'unknown'"):
        board.state("unknown")


def test_stop_leaves_no_dask_process(tmp_path):
    dask = EmbeddedDask(tmp_path / "dask", workers=2, threads_per_worker=1)
    dask.start()
    try:
        pids = dask.pids
        assert len(pids) >= 3 and not any(gone(pid) for pid in pids)  # scheduler, workers (and nannies)
    finally:
        dask.stop()
    assert [pid for pid in pids if not gone(pid)] == []
    assert dask.address is None


def test_an_engine_that_does_not_come_up_says_why_with_its_log(tmp_path):
    broken = [sys.executable, "-c", "import sys; print('scheduler: cannot bind'); sys.exit(3)"]
    dask = EmbeddedDask(tmp_path / "dask", workers=1, dask=broken, startup_timeout=30)
    with pytest.raises(JobEngineError, match="(?s)exited with code 3.*scheduler: cannot bind") as raised:
        dask.start()
    assert raised.value.reason == "JobEngineNotStarted"
    assert dask.address is None and dask.pids == []


def test_the_engine_is_chosen_by_a_url(tmp_path):
    embedded = engine_from_url("embedded", tmp_path, workers=2, threads_per_worker=1)
    assert isinstance(embedded, EmbeddedDask) and embedded.workers == 2 and embedded.run_dir == tmp_path
    facility = engine_from_url("tcp://scheduler.example.org:8786")
    assert isinstance(facility, ExternalScheduler) and facility.start() == "tcp://scheduler.example.org:8786"
    slurm = engine_from_url("slurm://short?jobs=3&cores=4&memory=16GB")
    assert isinstance(slurm, SlurmEngine)
    assert (slurm.queue, slurm.jobs, slurm.options) == ("short", 3, {"cores": 4, "memory": "16GB"})
    with pytest.raises(ConfigurationError, match="not understood"):
        engine_from_url("ftp://somewhere")
    with pytest.raises(ConfigurationError, match="run directory"):
        engine_from_url("embedded")


def test_a_slurm_engine_without_dask_jobqueue_says_what_to_install():
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("dask-jobqueue is installed here")
    with pytest.raises(JobEngineError, match="pip install dask-jobqueue"):
        SlurmEngine("short").start()
