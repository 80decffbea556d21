"""An experiment's data structure, with the meaning of every acquisition: the ESRF Data Manager's
*data structure description* (a sequence of paramSets, acquisitions and scans) in YAML.

An analysis tool that knows an acquisition is a dark, a white (flat) or the data of energy point 3
can treat it without asking anyone. The description is experiment-dependent and lives in a file
(``config/structures/*.yaml``)::

    name: eff                       # the structure's name, first part of every node path
    title: Full-field XANES         # optional, for people
    roles: [i0]                     # optional: roles beyond ROLES
    beamline:                       # which parameter moves what before an acquisition
      energy: mono/Energy           #   the parameter's value is written there
      shutter: {setting: shutter, values: [open, closed]}          # only these values
      sample: {setting: samx, values: {in: 0.0, out: 5.0}}         # value -> position
    sequence:
      - paramSet: {name: defaults, frames: 10, exposure: 0.002, period: 0.005, shutter: open}
      - acquisition: {name: dark, role: dark, shutter: closed}
      - scan:
          name: energy
          parameter: energy
          range: {start: 7.0, stop: 7.2, step: 0.05}    # or values: [7.0, 7.1], or {start, stop, points}
          paramSet: {name: scan parameters, frames: 5}  # optional, applies to every repetition
          sequence:
            - acquisition: {name: data, role: data}

A paramSet applies to what follows it in its sequence (and in the sequences nested there); a
scan's value applies to its repeated sub-sequence; an acquisition's own keys win. Every mistake is
refused at load with file, line and key, before anything moves.

Beamline settings are named as the sequencer applies them: ``device/Attribute`` of the beamline's
simulated or real devices (``mono/Energy``), a bare motor name for its position (``samx``), and
``shutter`` with ``open``/``closed``.

An acquisition with ``rotation: continuous`` turns the axis its ``start_angle`` setting names, from
``start_angle`` to ``end_angle`` over its frames (a tomography's projections): the node's
``rotation`` says so to the sequencer, which starts the turn at the first frame.

A client may run a shipped structure with its own values (``photonflow tomo --projections 30``)
without editing the file: *overrides* (JSON) are checked as strictly as the file::

    {"parameters": {"exposure": 0.01, "end_angle": 90},   # win over every paramSet and acquisition
     "frames": {"data": 30, "dark": 4},                   # the frames of every acquisition of a role
     "beamline": {"sample": {"out": 6.0}}}                # one value of a beamline setting's table
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from photonflow.datamanager.policy import check_name
from photonflow.errors import ConfigurationError, StateError
from photonflow.yaml_source import YamlSource, compose

ROLES = ("dark", "flat", "white", "data", "monopos", "alignment", "reference")
CONTROLLER_KEYS = ("frames", "exposure", "period")
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
STATES = (PENDING, RUNNING, DONE, FAILED)
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # whole names (fullmatch): "$" lets a final newline in
PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]{0,63}")
MAX_NODES = 100_000
OVERRIDES = "overrides"  # the name errors in overrides are reported under


@dataclass(frozen=True)
class AcquisitionNode:
    """One acquisition of the expanded structure: where it is, what it means, how to take it."""

    path: str  # unique, readable: "eff/energy[2]/white_before"
    name: str  # "white_before"
    role: str  # "white"
    parameters: dict  # merged paramSets along the path, e.g. {"energy": 7.1, "frames": 10, ...}
    controller: dict  # {"frames": int, "exposure": float, "period": float} for Controller.Configure
    beamline: dict  # settings to apply before it: {"mono/Energy": 7.1, "shutter": "open", "samx": 5.0}
    rotation: dict | None = None  # a turn during the frames: {"axis": "omega", "start": 0.0, "end": 180.0}

    @property
    def dataset(self) -> str:
        """The node as a dataset name of the data policy: "eff_energy002_white_before"."""
        return re.sub(r"\[(\d+)\]", lambda match: f"{int(match.group(1)):03d}", self.path).replace("/", "_")

    def to_dict(self) -> dict:
        return {"path": self.path, "name": self.name, "role": self.role, "parameters": dict(self.parameters),
                "controller": dict(self.controller), "beamline": dict(self.beamline), "rotation": self.rotation}


@dataclass(frozen=True)
class BeamlineSetting:
    """Where a parameter goes on the beamline, and the values it may take (a dict translates them)."""

    setting: str
    values: tuple | dict | None = None


@dataclass(frozen=True)
class Structure:
    """A loaded, checked and expanded data structure description."""

    name: str
    path: str
    title: str
    roles: tuple[str, ...]
    beamline: dict[str, BeamlineSetting]
    nodes: tuple[AcquisitionNode, ...]
    overrides: dict = field(default_factory=dict)  # as given to load_structure, kept to load it again

    @property
    def fingerprint(self) -> list[str]:
        return [node.path for node in self.nodes]


@dataclass
class _ParamSet:
    name: str
    parameters: dict  # name -> (value, yaml node)


@dataclass
class _Acquisition:
    node: yaml.Node
    name: str
    role: str
    parameters: dict


@dataclass
class _Scan:
    node: yaml.Node
    name: str
    parameter: str
    values: list
    values_node: yaml.Node
    parameters: dict
    items: list = field(default_factory=list)


def load_structure(path: str | Path, environment: dict[str, str] | None = None,
                   overrides: dict | None = None) -> Structure:
    """The structure described in the YAML file ``path`` (with ``overrides``), or ConfigurationError
    'file:line: key: message'."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"{path}: cannot read the structure file: {error.strerror or error}") from None
    return parse_structure(text, path, environment, overrides)


def parse_structure(text: str, path: str = "<structure>", environment: dict[str, str] | None = None,
                    overrides: dict | None = None) -> Structure:
    parser = _Parser(YamlSource(path, environment or {}))
    if overrides:
        # JSON is YAML, one key a line: an error names the override's line, under OVERRIDES
        stream = io.StringIO(json.dumps(overrides, indent=1))
        stream.name = OVERRIDES
        parser.overrides_node = yaml.compose(stream, Loader=yaml.SafeLoader)
    structure = parser.parse(compose(text, path))
    return replace(structure, overrides=dict(overrides or {}))


class _Parser:
    TOP = {"name", "title", "description", "roles", "beamline", "sequence"}
    ACQUISITION = {"name", "role", "parameters", *CONTROLLER_KEYS}
    SCAN = {"name", "parameter", "values", "range", "paramSet", "sequence"}
    ITEMS = ("paramSet", "acquisition", "scan")

    def __init__(self, source: YamlSource):
        self.source = source
        self.roles: tuple[str, ...] = ROLES
        self.beamline: dict[str, BeamlineSetting] = {}
        self.nodes: list[AcquisitionNode] = []
        self.overrides_node: yaml.Node | None = None
        self.forced: dict = {}  # parameter -> (value, node): the overrides' parameters
        self.frames_of: dict = {}  # role -> (frames, node): the overrides' frames

    def parse(self, root: yaml.Node | None) -> Structure:
        source = self.source
        if root is None:
            raise ConfigurationError(f"{source.path}: the structure file is empty")
        top = source.keyed(root, "the structure", self.TOP)
        for required in ("name", "sequence"):
            if required not in top:
                raise source.error(root, f"missing the top-level key '{required}'")
        name = self.name(top["name"][1], "name")
        title = source.scalar_text(top["title"][1], "title") if "title" in top else name
        if "roles" in top:
            self.roles = ROLES + tuple(role for role in self.extra_roles(top["roles"][1]) if role not in ROLES)
        if "beamline" in top:
            self.beamline = self.beamline_settings(top["beamline"][1])
        if self.overrides_node is not None:
            self.read_overrides(self.overrides_node)
        items = self.sequence(top["sequence"][1], "sequence")
        self.expand(items, name, {})
        if not self.nodes:
            raise source.error(top["sequence"][1], "sequence: there is no acquisition in the structure")
        return Structure(name, source.path, title, self.roles, self.beamline, tuple(self.nodes))

    # --- reading -------------------------------------------------------------------------------

    def name(self, node: yaml.Node, key: str) -> str:
        text = self.source.scalar_text(node, key)
        if not NAME.fullmatch(text):
            raise self.source.error(node, f"{key}: '{text}' is not a name of letters, digits, '-', '_', '.' "
                                    "(at most 64)")
        return text

    def extra_roles(self, node: yaml.Node) -> list[str]:
        if isinstance(node, yaml.MappingNode):  # role: description
            return [self.name(key, "roles") for key, _ in self.source.mapping(node, "roles")]
        if not isinstance(node, yaml.SequenceNode):
            raise self.source.error(node, "roles: expected a list of role names")
        return [self.name(item, "roles") for item in node.value]

    def value(self, node: yaml.Node, key: str):
        if not isinstance(node, yaml.ScalarNode):
            raise self.source.error(node, f"{key}: expected a single value")
        try:
            value = SafeConstructor().construct_object(node, deep=True)
        except ConstructorError as error:
            raise self.source.error(node, f"{key}: {error.problem}") from None
        if isinstance(value, str):
            value = self.source.expand(node, value, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.source.error(node, f"{key}: expected a finite number, got {node.value}")
        if not isinstance(value, str | int | float | bool | type(None)):
            raise self.source.error(node, f"{key}: expected text, a number or true/false, got {node.value}")
        return value

    def number(self, node: yaml.Node, key: str) -> float:
        value = self.value(node, key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.source.error(node, f"{key}: expected a number, got '{node.value}'")
        return float(value)

    def beamline_settings(self, node: yaml.Node) -> dict[str, BeamlineSetting]:
        settings = {}
        for key, entry in self.source.mapping(node, "beamline"):
            parameter = self.parameter_name(key, "beamline")
            where = f"beamline: {parameter}"
            if isinstance(entry, yaml.ScalarNode):
                settings[parameter] = BeamlineSetting(self.source.scalar_text(entry, where))
                continue
            items = self.source.keyed(entry, where, {"setting", "values"})
            if "setting" not in items:
                raise self.source.error(entry, f"{where}: missing 'setting' (the device/attribute it moves)")
            values: tuple | dict | None = None
            if "values" in items:
                values_node = items["values"][1]
                if isinstance(values_node, yaml.SequenceNode):
                    values = tuple(self.value(item, f"{where}: values") for item in values_node.value)
                elif isinstance(values_node, yaml.MappingNode):
                    values = {self.source.scalar_text(name, f"{where}: values"): self.value(value, f"{where}: values")
                              for name, value in self.source.mapping(values_node, f"{where}: values")}
                else:
                    raise self.source.error(values_node, f"{where}: values: expected a list of the allowed values "
                                            "or a mapping value -> setting")
            settings[parameter] = BeamlineSetting(self.source.scalar_text(items["setting"][1], f"{where}: setting"),
                                                  values)
        return settings

    def parameter_name(self, node: yaml.Node, key: str) -> str:
        text = self.source.scalar_text(node, key)
        if not PARAMETER.fullmatch(text):
            raise self.source.error(node, f"{key}: '{text}' is not a parameter name (a letter or '_', then letters, "
                                    "digits, '_' or spaces)")
        return text

    def sequence(self, node: yaml.Node, key: str) -> list:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.source.error(node, f"{key}: expected a list of paramSet, acquisition and scan items")
        items: list[_ParamSet | _Acquisition | _Scan] = []
        names: dict[str, int] = {}  # item name -> its line
        for item_node in node.value:
            if not isinstance(item_node, yaml.MappingNode) or len(item_node.value) != 1:
                raise self.source.error(item_node, f"{key}: each item is one of {', '.join(self.ITEMS)} "
                                        "(e.g. '- acquisition: {name: dark, role: dark}')")
            kind_node, body = item_node.value[0]
            kind = kind_node.value
            if kind == "paramSet":
                items.append(self.param_set(body, "paramSet"))
                continue
            item: _Acquisition | _Scan
            if kind == "acquisition":
                item = self.acquisition(body, kind_node)
            elif kind == "scan":
                item = self.scan(body, kind_node)
            else:
                raise self.source.error(kind_node, f"{key}: unknown item '{kind}'; expected one of "
                                        f"{', '.join(self.ITEMS)}")
            if item.name in names:
                raise self.source.error(item.node, f"{kind}: the name '{item.name}' is used twice in this sequence "
                                        f"(first at line {names[item.name]})")
            names[item.name] = item.node.start_mark.line + 1
            items.append(item)
        return items

    def param_set(self, node: yaml.Node, key: str) -> _ParamSet:
        entries = self.source.keyed(node, key)
        name = self.source.scalar_text(entries["name"][1], f"{key}: name") if "name" in entries else ""
        parameters = {}
        for entry, (name_node, value_node) in entries.items():
            if entry != "name":
                parameters.update(self.parameter(name_node, value_node, key))
        return _ParamSet(name, parameters)

    def parameter(self, name_node: yaml.Node, value_node: yaml.Node, key: str) -> dict:
        name = self.parameter_name(name_node, key)
        where = f"{key}: {name}"
        if name == "frames":
            value = self.value(value_node, where)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
                raise self.source.error(value_node, f"{where}: expected a whole number of frames from 1 to "
                                        f"10000000, got '{value_node.value}'")
        elif name in ("exposure", "period"):
            value = self.number(value_node, where)
            if value <= 0:
                raise self.source.error(value_node, f"{where}: must be more than 0 s, got {value_node.value}")
        else:
            value = self.value(value_node, where)
        return {name: (value, value_node)}

    def acquisition(self, node: yaml.Node, anchor: yaml.Node) -> _Acquisition:
        """``anchor``, the item's keyword, is the line named by errors about the acquisition as a whole."""
        allowed = self.ACQUISITION | set(self.beamline)
        entries = self.source.keyed(node, "acquisition", allowed)
        if "name" not in entries:
            raise self.source.error(anchor, "acquisition: missing 'name'")
        name = self.name(entries["name"][1], "acquisition: name")
        where = f"acquisition '{name}'"
        if "role" not in entries:
            raise self.source.error(anchor, f"{where}: missing 'role' (one of {', '.join(self.roles)})")
        role_node = entries["role"][1]
        role = self.source.scalar_text(role_node, f"{where}: role")
        if role not in self.roles:
            raise self.source.error(role_node, f"{where}: role: unknown role '{role}'; known: "
                                    f"{', '.join(self.roles)} (add it under 'roles:')")
        parameters = {}
        if "parameters" in entries:
            parameters.update(self.param_set(entries["parameters"][1], f"{where}: parameters").parameters)
        for key, (key_node, value_node) in entries.items():
            if key not in ("name", "role", "parameters"):
                parameters.update(self.parameter(key_node, value_node, where))
        return _Acquisition(anchor, name, role, parameters)

    def scan(self, node: yaml.Node, anchor: yaml.Node) -> _Scan:
        entries = self.source.keyed(node, "scan", self.SCAN)
        if "name" not in entries:
            raise self.source.error(anchor, "scan: missing 'name'")
        name = self.name(entries["name"][1], "scan: name")
        where = f"scan '{name}'"
        if "parameter" not in entries:
            raise self.source.error(anchor, f"{where}: missing 'parameter' (the parameter it steps, e.g. energy)")
        parameter = self.parameter_name(entries["parameter"][1], f"{where}: parameter")
        if "values" in entries and "range" in entries:
            raise self.source.error(entries["range"][0], f"{where}: give either 'values' or 'range', not both")
        if "values" in entries:
            values_node = entries["values"][1]
            if not isinstance(values_node, yaml.SequenceNode) or not values_node.value:
                raise self.source.error(values_node, f"{where}: values: expected a list of at least one value")
            values = [self.value(item, f"{where}: values") for item in values_node.value]
        elif "range" in entries:
            values_node = entries["range"][1]
            values = self.range(values_node, f"{where}: range")
        else:
            raise self.source.error(anchor, f"{where}: give the values it steps through: 'values: [...]' or "
                                    "'range: {start, stop, step}' (or points instead of step)")
        if "sequence" not in entries:
            raise self.source.error(anchor, f"{where}: missing 'sequence' (what is repeated for every value)")
        parameters = {}
        if "paramSet" in entries:
            parameters = self.param_set(entries["paramSet"][1], f"{where}: paramSet").parameters
        if parameter in CONTROLLER_KEYS and "values" in entries:
            values = [self.parameter(entries["parameter"][1], item, f"{where}: values")[parameter][0]
                      for item in values_node.value]
        scan = _Scan(anchor, name, parameter, values, values_node, parameters)
        scan.items = self.sequence(entries["sequence"][1], f"{where}: sequence")
        return scan

    def range(self, node: yaml.Node, key: str) -> list[float]:
        entries = self.source.keyed(node, key, {"start", "stop", "step", "points"})
        for required in ("start", "stop"):
            if required not in entries:
                raise self.source.error(node, f"{key}: missing '{required}'")
        if ("step" in entries) == ("points" in entries):
            raise self.source.error(node, f"{key}: give either 'step' or 'points'")
        start = self.number(entries["start"][1], f"{key}: start")
        stop = self.number(entries["stop"][1], f"{key}: stop")
        if "points" in entries:
            points_node = entries["points"][1]
            points = self.value(points_node, f"{key}: points")
            if isinstance(points, bool) or not isinstance(points, int) or not 1 <= points <= MAX_NODES:
                raise self.source.error(points_node, f"{key}: points: expected a whole number from 1 to {MAX_NODES}")
            if points == 1:
                return [start]
            step = (stop - start) / (points - 1)
        else:
            step_node = entries["step"][1]
            step = self.number(step_node, f"{key}: step")
            if step == 0 or (stop - start) / step < 0:
                raise self.source.error(step_node, f"{key}: step: {step_node.value} does not go from {start} to {stop}")
            intervals = (stop - start) / step
            if intervals + 1 > MAX_NODES:
                raise self.source.error(step_node, f"{key}: step: more than {MAX_NODES} points")
            points = math.floor(intervals + 1e-9) + 1
        return [round(start + index * step, 12) for index in range(points)]

    def read_overrides(self, node: yaml.Node) -> None:
        """The overrides, read with their own source (errors name 'overrides:line'), against this
        structure's roles and beamline settings."""
        reader = _Parser(YamlSource(OVERRIDES, {}))
        source = reader.source
        entries = source.keyed(node, OVERRIDES, {"parameters", "frames", "beamline"})
        if "parameters" in entries:
            self.forced = reader.param_set(entries["parameters"][1], "parameters").parameters
        if "frames" in entries:
            for role_node, frames_node in source.mapping(entries["frames"][1], "frames"):
                role = source.scalar_text(role_node, "frames")
                if role not in self.roles:
                    raise source.error(role_node, f"frames: unknown role '{role}'; known: {', '.join(self.roles)}")
                frames = reader.value(frames_node, f"frames: {role}")
                if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= 10_000_000:
                    raise source.error(frames_node, f"frames: {role}: expected a whole number of frames from 1 to "
                                       f"10000000, got '{frames_node.value}'")
                self.frames_of[role] = (frames, frames_node)
        if "beamline" in entries:
            for key, table in source.mapping(entries["beamline"][1], "beamline"):
                parameter = source.scalar_text(key, "beamline")
                setting = self.beamline.get(parameter)
                if setting is None or not isinstance(setting.values, dict):
                    tables = [name for name, known in self.beamline.items() if isinstance(known.values, dict)]
                    raise source.error(key, f"beamline: '{parameter}' has no table of values in the structure; "
                                       f"known: {', '.join(tables) or 'none'}")
                values = dict(setting.values)
                for name_node, value_node in source.mapping(table, f"beamline: {parameter}"):
                    name = source.scalar_text(name_node, f"beamline: {parameter}")
                    if name not in values:
                        raise source.error(name_node, f"beamline: {parameter}: '{name}' is not one of "
                                           f"{', '.join(map(str, values))}")
                    values[name] = reader.value(value_node, f"beamline: {parameter}: {name}")
                self.beamline[parameter] = BeamlineSetting(setting.setting, values)

    # --- expanding -----------------------------------------------------------------------------

    def expand(self, items: list, prefix: str, inherited: dict) -> None:
        parameters = dict(inherited)
        for item in items:
            if isinstance(item, _ParamSet):
                parameters.update(item.parameters)
            elif isinstance(item, _Acquisition):
                merged = {**parameters, **item.parameters, **self.forced}
                if item.role in self.frames_of:
                    merged["frames"] = self.frames_of[item.role]
                self.nodes.append(self.acquisition_node(item, prefix, merged))
                if len(self.nodes) > MAX_NODES:
                    raise self.source.error(item.node, f"the structure expands to more than {MAX_NODES} acquisitions")
            else:
                for index, value in enumerate(item.values):
                    repeated = {**parameters, **item.parameters, item.parameter: (value, item.values_node)}
                    self.expand(item.items, f"{prefix}/{item.name}[{index}]", repeated)

    def acquisition_node(self, item: _Acquisition, prefix: str, merged: dict) -> AcquisitionNode:
        where = f"acquisition '{item.name}'"
        for key in CONTROLLER_KEYS:
            if key not in merged:
                raise self.source.error(item.node, f"{where}: {key} is not set; give it here or in a paramSet "
                                        "before it")
        exposure, exposure_node = merged["exposure"]
        period, period_node = merged["period"]
        if period < exposure:
            raise self.source.error(item.node, f"{where}: period {period} s is shorter than exposure {exposure} s "
                                    f"(set at lines {period_node.start_mark.line + 1} and "
                                    f"{exposure_node.start_mark.line + 1})")
        beamline = {}
        for parameter, setting in self.beamline.items():
            if parameter not in merged:
                continue
            value, value_node = merged[parameter]
            if isinstance(setting.values, dict):
                if value not in setting.values:
                    raise self.source.error(value_node, f"{where}: {parameter}: '{value}' is not one of "
                                            f"{', '.join(map(str, setting.values))}")
                value = setting.values[value]
            elif setting.values is not None and value not in setting.values:
                raise self.source.error(value_node, f"{where}: {parameter}: '{value}' is not one of "
                                        f"{', '.join(map(str, setting.values))}")
            beamline[setting.setting] = value
        parameters = {name: value for name, (value, _) in merged.items()}
        controller = {"frames": int(merged["frames"][0]), "exposure": float(exposure), "period": float(period)}
        return AcquisitionNode(f"{prefix}/{item.name}", item.name, item.role, parameters, controller, beamline,
                               self.rotation(item, merged))

    def rotation(self, item: _Acquisition, merged: dict) -> dict | None:
        """``rotation: continuous``: the axis ``start_angle`` moves, turned to ``end_angle`` over the frames."""
        if "rotation" not in merged:
            return None
        where = f"acquisition '{item.name}': rotation"
        kind, kind_node = merged["rotation"]
        if kind != "continuous":
            raise self.source.error(kind_node, f"{where}: '{kind}' is not a rotation photonflow knows (continuous)")
        setting = self.beamline.get("start_angle")
        if setting is None or "/" in setting.setting or setting.setting == "shutter":
            raise self.source.error(kind_node, f"{where}: continuous needs 'start_angle: <motor>' under beamline: "
                                    "(the axis that turns)")
        angles = {}
        for name in ("start_angle", "end_angle"):
            if name not in merged:
                raise self.source.error(kind_node, f"{where}: continuous needs {name} (degrees), here or in a "
                                        "paramSet before it")
            value, value_node = merged[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.source.error(value_node, f"{where}: {name}: expected a number, got '{value_node.value}'")
            angles[name] = float(value)
        if angles["start_angle"] == angles["end_angle"]:
            raise self.source.error(merged["end_angle"][1], f"{where}: end_angle must differ from start_angle: "
                                    "the sample must turn")
        return {"axis": setting.setting, "start": angles["start_angle"], "end": angles["end_angle"]}


class StructureRun:
    """A structure instantiated for a proposal, session and sample: the state of every acquisition.

    A sequencer asks ``next_acquisition()`` (it becomes running) and reports ``finish(path, ok,
    run)``; ``to_dict()`` is what a DataManager persists (as JSON) after every change so that a
    restart resumes where it stopped, with a node that was running still running until its run is
    found and finished.
    """

    def __init__(self, structure: Structure, proposal: str, session: str, sample: str):
        self.structure = structure
        self.proposal = check_name(proposal, "proposal")
        self.session = check_name(session, "session")
        self.sample = check_name(sample, "sample")
        self.nodes: list[AcquisitionNode] = list(structure.nodes)
        self._by_path = {node.path: node for node in self.nodes}
        self._states = {node.path: PENDING for node in self.nodes}
        self._runs: dict[str, int] = {}
        self._lock = threading.Lock()

    def node(self, path: str) -> AcquisitionNode:
        try:
            return self._by_path[path]
        except KeyError:
            raise ConfigurationError(f"no acquisition '{path}' in the structure {self.structure.name}",
                                     reason="UnknownNode") from None

    def state(self, path: str) -> str:
        self.node(path)
        return self._states[path]

    def run_of(self, path: str) -> int | None:
        """The run number the acquisition at ``path`` was recorded as, None before it finished."""
        self.node(path)
        return self._runs.get(path)

    @property
    def current(self) -> AcquisitionNode | None:
        """The running acquisition, if any."""
        with self._lock:
            return next((node for node in self.nodes if self._states[node.path] == RUNNING), None)

    def next_acquisition(self) -> AcquisitionNode | None:
        """The first pending acquisition, now running; None when nothing is left."""
        with self._lock:
            running = [path for path, state in self._states.items() if state == RUNNING]
            if running:
                raise StateError(f"the acquisition {running[0]} is still running; finish it first")
            for node in self.nodes:
                if self._states[node.path] == PENDING:
                    self._states[node.path] = RUNNING
                    return node
            return None

    def finish(self, path: str, ok: bool, run: int | None = None) -> None:
        """The running acquisition at ``path`` is done (``ok``) or failed, recorded as ``run``."""
        self.node(path)
        with self._lock:
            if self._states[path] != RUNNING:
                raise StateError(f"the acquisition {path} is {self._states[path]}, not running; ask "
                                 "NextAcquisition for it first")
            self._states[path] = DONE if ok else FAILED
            if run is not None:
                self._runs[path] = int(run)

    def recorded_as(self, path: str, run: int) -> None:
        """The finished acquisition at ``path`` was catalogued as ``run`` (later than its series ended
        when the catalogue could not be written then); an unknown path is another structure's."""
        with self._lock:
            if self._states.get(path) in (DONE, FAILED):
                self._runs[path] = int(run)

    def retry(self, path: str) -> None:
        """A failed acquisition becomes pending again, to be taken next."""
        self.node(path)
        with self._lock:
            if self._states[path] != FAILED:
                raise StateError(f"the acquisition {path} is {self._states[path]}; only a failed one is retried")
            self._states[path] = PENDING

    @property
    def progress(self) -> float:
        """The fraction of acquisitions done, 0..1."""
        with self._lock:
            return sum(state == DONE for state in self._states.values()) / len(self.nodes)

    @property
    def finished(self) -> bool:
        """Nothing is pending or running (some may have failed)."""
        with self._lock:
            return all(state in (DONE, FAILED) for state in self._states.values())

    def to_dict(self) -> dict:
        with self._lock:
            return {
                "structure": {"name": self.structure.name, "path": os.path.abspath(self.structure.path),
                              "nodes": self.structure.fingerprint, "overrides": self.structure.overrides},
                "proposal": self.proposal, "session": self.session, "sample": self.sample,
                "states": dict(self._states), "runs": dict(self._runs),
            }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict, structure: Structure | None = None) -> StructureRun:
        """The run ``data`` (from ``to_dict``) described, over ``structure`` or its file loaded again;
        refused when the structure no longer has the same acquisitions."""
        try:
            saved = data["structure"]
            if structure is None:
                structure = load_structure(saved["path"], overrides=saved.get("overrides"))
            run = cls(structure, data["proposal"], data["session"], data["sample"])
            if structure.fingerprint != list(saved["nodes"]):
                raise ConfigurationError(f"the structure {saved['path']} changed since this run was saved "
                                         "(its acquisitions differ); start a new sequence")
            states, runs = dict(data["states"]), dict(data["runs"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigurationError(f"the saved structure run is incomplete or damaged: {error!r}") from None
        for path, state in states.items():
            if state not in STATES or path not in run._states:
                raise ConfigurationError(f"the saved structure run has an unknown state {state!r} for {path!r}")
            run._states[path] = state
        run._runs = {path: int(number) for path, number in runs.items() if path in run._states}
        return run

    @classmethod
    def from_json(cls, text: str, structure: Structure | None = None) -> StructureRun:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"the saved structure run is not valid JSON: {error}") from None
        return cls.from_dict(data, structure)
