"""dsconfig JSON (MAX IV's Tango configuration format, applied with ``json2tango``) both ways.

- :func:`to_dsconfig`: a deployment as the dsconfig document ``json2tango`` applies unchanged
  ("v2" nesting: server, instance, class, device; every property value a list of strings;
  device aliases and attribute properties).
- :func:`load_dsconfig`: a dsconfig document as a deployment, for ``photonflow config apply``:
  ``tango_host``, ``servers`` in v1 (``"Executable/instance"``) or v2 nesting, ``classes``,
  device ``alias`` and ``attribute_properties`` (a tango2json dump of a running suite: units,
  event thresholds, memorized values); ``_title``/``_date``/``_source`` are ignored, as json2tango does.

A document is checked against the schema the installed dsconfig package ships, then against what
photonflow runs; every problem is reported with its JSON path before anything is written.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path

from photonflow.deployment import SERVER_CLASSES, Deployment, DeviceSpec, ServerSpec
from photonflow.errors import ConfigurationError

TOP_LEVEL = ("servers", "classes", "tango_host")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def to_dsconfig(deployment: Deployment, source: str = "") -> dict:
    """The deployment's servers, devices, aliases, properties and class properties as dsconfig JSON."""
    servers: dict = {}
    for server in deployment.servers:
        instance = servers.setdefault(server.executable, {}).setdefault(server.instance, {})
        for device in server.devices:
            entry: dict = {"properties": {name: [str(v) for v in values] for name, values in device.properties.items()}}
            if device.alias:
                entry["alias"] = device.alias
            if device.attribute_properties:
                entry["attribute_properties"] = {
                    attribute: {name: [str(v) for v in values] for name, values in properties.items()}
                    for attribute, properties in device.attribute_properties.items()
                }
            instance.setdefault(device.tango_class, {})[device.name] = entry
    document: dict = {"_title": "photonflow deployment", "_source": source,
                      "_date": datetime.now(UTC).isoformat(timespec="seconds"), "servers": servers}
    if deployment.class_properties:
        document["classes"] = {name: {"properties": {k: list(v) for k, v in properties.items()}}
                               for name, properties in deployment.class_properties.items()}
    if deployment.tango_host:
        document["tango_host"] = deployment.tango_host
    return document


def schema() -> dict:
    """The JSON schema of the installed dsconfig package (the one json2tango --validate uses)."""
    spec = find_spec("dsconfig")  # located, not imported: dsconfig imports tango
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("the dsconfig package is not installed (pip install dsconfig)")
    return json.loads((Path(spec.submodule_search_locations[0]) / "schema" / "schema2.json").read_text())


def json_path(parts) -> str:
    """$.servers.PhotonflowRecorder["demo-1"]... for an error's location."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}"
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _expand(servers: dict, v1_keys: dict[tuple[str, str], str]) -> dict:
    """v1 server keys ('Executable/instance') split into server and instance, as dsconfig does."""
    expanded: dict = {}
    for key, value in servers.items():
        if isinstance(key, str) and "/" in key:
            executable, _, instance = key.partition("/")
            expanded.setdefault(executable, {})[instance] = value
            v1_keys[(executable, instance)] = key
        else:
            if key in expanded and isinstance(value, dict):
                expanded[key].update(value)
            else:
                expanded[key] = value
    return expanded


def _original_path(parts: list, v1_keys: dict[tuple[str, str], str]) -> list:
    if len(parts) >= 3 and parts[0] == "servers" and (parts[1], parts[2]) in v1_keys:
        return ["servers", v1_keys[(parts[1], parts[2])], *parts[3:]]
    return parts


def load_dsconfig(text: str, path: str = "<dsconfig>") -> Deployment:
    """A dsconfig document as a deployment; a ConfigurationError lists every problem with its path."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from None
    if not isinstance(document, dict):
        raise ConfigurationError(f"{path}: $: a dsconfig file is a JSON object")
    problems: list[str] = []
    for key in document:
        if key not in TOP_LEVEL and not key.startswith("_"):
            problems.append(f"$.{key}: unknown top-level key; photonflow applies {', '.join(TOP_LEVEL)} "
                            "(and ignores _title, _date, _source)")
    tango_host = document.get("tango_host", "")
    if not isinstance(tango_host, str):
        problems.append("$.tango_host: expected a string host:port")
        tango_host = ""
    v1_keys: dict[tuple[str, str], str] = {}
    servers = document.get("servers", {})
    normalized = {"servers": _expand(servers, v1_keys) if isinstance(servers, dict) else servers}
    if "classes" in document:
        normalized["classes"] = document["classes"]
    from jsonschema import Draft4Validator  # dsconfig's own dependency

    for violation in sorted(Draft4Validator(schema()).iter_errors(normalized), key=lambda e: [str(p) for p in e.path]):
        problems.append(f"{json_path(_original_path(list(violation.absolute_path), v1_keys))}: {violation.message}")
    if problems:
        raise ConfigurationError(_report(path, problems))
    deployment = _deployment(normalized, v1_keys, problems, tango_host)
    if problems:
        raise ConfigurationError(_report(path, problems))
    return deployment


def _report(path: str, problems: list[str]) -> str:
    return f"{path}: {len(problems)} problem(s), nothing written:\n" + "\n".join(f"  {p}" for p in problems)


def _deployment(normalized: dict, v1_keys, problems: list[str], tango_host: str) -> Deployment:
    servers = []
    seen: dict[str, str] = {}
    for executable, instances in normalized["servers"].items():
        if executable not in SERVER_CLASSES:
            problems.append(f"{json_path(['servers', executable])}: unknown server '{executable}'; photonflow "
                            f"provides {', '.join(SERVER_CLASSES)}")
            continue
        for instance, classes in instances.items():
            where = _original_path(["servers", executable, instance], v1_keys)
            devices = []
            for tango_class, class_devices in classes.items():
                if tango_class not in SERVER_CLASSES[executable]:
                    problems.append(f"{json_path([*where, tango_class])}: unknown class '{tango_class}' for "
                                    f"{executable}; known: {', '.join(SERVER_CLASSES[executable])}")
                    continue
                for name, entry in class_devices.items():
                    if name.lower() in seen:
                        problems.append(f"{json_path([*where, tango_class, name])}: device {name} is already "
                                        f"defined in {seen[name.lower()]}")
                    seen[name.lower()] = f"{executable}/{instance}"
                    properties = {key: list(values) for key, values in entry.get("properties", {}).items()}
                    attribute_properties = {
                        attribute: {key: list(values) for key, values in attribute_entry.items()}
                        for attribute, attribute_entry in entry.get("attribute_properties", {}).items()
                    }
                    devices.append(DeviceSpec(name, tango_class, properties, entry.get("alias", ""),
                                              attribute_properties))
            servers.append(ServerSpec(executable, instance, tuple(devices)))
    known = {tango_class for classes in SERVER_CLASSES.values() for tango_class in classes}
    class_properties = {}
    for tango_class, entry in normalized.get("classes", {}).items():
        if tango_class not in known:
            problems.append(f"{json_path(['classes', tango_class])}: unknown class '{tango_class}'")
            continue
        class_properties[tango_class] = {key: list(values) for key, values in entry.get("properties", {}).items()}
    return Deployment(tuple(servers), class_properties=class_properties, tango_host=tango_host)


def is_dsconfig(path: str | Path, text: str) -> bool:
    """A .json file, or text that starts as a JSON object: dsconfig; otherwise photonflow's YAML."""
    return str(path).lower().endswith(".json") or text.lstrip().startswith("{")
