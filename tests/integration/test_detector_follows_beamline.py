"""A PILATUS3 deployment (config/pilatus3.yaml, simulated camserver) follows its beamline: at
Prepare, camserver is told the monochromator's wavelength, the detector motor's distance and
the beam centre, and every CBF header says so."""

from __future__ import annotations

import fabio
import pytest

from tests.helpers.devices import acquire, proxy, running_deployment, wait_for_state
from tests.helpers.paths import REPOSITORY


@pytest.fixture(scope="module")
def pilatus3(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("pilatus3")
    text = (REPOSITORY / "config" / "pilatus3.yaml").read_text()
    with running_deployment(text, var_dir, {"PHOTONFLOW_DATA_ROOT": str(var_dir / "data")}) as suite:
        yield suite, var_dir / "data"


def test_the_cbf_header_follows_the_monochromator_and_the_detector_distance(pilatus3):
    suite, data_root = pilatus3
    mono, detz = proxy(suite.device_url("pilatus3/beamline/mono")), proxy(suite.device_url("pilatus3/beamline/detz"))
    controller = proxy(suite.device_url("pilatus3/photonflow/controller"))
    mono.Energy = 10.0
    detz.Position = 200.0
    wait_for_state(mono, "ON")
    wait_for_state(detz, "ON")
    state = acquire(controller, frames=3, exposure=0.001, period=0.005, file="follows/series.h5")
    assert state == "ON", controller.status()
    (cbf, *_) = sorted((data_root / "camserver").rglob("*.cbf"))
    header = fabio.open(str(cbf)).pilatus_headers
    assert header["Wavelength"] == pytest.approx(12.398419843320026 / 10.0, abs=1e-5)
    assert header["Detector_distance"] == pytest.approx(0.2)
    assert header["Beam_xy"] == pytest.approx((490.0, 520.0))
