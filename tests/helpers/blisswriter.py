"""ESRF's NeXus writer, ``blisswriter run <redis>`` from PyPI, as a BLISS site runs it: a process of
its own that saves every blissdata scan with a path into the files its h5maps name. A test starts
it, knows it listens (a probe scan it logs), and waits for it to report each scan saved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers.waiting import wait_until

BLISSWRITER = Path(sys.executable).with_name("blisswriter")


class BlissWriter:
    """``with BlissWriter(url) as writer: ...; writer.wait_saved(1)``: started, listening, stopped."""

    def __init__(self, url: str):
        self.url = url
        self.lines: list[str] = []
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> BlissWriter:
        self._process = subprocess.Popen([str(BLISSWRITER), "run", self.url, "--log-level", "DEBUG"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._wait_listening()
        return self

    def __exit__(self, *exc) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # it finishes the scans it writes, then ends
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(10)  # its output read to the end
        if process is not None and process.stderr is not None:
            process.stderr.close()

    def _read(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            self.lines.append(line.rstrip())

    def _wait_listening(self) -> None:
        """blissdata announces new scans from "now" on: a probe scan, created until the writer logs
        it, proves that it reads the announcements before the test's scan comes."""
        from photonflow.publishing.blissdata_scan import open_data_store

        store = open_data_store(self.url)
        number = 0

        def seen() -> bool:
            nonlocal number
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError("blisswriter ended:\n" + self.log())
            number += 1
            probe = store.create_scan({"name": "blisswriter_probe", "number": os.getpid() * 1000 + number,
                                       "data_policy": "no_policy"}, {})
            probe.close()
            time.sleep(0.2)
            return any(probe.key in line for line in self.lines)

        wait_until(seen, 60, interval=0, what=lambda: "blisswriter listening:\n" + self.log())

    def wait_saved(self, scans: int, timeout: float = 60) -> None:
        """Until it reports ``scans`` scans saved; any error it logs fails at once, with its log."""
        def saved() -> bool:
            errors = [line for line in self.lines if " - ERROR " in line or " - CRITICAL " in line]
            if errors:
                raise AssertionError("blisswriter failed:\n" + self.log())
            return sum("Saving complete." in line for line in self.lines) >= scans

        wait_until(saved, timeout, what=lambda: f"{scans} scan(s) saved by blisswriter:\n" + self.log())

    def log(self) -> str:
        return "\n".join(self.lines[-40:])
