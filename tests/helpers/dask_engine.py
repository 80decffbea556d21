"""A Dask scheduler (and one worker) started at a given address: a facility's scheduler restarted
where it was, which photonflow must find again by itself."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from photonflow.datamanager.jobs import dask_command


@contextlib.contextmanager
def scheduler_at(address: str, run_dir: Path) -> Iterator[list[subprocess.Popen]]:
    """``dask scheduler`` on ``address`` (tcp://127.0.0.1:port) and a ``dask worker``, each in its
    own process group, ended (killed) on leaving."""
    port = str(urlparse(address).port)
    run_dir.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen] = []
    try:
        for name, arguments in (
                ("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"]),
                ("worker", ["worker", address, "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
                            "--no-dashboard", "--local-directory", str(run_dir / "workers")])):
            with open(run_dir / f"{name}.log", "ab") as log:
                started.append(subprocess.Popen([*dask_command(), *arguments], stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, cwd=run_dir, start_new_session=True))
        yield started
    finally:
        for process in started:
            kill_group(process)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL ``process``' group (it leads its own session), as a crash would end it, and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
