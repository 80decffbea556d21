"""Several Recorders behind one Controller, seen by it as one Recorder (its ``RecorderPort``).

The Acquirer deals its frames out to as many stream outputs as there are Recorders
(``StreamDistributor``: each frame to exactly one, the series' start and end to all). The group
arms Recorder *i* on output *i* with ``share`` and its part file ``<stem>_r<i+1>.h5``, sums their
counters, and once none is RUNNING writes the master that joins the parts in frame-number order
(``shared_series.write_master``), so the Controller proves acquired = Σ received = Σ written and
reports one file. A Recorder that is gone (killed, unreachable) ends the series for itself: the
others finish, the master maps what the parts hold, and the frames no part holds are missing,
named by range in the group's Status; the series ends ALARM.

Events: the device hands each part's State and counters to ``part_state_changed`` /
``part_counter_changed``; the group tells its listener the combined state and the sums.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from photonflow import states
from photonflow.errors import ConfigurationError, PhotonflowError
from photonflow.recording.series import frame_ranges
from photonflow.recording.shared_series import MasterSummary, part_file, write_master

log = logging.getLogger(__name__)

COUNTERS = ("frames_received", "frames_written", "missing_frames")
GONE = "GONE"  # a part that did not answer: its file is what it left


class PartPort(Protocol):
    """One Recorder of the group (the Controller's Recorder port, and ``share``)."""

    name: str

    def state(self) -> str: ...
    def status(self) -> str: ...
    def check_file(self, file: str) -> str: ...
    def arm(self, frames: int, series_id: int, endpoint: str, file: str | None, protocol: str,
            blissdata_scan: bool = True, share: bool = False) -> str: ...
    def stop(self) -> None: ...
    def abort(self) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def last_file(self) -> str: ...


class RecorderGroup:
    """N Recorders as one. ``on_change(state, status, counters)`` hears of every change of the
    combined view (from the parts' events, or a poll)."""

    def __init__(self, parts: Sequence[PartPort],
                 on_change: Callable[[str, str, dict[str, int]], None] | None = None):
        if len(parts) < 2:
            raise ConfigurationError("a group of Recorders has at least two; one Recorder needs no group")
        self.parts = list(parts)
        self.on_change = on_change
        self._lock = threading.RLock()
        self._states = [states.UNKNOWN] * len(parts)
        self._statuses = [""] * len(parts)
        self._counters = [dict.fromkeys(COUNTERS, 0) for _ in parts]
        self._master: Path | None = None  # the current or last series' master
        self._part_paths: list[Path] = []
        self._frames = 0
        self._summary: MasterSummary | None = None
        self._problem = ""  # why the master could not be written, or parts that were gone
        self._gone: set[int] = set()  # parts gone during the last series: a return rejoins their file

    # -- the Recorder port ------------------------------------------------------------------
    def state(self) -> str:
        for index, part in enumerate(self.parts):
            self._poll(index, part, with_counters=False)  # polled every watchdog tick: one call a part
        return self._combined()[0]

    def status(self) -> str:
        return self._combined()[1]

    def check_file(self, file: str) -> str:
        master = self.parts[0].check_file(file)
        for index, part in enumerate(self.parts):
            part.check_file(part_file(file, index))
        return master

    def arm(self, frames: int, series_id: int, endpoint: str, file: str | None, protocol: str,
            blissdata_scan: bool = True) -> str:
        """Arm every part on its own output of the Acquirer's stream; returns the master's path.
        A series without a file is ``series_<id>.h5`` (the parts' names come from it)."""
        outputs = [e for e in endpoint.split(",") if e]
        if len(outputs) != len(self.parts):
            raise ConfigurationError(
                f"the Acquirer's stream has {len(outputs)} output(s) for {len(self.parts)} Recorders: set the "
                f"Acquirer's StreamOutputs property to {len(self.parts)}", reason="StreamOutputsMismatch")
        name = file or f"series_{series_id:06d}.h5"
        master = Path(self.parts[0].check_file(name))
        if master.exists():
            raise ConfigurationError(f"{master} exists: photonflow never overwrites a file", reason="FileExists")
        armed: list[PartPort] = []
        paths = []
        try:
            for index, (part, output) in enumerate(zip(self.parts, outputs, strict=True)):
                # one blissdata scan would reference one part only: the parts publish none
                paths.append(Path(part.arm(frames, series_id, output, part_file(name, index), protocol,
                                           blissdata_scan=False, share=True)))
                armed.append(part)
        except Exception:
            for part in armed:
                _quietly(part.abort)
            raise
        with self._lock:
            self._master, self._part_paths, self._frames = master, paths, frames
            self._summary, self._problem, self._gone = None, "", set()
            self._states = [states.RUNNING] * len(self.parts)
            self._counters = [dict.fromkeys(COUNTERS, 0) for _ in self.parts]
        return str(master)

    def stop(self) -> None:
        self._each("stop")

    def abort(self) -> None:
        self._each("abort")

    def counters(self) -> dict[str, int]:
        for index, part in enumerate(self.parts):
            self._poll(index, part, with_counters=True)
        self._combined()  # writes the master once no part runs: its missing count is the series'
        return self._sums()

    def last_file(self) -> str:
        with self._lock:
            return str(self._master) if self._summary is not None else ""

    # -- the parts' events --------------------------------------------------------------------
    def part_state_changed(self, index: int, state: str, status: str | None = None) -> None:
        with self._lock:
            self._states[index] = state
            if status is not None:
                self._statuses[index] = status
            self._rejoin_if_back(index)
        self._tell()

    def part_status_changed(self, index: int, status: str) -> None:
        with self._lock:
            self._statuses[index] = status
        self._tell()

    def part_unreachable(self, index: int, reason: str) -> None:
        self.part_state_changed(index, GONE, reason)

    def part_counter_changed(self, index: int, name: str, value: int) -> None:
        with self._lock:
            self._counters[index][name] = value
        self._tell()

    # -- the combined view ----------------------------------------------------------------------
    def _poll(self, index: int, part: PartPort, with_counters: bool) -> None:
        """A part's state (and counters), asked: its events may have stopped with it. Its Status
        comes with its events."""
        try:
            state = part.state()
            counters = part.counters() if with_counters else None
        except Exception as error:  # noqa: BLE001 - the port's error (a Tango one): the part is gone
            with self._lock:
                if self._states[index] != GONE:
                    self._statuses[index] = f"{part.name} not answering: {error}"
                self._states[index] = GONE
            return
        with self._lock:
            self._states[index] = state
            if counters is not None:
                self._counters[index] = {name: int(counters[name]) for name in COUNTERS}
            self._rejoin_if_back(index)

    def _sums(self) -> dict[str, int]:
        with self._lock:
            sums = {name: sum(c[name] for c in self._counters) for name in COUNTERS}
            if self._summary is not None:  # the series is what its master presents
                sums["frames_written"] = self._summary.frames_written
                sums["missing_frames"] = int(self._summary.missing.size)
            return sums

    def _combined(self) -> tuple[str, str]:
        with self._lock:
            part_states = list(self._states)
            if states.RUNNING in part_states:  # each part's count: one that lags shows
                running = part_states.count(states.RUNNING)
                each = ", ".join(f"{part.name} {counts['frames_written']}" for part, counts
                                 in zip(self.parts, self._counters, strict=True))
                return states.RUNNING, (f"{running} of {len(self.parts)} Recorders recording; frames written: "
                                        f"{each}")
            if self._master is not None and self._summary is None and not self._problem:
                self._finish()
            if self._problem:
                return states.FAULT if self._summary is None else states.ALARM, self._problem
            if self._summary is None:
                idle = next((s for s in part_states if s in (states.FAULT, GONE, states.UNKNOWN)), states.ON)
                return (states.FAULT if idle != states.ON else states.ON), "; ".join(filter(None, self._statuses))
            missing = self._summary.missing
            text = (f"{self._summary.frames_written} frames of {len(self.parts)} Recorders in {self._master}")
            if missing.size:
                return states.ALARM, f"{text}; {missing.size} frame(s) missing: {frame_ranges(missing)}"
            return states.ON, text + "."

    def _finish(self) -> None:
        """No part runs any longer: join what they wrote (a gone part's file as it left it)."""
        assert self._master is not None
        self._gone = {i for i, s in enumerate(self._states) if s in (GONE, states.UNKNOWN)}
        try:
            self._summary = write_master(self._master, self._part_paths, self._frames)
        except (OSError, PhotonflowError) as error:
            self._problem = f"the master {self._master} could not be written: {error}"
            log.error("%s", self._problem)
            return
        self._describe_problem()

    def _rejoin_if_back(self, index: int) -> None:
        """A part gone during the last series answers again, its Recorder restarted: it repaired its
        file at start-up, so the master is written anew with it (a new file put in the old one's
        place in one rename: a reader never sees half a master)."""
        if index not in self._gone or self._states[index] in (GONE, states.UNKNOWN, states.RUNNING):
            return
        if self._summary is None or self._master is None:
            return
        self._gone.discard(index)
        rewritten = self._master.with_name(f".{self._master.name}.rejoin")
        try:
            rewritten.unlink(missing_ok=True)
            summary = write_master(rewritten, self._part_paths, self._frames)
            os.replace(rewritten, self._master)
        except (OSError, PhotonflowError) as error:
            log.warning("the master %s keeps its parts: %s rejoins not (%s)", self._master, self.parts[index].name,
                        error)
            return
        self._summary = MasterSummary(self._master, summary.frames, summary.owners, summary.missing,
                                      summary.unreadable)
        log.info("%s rejoined the master %s: %d frames, %d missing", self.parts[index].name, self._master,
                 summary.frames_written, summary.missing.size)
        self._describe_problem()

    def _describe_problem(self) -> None:
        """The Status of a series with parts gone or unreadable (empty once all rejoined)."""
        assert self._summary is not None
        gone = [self.parts[i].name for i in sorted(self._gone)]
        self._problem = ""
        if gone or self._summary.unreadable:
            missing = self._summary.missing
            unreadable = f" (unreadable until repaired: {'; '.join(self._summary.unreadable)})" \
                if self._summary.unreadable else ""
            self._problem = (f"{', '.join(gone) or 'a Recorder'} gone during the series{unreadable}; "
                             f"{self._summary.frames_written} frames in {self._master}, {missing.size} missing: "
                             f"{frame_ranges(missing) or 'none'}")

    def _tell(self) -> None:
        if self.on_change is None:
            return
        state, status = self._combined()
        self.on_change(state, status, self._sums())

    def _each(self, command: str) -> None:
        """A command to every part; raises the first error only when no part took it."""
        errors = []
        for part in self.parts:
            try:
                getattr(part, command)()
            except Exception as error:  # noqa: BLE001 - the port's error (a Tango one): the others go on
                errors.append(error)
        if errors and len(errors) == len(self.parts):
            raise errors[0]


def _quietly(action) -> None:
    try:
        action()
    except Exception as error:  # noqa: BLE001 - undoing an arm that failed elsewhere: the first error is the one to report
        log.warning("while undoing an arm: %s", error)
