"""The JSON commands' published schemas (docs/commands/) are those of the requests the devices parse,
and the schema and the parser agree on what they take and what they refuse."""

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator  # dsconfig's dependency

from photonflow.acquisition.acquirer import parse_settings
from photonflow.commands import JSON_COMMANDS, schema_files
from photonflow.errors import ConfigurationError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "commands"

# What each command must refuse, whoever reads it: the parser or a client validating with the schema.
REFUSED = {
    "Controller.Configure": [
        {"frames": 0, "exposure": 0.001, "period": 0.002},
        {"frames": 2**31, "exposure": 0.001, "period": 0.002},
        {"frames": 5, "exposure": 0, "period": 0.002},
        {"frames": "5", "exposure": 0.001, "period": 0.002},
        {"frame_count": 5, "exposure": 0.001, "period": 0.002},
        {"exposure": 0.001, "period": 0.002},
        {"frames": 5, "exposure": 0.001, "period": 0.002, "scan": {"axis": "omega", "start": 0.0}},
        {"frames": 5, "exposure": 0.001, "period": 0.002, "scan": {"axis": "omega", "start": 0.0, "step": "0.1"}},
        {"frames": 5, "exposure": 0.001, "period": 0.002, "scan": [0.0, 0.1]},
    ],
    "Recorder.Arm": [
        {"frames": 0, "series_id": 1, "endpoint": "tcp://127.0.0.1:5555"},
        {"frames": 3, "series_id": -1, "endpoint": "tcp://127.0.0.1:5555"},
        {"frames": 3, "series_id": 1, "endpoint": "garbage"},
        {"frames": 3, "series_id": 1, "endpoint": []},
        {"frames": 3, "series_id": 1, "endpoint": "tcp://127.0.0.1:5555", "protocol": "eiger"},
        {"frame_count": 3, "series_id": 1, "endpoint": "tcp://127.0.0.1:5555"},
    ],
    "Acquirer.CheckSettings": [
        {"frame_count": 3},
        {"frames": 2.5},
        {"exposure": "fast"},
        {"rotation": {"axis": "omega", "start": 0.0}},
    ],
    "DataManager.SetExperiment": [
        {"proposal": "mx1", "session": "s1"},
        {"proposal": 1, "session": "s1", "sample": "a"},
        {"proposal": "mx1", "session": "s1", "sample": "a", "beamline": "id00"},
    ],
    "SimulatedPositionCompare.Arm": [
        {"start": 0.0, "step": 0, "count": 10, "width": 0.001},
        {"start": 0.0, "step": 0.1, "count": 0, "width": 0.001},
        {"start": 0.0, "step": 0.1, "count": 10, "width": 0},
        {"start": 0.0, "step": 0.1, "count": 10},
        {"start": 0.0, "step": 0.1, "count": 10, "width": 0.001, "gate": True},
    ],
}


def test_the_published_schemas_are_the_requests_own():
    published = {path.name: path.read_text() for path in DOCS.glob("*.schema.json")}
    assert published == schema_files(), "docs/commands is stale: run `python -m photonflow.commands docs/commands`"


@pytest.mark.parametrize("command", JSON_COMMANDS)
def test_each_schema_is_valid_and_takes_its_example_as_the_parser_does(command):
    request, schema = JSON_COMMANDS[command], JSON_COMMANDS[command].json_schema()
    Draft202012Validator.check_schema(schema)
    assert Draft202012Validator(schema).is_valid(request.example)
    request.parse(json.dumps(request.example))


@pytest.mark.parametrize("command, given", [(c, g) for c, refused in REFUSED.items() for g in refused])
def test_the_schema_and_the_parser_refuse_the_same_arguments(command, given):
    request = JSON_COMMANDS[command]
    assert not Draft202012Validator(request.json_schema()).is_valid(given)
    with pytest.raises(ConfigurationError):
        request.parse(json.dumps(given))


def test_frames_is_the_one_json_word_for_the_frame_count():
    for command, request in JSON_COMMANDS.items():
        keys = request.json_schema()["properties"]
        assert "frame_count" not in keys, command
    assert parse_settings('{"frames": 5, "exposure": 0.01}') == {"frame_count": 5, "exposure": 0.01}


@pytest.mark.parametrize(
    "text, reason, complaint",
    [
        ('{"frames": 5, "exposure": NaN, "period": 0.002}', "InvalidConfiguration",
         "'exposure' must be a finite number of seconds, got nan"),
        ('{"frames": 5, "exposure": 0.001, "period": Infinity}', "InvalidConfiguration",
         "'period' must be a finite number of seconds, got inf"),
        ('{"frames": 5, "exposure": 0.001}', "InvalidConfiguration",
         "missing key 'period': give from one frame's start to the next"),
        ('{"frames": 5, "exposure": 0.001, "period": 0.002, "gain": 2}', "UnknownConfigurationKey",
         "unknown key(s) gain; allowed keys are frames, exposure, period, trigger_mode, file"),
        ('{"frames": true, "exposure": 0.001, "period": 0.002}', "InvalidConfiguration",
         "'frames' must be int, got True"),
    ],
)
def test_every_refusal_names_the_key_and_what_to_give(text, reason, complaint):
    with pytest.raises(ConfigurationError) as caught:
        JSON_COMMANDS["Controller.Configure"].parse(text)
    assert caught.value.reason == reason
    assert complaint in str(caught.value)


def test_a_datamanager_refusal_keeps_its_reason():
    with pytest.raises(ConfigurationError) as caught:
        JSON_COMMANDS["DataManager.SetExperiment"].parse("not json")
    assert caught.value.reason == "InvalidArgument"
    assert 'SetExperiment needs a JSON object such as {"proposal": "mx1234"' in str(caught.value)
