"""The Controller panel's form check and the panel commands `make up` prints: no Qt event loop,
no Tango (the panel module imports Qt, so these run offscreen)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from tests.helpers.paths import DEMO_CONFIG


@pytest.mark.parametrize(("values", "expected"), [
    ({"frames": "5", "exposure": "0.1", "period": "0.2", "file": ""}, {"frames": 5, "exposure": 0.1, "period": 0.2}),
    ({"frames": " 7 ", "exposure": "1e-3", "period": "0.001", "file": " s1/scan_001.nxs "},
     {"frames": 7, "exposure": 0.001, "period": 0.001, "file": "s1/scan_001.nxs"}),
])
def test_a_valid_form_gives_the_configure_request(values, expected):
    from photonflow.clients.panel import configuration_from_form

    assert configuration_from_form(values) == expected


@pytest.mark.parametrize(("values", "field", "message"), [
    ({"frames": "x"}, "frames", "Frames must be a whole number, got 'x'."),
    ({"frames": "2.5"}, "frames", "Frames must be a whole number, got '2.5'."),
    ({"frames": "0"}, "frames", "Frames must be at least 1, got 0."),
    ({"exposure": ""}, "exposure", "Exposure must be a number of seconds, got ''."),
    ({"exposure": "nan"}, "exposure", "Exposure must be a positive number of seconds, got nan."),
    ({"period": "-1"}, "period", "Period must be a positive number of seconds, got -1."),
    ({"exposure": "1", "period": "0.5"}, "period",
     "Period (0.5 s) is shorter than the exposure (1 s): the period must be at least the exposure."),
    ({"file": "a.txt"}, "file", "File 'a.txt' must end in .h5, .hdf5, .nxs."),
    ({"file": "a/../../b.h5"}, "file", "File 'a/../../b.h5': give a file name under the data root, without '..'."),
])
def test_a_bad_form_names_the_field_to_correct(values, field, message):
    from photonflow.clients.panel import FormError, configuration_from_form

    with pytest.raises(FormError) as raised:
        configuration_from_form({"frames": "3", "exposure": "0.1", "period": "0.1", "file": "", **values})
    assert raised.value.field == field
    assert str(raised.value) == message


def test_make_up_says_how_to_open_both_panels(monkeypatch, tmp_path):
    from photonflow.clients.cli import _panel_commands
    from photonflow.deployment import load_deployment_file

    monkeypatch.setenv("PHOTONFLOW_DATA_ROOT", str(tmp_path))
    deployment = load_deployment_file(DEMO_CONFIG)
    lines = _panel_commands(deployment).splitlines()
    # each runnable as printed: the tools are in the suite's environment, not on PATH
    bin_directory = str(Path(sys.executable).parent)
    assert lines[0].split()[:2] == [f"{bin_directory}/photonflow-panel", "demo/photonflow/controller"]
    assert lines[1].split()[:3] == [f"{bin_directory}/photonflow-beamline", "--prefix", "demo/beamline"]
