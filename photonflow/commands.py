"""The JSON commands of photonflow's devices and the request each takes, whose JSON Schemas
docs/commands/ publishes. ``python -m photonflow.commands [folder]`` writes them (default:
docs/commands); tests/unit/test_command_schemas.py fails while they are stale."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from photonflow.acquisition.acquirer import SettingsCheck
from photonflow.control.controller import AcquisitionRequest
from photonflow.datamanager.policy import Experiment
from photonflow.position_compare import PositionCompareRequest
from photonflow.recording.request import RecordingRequest
from photonflow.requests import Request

JSON_COMMANDS: dict[str, type[Request]] = {
    "Controller.Configure": AcquisitionRequest,
    "Recorder.Arm": RecordingRequest,
    "Acquirer.CheckSettings": SettingsCheck,
    "DataManager.SetExperiment": Experiment,
    "SimulatedPositionCompare.Arm": PositionCompareRequest,
}


def schema_files() -> dict[str, str]:
    """File name -> text of each command's schema, as docs/commands/ holds them."""
    return {
        f"{command}.schema.json": json.dumps(request.json_schema(), indent=2, ensure_ascii=False) + "\n"
        for command, request in JSON_COMMANDS.items()
    }


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "docs/commands")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in schema_files().items():
        (folder / name).write_text(text)
        print(folder / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
