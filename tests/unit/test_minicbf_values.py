"""Each number of a real camserver miniCBF header reaches photonflow under the contract's name
(header of a PILATUS3 written by the simulated camserver as camserver prints it)."""

from __future__ import annotations

from datetime import datetime

import fabio
import numpy as np
import pytest
from fabio.cbfimage import CbfImage

from photonflow.drivers.minicbf import UNDERLOAD_VALUE, parse_header
from photonflow.simulators.pilatus_camserver import CamserverState, minicbf_header


def test_every_header_number_arrives_under_its_contract_name(tmp_path):
    state = CamserverState("pilatus3_100k", "24-0111", tmp_path)
    state.mx.update({"Chi": "-10.00000", "Phi": "20.00000", "Phi_increment": "0.50000", "Kappa": "30.00000",
                     "Detector_2theta": "5.00000", "Flux": "1000000000000.00000", "Filter_transmission": "0.25000",
                     "Polarization": "0.99000", "Start_angle": "9.5", "Angle_increment": "0.1"})
    text = minicbf_header(state, 0, datetime(2026, 12, 5, 4, 0))

    CbfImage(data=np.zeros((195, 487), np.int32), header={
        "_array_data.header_convention": "PILATUS_1.2", "_array_data.header_contents": text}).write(str(tmp_path / "a.cbf"))
    header = parse_header(fabio.open(str(tmp_path / "a.cbf")).pilatus_headers)
    assert header["serial_number"] == "24-0111"
    assert header["saturation_value"] == 1048574 and header["underload_value"] == UNDERLOAD_VALUE == 0
    assert header["threshold_energy"] == state.threshold and header["dead_time"] == pytest.approx(124e-9)
    assert (header["omega_start"], header["omega_increment"]) == (9.5, 0.1)
    assert (header["chi_start"], header["phi_start"], header["phi_increment"]) == (-10.0, 20.0, 0.5)
    assert (header["kappa_start"], header["two_theta_start"]) == (30.0, 5.0)
    assert header["flux"] == 1e12 and header["attenuator_transmission"] == 0.25 and header["polarization"] == 0.99
