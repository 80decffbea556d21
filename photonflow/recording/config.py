"""How a Recorder records: where the files go, how they are named and split, how much memory
frames may take on their way to the disk. One frozen object, checked once, instead of a
constructor of eighteen arguments; the Recorder device builds it from its properties."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from photonflow.errors import ConfigurationError
from photonflow.recording.compression import COMPRESSIONS
from photonflow.recording.paths import DEFAULT_FILE_TEMPLATE, validate_template

DEFAULT_QUEUE_FRAMES = 256
DEFAULT_QUEUE_MEGABYTES = 512  # what frames waiting for the disk may take, whatever their size
# What a series may claim. The Recorder keeps 17 bytes of bookkeeping per armed frame (arrival
# flag, receive time, detector timestamp), so the largest series bounds its memory whatever a
# sender announces; frames numbered beyond the armed count are rejected, not stored.
DEFAULT_MAX_FRAMES = 10_000_000
MAX_DATA_FILES = 1_000  # data files of one split series: each is a mapping of the master's virtual dataset (~16 kB)
# Seconds to wait for series_end once every armed frame is in (a stream cut off before its end,
# as real captures are): then the series is closed with end_reason completed_without_end.
DEFAULT_END_TIMEOUT = 10.0


@dataclass(frozen=True)
class RecorderConfig:
    """A Recorder's settings; ``replace(config, frames_per_file=...)`` checks the new value too."""

    data_root: str | Path
    file_template: str = DEFAULT_FILE_TEMPLATE  # the file name when Arm gives none
    frames_per_file: int = 0  # split a series into data files under a master file (0: one file)
    compression: str = "none"  # applied to frames that arrive raw
    compression_workers: int = 0  # 0: one per core
    durable: bool = True  # fsync each file at close: "written" means on disk
    queue_frames: int = DEFAULT_QUEUE_FRAMES
    queue_megabytes: int = DEFAULT_QUEUE_MEGABYTES
    max_frames: int = DEFAULT_MAX_FRAMES  # the largest series Arm takes
    end_timeout: float = DEFAULT_END_TIMEOUT
    counter_interval: float = 0.1  # seconds between counter notifications
    journal_name: str = "recorder"  # names this Recorder's crash journal in the data root

    def __post_init__(self):
        if self.queue_frames < 1:
            raise ConfigurationError(f"the queue must hold at least one frame, got {self.queue_frames}")
        if self.queue_megabytes < 1:
            raise ConfigurationError(f"the queue must hold at least 1 MB, got {self.queue_megabytes} MB")
        validate_template(self.file_template)
        if not _integer_at_least(self.frames_per_file, 0):
            raise ConfigurationError(
                f"frames per file must be an integer >= 0 (0: one file), got {self.frames_per_file!r}"
            )
        if not _integer_at_least(self.max_frames, 1):
            raise ConfigurationError(f"the largest series must be at least 1 frame, got {self.max_frames!r}")
        if not self.end_timeout > 0:
            raise ConfigurationError(
                f"the series-end timeout must be a positive number of seconds, got {self.end_timeout}"
            )
        if self.compression not in COMPRESSIONS:
            raise ConfigurationError(
                f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}"
            )

    def check_series_size(self, frame_count: int) -> None:
        """Refuse at Arm a series this Recorder would not hold: its memory or its data files."""
        if not _integer_at_least(frame_count, 1):
            raise ConfigurationError(f"frame count must be an integer >= 1, got {frame_count!r}")
        if frame_count > self.max_frames:
            raise ConfigurationError(
                f"{frame_count} frames is more than this Recorder takes in one series: at most "
                f"{self.max_frames} (property MaxFramesPerSeries); split the acquisition into several series"
            )
        data_files = -(-frame_count // self.frames_per_file) if self.frames_per_file else 1
        if data_files > MAX_DATA_FILES:
            raise ConfigurationError(
                f"{frame_count} frames at FramesPerFile {self.frames_per_file} would make "
                f"{data_files} data files; at most {MAX_DATA_FILES}: "
                f"set FramesPerFile to at least {-(-frame_count // MAX_DATA_FILES)}"
            )


def _integer_at_least(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least
