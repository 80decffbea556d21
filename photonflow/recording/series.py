"""One series as the Recorder keeps account of it: what was armed, which frames came, which
messages do not belong, and what is missing at the end. Bookkeeping only: the files are the
``SeriesFile``'s, the threads and the state the Recorder's."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from photonflow import states
from photonflow.recording.request import MAX_SERIES_ID, RecordingRequest
from photonflow.recording.series_file import SeriesFile
from photonflow.stream.stins import UNKNOWN, DataMessage, SeriesEnd, SeriesStart

# A DECTRIS DCU numbers its series itself when armed: the Recorder, armed before it, follows
# the id of the series start it receives rather than the id it was armed with.
DETECTOR_NUMBERED_PROTOCOLS = frozenset({"dectris-v1", "dectris-v2"})


@dataclass
class Series:
    request: RecordingRequest
    file: SeriesFile
    start: SeriesStart | None = None
    ends: list[SeriesEnd] = field(default_factory=list)
    # One byte per frame number (not a set: ~70 bytes each), so memory stays flat in long series;
    # frame numbers are below the armed count (checked before), which bounds it.
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(1024, dtype=bool))
    accepted_count: int = 0
    rejection: str = ""  # why the last message of this series was rejected
    last_message: float = 0.0  # clock time of the last message taken off the queue

    def __post_init__(self):
        self.numbered_by_detector = self.request.protocol in DETECTOR_NUMBERED_PROTOCOLS
        self._fitting: tuple = (None,)  # (start, series ids, shape, dtype, encoding, frame limit, names)

    def fits(self, message: DataMessage) -> bool:
        """True when none of the checks of ``id_refusal``, ``frame_disagreement`` and
        ``numbering_refusal`` has anything to say about this frame: the usual case, decided in
        one expression per frame; False sends the frame through them, which say why."""
        start = self.start
        if start is None:
            return False
        if self._fitting[0] is not start:
            self._fitting = self._fitting_for(start)
        _, ids, shape, dtype, encoding, limit, names = self._fitting
        metadata = message.metadata
        return (
            message.series_id in ids and message.frame_number < limit and message.shape == shape
            and message.dtype == dtype and message.encoding == encoding
            and (not metadata or metadata.keys() <= names)
        )

    def _fitting_for(self, start: SeriesStart) -> tuple:
        expected = start.series_id if self.numbered_by_detector else self.request.series_id
        limit = self.request.frame_count
        if start.frame_count > 0:
            limit = min(limit, start.frame_count)
        names = frozenset(start.frame_metadata)
        return start, {expected, UNKNOWN}, start.shape, start.dtype, start.encoding, limit, names

    def accept(self, frame_number: int) -> bool:
        """Mark a frame as taken; False if it already was (a duplicate)."""
        if frame_number >= self.accepted.size:
            grown = np.zeros(min(max(frame_number + 1, 2 * self.accepted.size), self.request.frame_count), dtype=bool)
            grown[: self.accepted.size] = self.accepted
            self.accepted = grown
        if self.accepted[frame_number]:
            return False
        self.accepted[frame_number] = True
        self.accepted_count += 1
        return True

    def missing_below(self, count: int) -> np.ndarray:
        """Frame numbers under ``count`` that never came (at most the armed count: bounded)."""
        count = min(count, self.request.frame_count)
        taken = np.zeros(count, dtype=bool)
        known = min(count, self.accepted.size)
        taken[:known] = self.accepted[:known]
        return np.flatnonzero(~taken)

    def id_refusal(self, message) -> str:
        """Why a message is not of this series, or ''."""
        if not UNKNOWN <= message.series_id <= MAX_SERIES_ID:
            return f"series id {message.series_id} is beyond {MAX_SERIES_ID}"
        expected = self.request.series_id
        if self.numbered_by_detector:
            if self.start is None:
                return ""  # whatever id the detector gave the series it now starts
            expected = self.start.series_id
        if message.series_id not in (expected, UNKNOWN):  # some protocols carry no series id
            return f"message of series {message.series_id}, but armed for series {expected}"
        return ""

    def numbering_refusal(self, message: DataMessage, start: SeriesStart) -> str:
        """Why a frame of this series cannot be stored (its number or its metadata), or ''.
        ``start`` is the series' start, which the caller has already checked came."""
        if message.frame_number >= self.request.frame_count:
            return f"frame number {message.frame_number} is beyond the {self.request.frame_count} frames armed"
        if 0 < start.frame_count <= message.frame_number:
            return (
                f"frame number {message.frame_number} is beyond the {start.frame_count} frames "
                "series_start announced"
            )
        if message.metadata and not message.metadata.keys() <= set(start.frame_metadata):
            unannounced = ", ".join(sorted(message.metadata.keys() - set(start.frame_metadata)))
            return (
                f"frame {message.frame_number} carries metadata {unannounced} that series_start "
                "did not announce in frame_metadata"
            )
        return ""

    def final_accounting(self, ends: list[SeriesEnd] | None, highest_written: int | None) -> tuple[np.ndarray, dict]:
        """The frame numbers that never came and the counts the file is closed with.

        ``ends`` are the inputs' series_end messages (None: ended by the operator or cut off);
        ``highest_written`` is None when no file was ever opened.
        """
        frames_sent = frames_acquired = -1
        armed = self.request.frame_count
        if self.request.share:
            missing = np.zeros(0, dtype=np.int64)  # absent here: another Recorder's (the Controller judges)
            if ends:
                frames_sent = _total(end.frames_sent for end in ends)
                frames_acquired = _total(end.frames_acquired for end in ends)
        elif highest_written is None:
            missing = self.missing_below(armed)  # no file: every armed frame is lost
        elif ends:
            frames_sent = _total(end.frames_sent for end in ends)
            frames_acquired = _total(end.frames_acquired for end in ends)
            announced = self.start.frame_count if self.start is not None else 0
            # What was armed is what was asked for; a sender's own count only ever lowers it.
            expected = armed if frames_sent == UNKNOWN else min(frames_sent, armed)
            if 0 < announced < expected:
                expected = announced
            missing = self.missing_below(expected)
        else:
            # Ended by the operator: frames below the highest written one never came.
            missing = self.missing_below(highest_written + 1)
        counts = {
            "frames_requested": armed,
            "frames_acquired": frames_acquired,
            "frames_sent": frames_sent,
            "frames_announced": self.start.frame_count if self.start and self.start.frame_count else -1,
            "missing_frames": len(missing),
        }
        return missing, counts

    def end_report(self, end_reason: str, counters, missing: np.ndarray) -> tuple[str, str]:
        """The Recorder's state and status once the series is closed: what was written where,
        what was dropped or rejected, and which frames are missing (ALARM) if any."""
        if self.file.writer is not None:
            written_to = str(self.file.path)
        elif self.rejection:
            written_to = f"no file: the series was never started, last rejection: {self.rejection}"
        else:
            written_to = "no file: series_start never came"
        summary = (
            f"Series {self.request.series_id} {end_reason}: {counters.frames_written} frames written to {written_to}"
        )
        if counters.frames_lost:
            summary += f"; {counters.frames_lost} received frame(s) dropped unwritten"
        if counters.messages_rejected and self.file.writer is not None:
            summary += f"; {counters.messages_rejected} message(s) rejected, last: {self.rejection}"
        if missing.size:
            return states.ALARM, f"{summary}; {missing.size} frame(s) missing: {frame_ranges(missing)}"
        return states.ON, summary + "."


def frame_disagreement(message, reference: SeriesStart) -> str:
    """How a frame (or another input's series_start) differs from the series' frames, or ''."""
    for field_name in ("shape", "dtype", "encoding"):
        theirs, ours = getattr(message, field_name), getattr(reference, field_name)
        if None not in (theirs, ours) and theirs != ours:
            return f"{field_name} {theirs}, but the series has {field_name} {ours}"
    return ""


def described_by(start: SeriesStart, first: DataMessage) -> SeriesStart:
    """The series start completed by its first frame, for protocols that describe frames
    only in the frames."""
    return replace(
        start,
        shape=start.shape or first.shape,
        dtype=start.dtype or first.dtype,
        encoding=start.encoding or first.encoding,
    )


def frame_ranges(numbers: np.ndarray, shown: int = 10) -> str:
    """Sorted frame numbers as ranges ('3-7, 12'), the first ``shown`` of them, for a status line."""
    if numbers.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(numbers) != 1)
    firsts = np.concatenate(([numbers[0]], numbers[breaks + 1]))
    lasts = np.concatenate((numbers[breaks], [numbers[-1]]))
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in zip(firsts[:shown], lasts[:shown], strict=True))
    return text + (f" and {firsts.size - shown} more range(s)" if firsts.size > shown else "")


def _total(counts) -> int:
    """Sum of per-input counts; UNKNOWN if any input did not say."""
    counts = list(counts)
    return UNKNOWN if any(c == UNKNOWN for c in counts) else sum(counts)
