"""The Standardizer's inputs for tests: the beamline as a table of values, and one run of the
Standardizer over a recorded file with a shipped mapping."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from photonflow.standardizing.mapping import load_mapping
from photonflow.standardizing.standardizer import Standardizer
from tests.helpers.paths import STANDARD_MAPPINGS
from tests.helpers.waiting import wait_until

CONFIG = STANDARD_MAPPINGS
PREFIX = {"PREFIX": "test/beamline", "DATAMANAGER": "test/photonflow/datamanager"}


class BeamlineReader:
    """The beamline's attributes as a table; a device listed in ``absent`` fails like a dead one."""

    def __init__(self, values: dict[str, object], absent: tuple[str, ...] = ()):
        self.values = values
        self.absent = absent
        self.reads = 0

    def read(self, device: str, attribute: str) -> tuple[object, float]:
        self.reads += 1
        if device in self.absent:
            raise ConnectionError(f"{device} is not answering")
        return self.values[f"{device.rsplit('/', 1)[-1]}/{attribute}"], time.time()


def beamline_values(omega: float = 30.0) -> dict[str, object]:
    return {
        "ring/Current": 198.5, "ring/Energy": 3.0, "ring/Mode": "USER", "mono/Energy": 12.398419843320026,
        "mono/Wavelength": 1.0, "attenuator/Transmission": 0.5, "slits/HorizontalGap": 0.2,
        "slits/VerticalGap": 0.1, "shutter/State": "OPEN", "omega/Position": omega, "samx/Position": 0.5,
        "samy/Position": -0.25, "samz/Position": 1.0, "detz/Position": 150.0,
        "datamanager/CurrentRole": "data", "datamanager/CurrentNode": "eff/energy[1]/data",
        "datamanager/Proposal": "mx1234", "datamanager/Sample": "ceo2",
        # omega's position-compare, never armed: nothing captured
        "omega_pcomp/CapturedPositions": np.zeros(0), "omega_pcomp/CapturedTimes": np.zeros(0),
        "omega_pcomp/Start": 0.0, "omega_pcomp/Step": 0.0, "omega_pcomp/Count": 0,
    }


def standardize(recorded_file: Path, reader: BeamlineReader, mapping_name: str = "mx.yaml",
                polls_during: int = 0) -> Path:
    """Series 7 standardized over ``recorded_file``; the series lasts until the reader was polled
    ``polls_during`` times after the pre-exposure snapshot."""
    mapping = load_mapping(CONFIG / mapping_name, PREFIX)
    standardizer = Standardizer(mapping, reader, recorded_file.parents[1])
    try:
        standardizer.series_started(7)
        assert standardizer.wait_idle(30)  # the pre-exposure snapshot is taken, the polling started
        before = reader.reads
        wait_until(lambda: reader.reads >= before + polls_during, 30, what=f"{polls_during} polls during the series")
        standardizer.series_ended(7, str(recorded_file))
        assert standardizer.wait_idle(30)
        return Path(standardizer.counters.last_file), standardizer
    finally:
        standardizer.close()


def assert_nxmx_rotation_scan(path, images: int, start: float, step: float, axis: str = "omega") -> None:
    """Read the NXmx back with Diamond's ``nxmx`` reader (what dxtbx and DIALS build on): ``axis`` is
    the one scan axis, ``images`` frames from ``start``, ``step`` per frame, each frame's oscillation
    (end - angle, as dxtbx takes it) the step."""
    import h5py
    import nxmx

    with h5py.File(path) as f:
        sample = nxmx.NXmx(f).entries[0].samples[0]
        chain = nxmx.get_dependency_chain(sample.depends_on)
        rotations = nxmx.get_rotation_axes(chain)
        assert list(rotations.names[rotations.is_scan_axis]) == [axis]
        scanned = next(found for found in chain if found.path.endswith(f"/{axis}"))
        angles = scanned[()].to("degree").magnitude
        assert len(angles) == images
        assert abs(angles[0] - start) <= 0.05 * abs(step), angles[:3]
        assert abs(scanned.increment_set.to("degree").magnitude - step) <= 1e-9
        np.testing.assert_allclose((scanned.end[()] - scanned[()]).to("degree").magnitude, step)
        np.testing.assert_allclose(np.diff(angles), step, atol=0.05 * abs(step))
