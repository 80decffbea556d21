"""Where a dataset's files go: the data policy facilities use, ESRF's as the model.

``<root>/<proposal>/<beamline>/<session>/RAW_DATA/<sample>/<sample>_<dataset>/`` for what the
detector writes, and the same below ``PROCESSED_DATA`` for what is computed from it, so an
analysis tool finds a dataset's data, and its results, from four names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from photonflow.errors import FilePathError
from photonflow.requests import Request, value

NAME = re.compile(r"[A-Za-z0-9._-]+")  # whole names only (re.fullmatch): "$" would let a final newline in
# three names join into one file name (the structure's progress, a dataset's "<sample>_NNNN_<name>.h5"):
# 64 each keeps any join under the 255 bytes file systems allow
MAX_NAME_LENGTH = 64
RAW = "RAW_DATA"
PROCESSED = "PROCESSED_DATA"


def check_name(value: object, what: str) -> str:
    """``value`` if it is a name that stays one directory level (letters, digits, - _ .), else FilePathError."""
    if not isinstance(value, str) or not value:
        raise FilePathError(f"the {what} name is empty; give one of letters, digits, '-', '_' or '.'")
    if value in (".", "..") or "/" in value or "\\" in value:
        raise FilePathError(f"the {what} name {value!r} would leave its directory; give a plain name of "
                            "letters, digits, '-', '_' or '.'", reason="FileOutsideDataRoot")
    if len(value) > MAX_NAME_LENGTH:
        raise FilePathError(f"the {what} name {value[:20]!r}... has {len(value)} characters; give at most "
                            f"{MAX_NAME_LENGTH}")
    if not NAME.fullmatch(value):
        raise FilePathError(f"the {what} name {value!r} has characters other than letters, digits, '-', '_' "
                            "and '.'; rename it")
    return value


@dataclass(frozen=True)
class Experiment(Request):
    """SetExperiment: the proposal, session and sample the data belong to from now on; each a
    plain name of letters, digits, '-', '_' or '.' (it names a directory of the data policy)."""

    command = "SetExperiment"
    example = {"proposal": "mx1234", "session": "20261127", "sample": "lysozyme"}
    error_reason = "InvalidArgument"

    proposal: str = value(doc="the proposal, e.g. mx1234")
    session: str = value(doc="the session (the beamtime), e.g. 20261127")
    sample: str = value(doc="the sample measured, e.g. lysozyme")


class DataPolicy:
    """ESRF's layout of a beamline's data under one root."""

    def __init__(self, root: str | Path, beamline: str):
        self.root = Path(os.path.abspath(root))
        self.beamline = check_name(beamline, "beamline")

    def session_directory(self, proposal: str, session: str) -> Path:
        """``<root>/<proposal>/<beamline>/<session>``."""
        return self._under_root(self.root / check_name(proposal, "proposal") / self.beamline
                                / check_name(session, "session"))

    def raw_dataset(self, proposal: str, session: str, sample: str, dataset: str) -> Path:
        """``<root>/<proposal>/<beamline>/<session>/RAW_DATA/<sample>/<sample>_<dataset>``."""
        return self._dataset(RAW, proposal, session, sample, dataset)

    def next_dataset(self, proposal: str, session: str, sample: str, name: str) -> str:
        """``NNNN_<name>``, numbered after the highest dataset already in the sample's RAW_DATA, so a
        structure taken again for the same sample (a second tomography) never meets the files of
        the first: photonflow never overwrites data."""
        folder = self.session_directory(proposal, session) / RAW / check_name(sample, "sample")
        numbered = re.compile(rf"^{re.escape(sample)}_(\d+)_")
        taken = [int(match.group(1)) for path in (folder.iterdir() if folder.is_dir() else ())
                 if (match := numbered.match(path.name))]
        return f"{max(taken, default=0) + 1:04d}_{check_name(name, 'dataset')}"

    def processed_dataset(self, proposal: str, session: str, sample: str, dataset: str) -> Path:
        """``<root>/<proposal>/<beamline>/<session>/PROCESSED_DATA/<sample>/<sample>_<dataset>``."""
        return self._dataset(PROCESSED, proposal, session, sample, dataset)

    def _dataset(self, kind: str, proposal: str, session: str, sample: str, dataset: str) -> Path:
        sample = check_name(sample, "sample")
        dataset = check_name(dataset, "dataset")
        return self._under_root(self.session_directory(proposal, session) / kind / sample / f"{sample}_{dataset}")

    def _under_root(self, path: Path) -> Path:
        """``path``, after checking that it (with any link already on disk followed) is under the root."""
        root = self.root.resolve()
        real = path.resolve()
        if root not in real.parents:
            raise FilePathError(f"{path} is outside the data root {self.root}; a link under the root points "
                                "elsewhere: remove it", reason="FileOutsideDataRoot")
        return path
