"""Configuration as data: which servers run which devices with which properties.

photonflow's own YAML, modelled on (not the same as) MAX IV's dsconfig JSON: the nesting of
dsconfig's "v1" servers, single values allowed where dsconfig needs lists of strings, ``${VAR}``
expansion, and photonflow's own sections. ``photonflow config export --dsconfig`` writes the
dsconfig JSON of a deployment (photonflow.dsconfig_json), and ``config apply`` reads either.

    servers:
      <Executable>/<instance>:
        <TangoClass>:
          <domain/family/member>:
            alias: name                      # optional
            properties: {Name: value, ...}   # a value [] removes the property
            attribute_properties:            # optional: {attribute: {unit: mm, rel_change: 0.1, ...}}
              <Attribute>: {Name: value, ...}
    classes:                                 # optional: class properties
      <TangoClass>:
        properties: {Name: value, ...}
    starter:                                 # optional: for Astor's Starter (DbPutServerInfo)
      host: <host>                           # default: this computer's short name
      servers:
        <Executable>/<instance>: <level>     # or {level: N, host: name}

A top-level ``event_bus:`` says where "experiment done" events go: absent or ``embedded``, the
Redis-compatible server ``photonflow up``/``demo`` start themselves; else the URL of a facility's
bus, ``redis://host:port`` or ``kafka://host:port/topic``.

Every problem is reported with the file, line and key before anything is written. Values
may use ``${VAR}`` or ``${VAR:-default}`` from the environment (e.g. a data root).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from photonflow.errors import ConfigurationError
from photonflow.events.bus import parse_bus_url
from photonflow.servers import SERVERS
from photonflow.yaml_source import YamlSource, compose

# The servers photonflow installs and the Tango classes each one runs.
SERVER_CLASSES: dict[str, tuple[str, ...]] = {server: tuple(classes) for server, classes in SERVERS.items()}
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9_\-.]+/[A-Za-z0-9_\-.]+/[A-Za-z0-9_\-.]+$")
_INSTANCE = re.compile(r"^[A-Za-z0-9_\-.]+$")
EMBEDDED_EVENT_BUS = "embedded"
TOP_LEVEL_KEYS = ("servers", "classes", "starter", "simulators", "demo", "event_bus")


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    tango_class: str
    properties: dict[str, list[str]] = field(default_factory=dict)
    alias: str = ""
    # {attribute: {property: values}}: units, labels, event thresholds, memorized values (__value)
    attribute_properties: dict[str, dict[str, list[str]]] = field(default_factory=dict)


# What a prune leaves alone though the file does not name it, as json2tango does: properties Tango
# itself keeps (polling, logging, and every name starting with "_", such as the __SubDevices a
# server writes); a file removes one by giving it as an empty list.
PROTECTED_PROPERTIES = ("polled_attr", "logging_level", "logging_target")


def protected_property(name: str) -> bool:
    return name.startswith("_") or name in PROTECTED_PROPERTIES


@dataclass(frozen=True)
class StarterEntry:
    """Where Astor's Starter runs a server, and in which start-up level (1 first; 0: not controlled)."""

    server: str
    host: str
    level: int


@dataclass(frozen=True)
class ServerSpec:
    executable: str
    instance: str
    devices: tuple[DeviceSpec, ...]

    @property
    def name(self) -> str:
        return f"{self.executable}/{self.instance}"


@dataclass(frozen=True)
class SimulatorSpec:
    """A simulated piece of hardware to start before the servers (e.g. a DECTRIS DCU).

    The process prints one JSON object on its first line of output (where it listens); each
    key becomes the environment variable ``PHOTONFLOW_SIM_<NAME>_<KEY>`` that the servers'
    properties can use as ``${...}``.
    """

    name: str
    command: tuple[str, ...]


@dataclass(frozen=True)
class Deployment:
    servers: tuple[ServerSpec, ...]
    simulators: tuple[SimulatorSpec, ...] = ()
    # what `photonflow demo` acquires with this detector unless told otherwise: frames, exposure, period
    demo: dict[str, float | str] = field(default_factory=dict)
    # where events go: EMBEDDED_EVENT_BUS (the suite starts its own Redis) or a bus URL
    event_bus: str = "embedded"
    # class properties: {class: {name: values}}
    class_properties: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # the Starter's host and level of each server it controls (the `starter:` section)
    starter: tuple[StarterEntry, ...] = ()
    # the database a dsconfig file says it is for (its `tango_host`); "" for YAML
    tango_host: str = ""

    def device(self, tango_class: str) -> DeviceSpec:
        """The first device of a class (e.g. the demo's Controller)."""
        for server in self.servers:
            for device in server.devices:
                if device.tango_class == tango_class:
                    return device
        raise ConfigurationError(f"no device of class {tango_class} in the configuration")


@dataclass(frozen=True)
class Change:
    """One write to the Tango database, described for the operator."""

    # "add_device", "put_property", "put_attribute_property", "put_alias", "put_class_property",
    # "put_server_info"; a prune or an empty value: "delete_device", "delete_property",
    # "delete_attribute_property", "delete_class_property"
    kind: str
    server: str
    device: str  # the class, for put_class_property
    tango_class: str = ""
    property_name: str = ""
    old: list[str] | None = None
    new: list[str] | None = None
    attribute: str = ""

    def describe(self) -> str:
        before = "unset" if not self.old else ", ".join(self.old)
        after = ", ".join(self.new or [])
        if self.kind == "add_device":
            return f"add device {self.device} (class {self.tango_class}) to server {self.server}"
        if self.kind == "delete_device":
            return f"delete device {self.device} (class {self.tango_class}) from server {self.server}"
        if self.kind == "put_alias":
            return f"set alias of {self.device}: {', '.join(self.old or []) or 'none'} -> {after}"
        if self.kind == "put_server_info":
            return f"set Starter info of {self.server}: {', '.join(self.old or []) or 'none'} -> {after}"
        owner = {
            "put_class_property": f"class {self.device}", "delete_class_property": f"class {self.device}",
            "put_attribute_property": f"{self.device}/{self.attribute}",
            "delete_attribute_property": f"{self.device}/{self.attribute}",
        }.get(self.kind, self.device)
        if self.kind.startswith("delete_"):
            return f"delete {owner}->{self.property_name} (was {before})"
        return f"set {owner}->{self.property_name}: {before} -> {after}"


def load_deployment(
    text: str,
    path: str = "<config>",
    environment: Mapping[str, str] | None = None,
    simulators_only: bool = False,
) -> Deployment:
    """Parse and validate a deployment; raises ConfigurationError naming the line and key.

    ``simulators_only``: just the simulators, whose output the servers' properties may need.
    """
    source = YamlSource(path, os.environ if environment is None else environment)
    root = compose(text, path)
    if root is None:
        raise ConfigurationError(f"{path}: the file is empty; it needs a 'servers' mapping")
    top = dict((k.value, (k, v)) for k, v in source.mapping(root, "the file"))
    unknown = sorted(top.keys() - set(TOP_LEVEL_KEYS))
    if unknown:
        raise source.error(
            top[unknown[0]][0],
            f"unknown top-level key '{unknown[0]}'; expected 'servers' (and 'classes', 'starter', 'simulators', "
            "'demo', 'event_bus')",
        )
    simulators = _simulators(source, top["simulators"][1]) if "simulators" in top else ()
    demo = _demo_settings(source, top["demo"][1]) if "demo" in top else {}
    event_bus = _event_bus(source, top["event_bus"][1]) if "event_bus" in top else EMBEDDED_EVENT_BUS
    if simulators_only:
        return Deployment((), simulators, demo, event_bus)
    if "servers" not in top:
        raise ConfigurationError(f"{path}: missing the top-level 'servers' mapping")
    servers = []
    devices_seen: dict[str, str] = {}
    for server_key, classes_node in source.mapping(top["servers"][1], "servers"):
        executable, _, instance = server_key.value.partition("/")
        if executable not in SERVER_CLASSES:
            raise source.error(
                server_key,
                f"servers: unknown server '{executable}'; photonflow provides {', '.join(SERVER_CLASSES)}",
            )
        if not _INSTANCE.match(instance):
            raise source.error(server_key, f"servers: '{server_key.value}' must be Executable/instance")
        devices = []
        for class_key, devices_node in source.mapping(classes_node, server_key.value):
            if class_key.value not in SERVER_CLASSES[executable]:
                raise source.error(
                    class_key,
                    f"{server_key.value}: unknown class '{class_key.value}' for {executable}; "
                    f"known: {', '.join(SERVER_CLASSES[executable])}",
                )
            for device_key, device_node in source.mapping(devices_node, class_key.value):
                name = device_key.value
                if not isinstance(name, str) or not _DEVICE_NAME.match(name):
                    raise source.error(
                        device_key, f"{class_key.value}: '{name}' is not a domain/family/member device name"
                    )
                if name.lower() in devices_seen:
                    raise source.error(device_key, f"device {name} is already defined in {devices_seen[name.lower()]}")
                devices_seen[name.lower()] = server_key.value
                properties, alias, attribute_properties = _device_sections(source, device_node, name)
                devices.append(DeviceSpec(name, class_key.value, properties, alias, attribute_properties))
        servers.append(ServerSpec(executable, instance, tuple(devices)))
    class_properties = _classes(source, top["classes"][1]) if "classes" in top else {}
    starter = _starter(source, top["starter"][1], {s.name for s in servers}) if "starter" in top else ()
    return Deployment(tuple(servers), simulators, demo, event_bus, class_properties, starter)


def _device_sections(
    source: YamlSource, node: yaml.Node, name: str
) -> tuple[dict[str, list[str]], str, dict[str, dict[str, list[str]]]]:
    """A device's properties, alias and attribute properties; an empty entry (``name:``) has none."""
    properties: dict[str, list[str]] = {}
    attribute_properties: dict[str, dict[str, list[str]]] = {}
    alias = ""
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "null", "~"):
        return properties, alias, attribute_properties
    for section_key, section_node in source.mapping(node, name):
        if section_key.value == "alias":
            alias = source.scalar_text(section_node, f"{name} alias")
        elif section_key.value == "properties":
            properties.update(_properties(source, section_node, name))
        elif section_key.value == "attribute_properties":
            for attribute_key, attribute_node in source.mapping(section_node, f"{name} attribute_properties"):
                attribute_properties[attribute_key.value] = _properties(
                    source, attribute_node, f"{name}/{attribute_key.value}")
        else:
            raise source.error(section_key, f"{name}: unknown key '{section_key.value}'; expected 'properties', "
                                            "'attribute_properties' or 'alias'")
    return properties, alias, attribute_properties


def _properties(source: YamlSource, node: yaml.Node, owner: str) -> dict[str, list[str]]:
    return {key.value: source.texts(value, f"{owner}->{key.value}")
            for key, value in source.mapping(node, f"{owner} properties")}


def _classes(source: YamlSource, node: yaml.Node) -> dict[str, dict[str, list[str]]]:
    known = {tango_class for classes in SERVER_CLASSES.values() for tango_class in classes}
    result = {}
    for class_key, class_node in source.mapping(node, "classes"):
        if class_key.value not in known:
            raise source.error(
                class_key, f"classes: unknown class '{class_key.value}'; known: {', '.join(sorted(known))}")
        sections = source.keyed(class_node, f"classes {class_key.value}", {"properties"})
        result[class_key.value] = _properties(source, sections["properties"][1], class_key.value) if sections else {}
    return result


def default_starter_host() -> str:
    """The name a Starter on this computer has (``Starter/<host>``): the short host name."""
    return socket.gethostname().split(".")[0]


def _starter(source: YamlSource, node: yaml.Node, servers: set[str]) -> tuple[StarterEntry, ...]:
    """The ``starter:`` section: a default ``host`` and each server's level (or {level, host})."""
    sections = source.keyed(node, "starter", {"host", "servers"})
    host = source.scalar_text(sections["host"][1], "starter host") if "host" in sections else default_starter_host()
    if "servers" not in sections:
        raise source.error(node, "starter: expected 'servers': each server's start-up level")
    by_lower = {name.lower(): name for name in servers}
    entries = []
    for server_key, value_node in source.mapping(sections["servers"][1], "starter servers"):
        name = by_lower.get(str(server_key.value).lower())
        if name is None:
            raise source.error(server_key, f"starter: '{server_key.value}' is not a server of this deployment")
        server_host, level_node = host, value_node
        if isinstance(value_node, yaml.MappingNode):
            items = source.keyed(value_node, f"starter {name}", {"level", "host"})
            if "level" not in items:
                raise source.error(value_node, f"starter {name}: expected 'level'")
            level_node = items["level"][1]
            if "host" in items:
                server_host = source.scalar_text(items["host"][1], f"starter {name} host")
        text = source.scalar_text(level_node, f"starter {name} level")
        if not text.isdigit() or int(text) > 200:
            raise source.error(level_node, f"starter {name}: the level must be a whole number 0-200, got '{text}'")
        if not server_host.strip():
            raise source.error(value_node, f"starter {name}: empty host")
        entries.append(StarterEntry(name, server_host.strip(), int(text)))
    return tuple(entries)


def _simulators(source: YamlSource, node: yaml.Node) -> tuple[SimulatorSpec, ...]:
    simulators = []
    for name_key, spec_node in source.mapping(node, "simulators"):
        name = name_key.value
        if not isinstance(name, str) or not _INSTANCE.match(name):
            raise source.error(name_key, f"simulators: '{name}' must be a plain name (letters, digits, - _ .)")
        sections = dict((k.value, (k, v)) for k, v in source.mapping(spec_node, name))
        extra = sorted(sections.keys() - {"command"})
        if extra or "command" not in sections:
            raise source.error(
                name_key, f"{name}: expected exactly the key 'command' (a list: program and arguments)"
            )
        command_node = sections["command"][1]
        if not isinstance(command_node, yaml.SequenceNode) or not command_node.value:
            raise source.error(command_node, f"{name}: 'command' must be a non-empty list")
        command = tuple(source.scalar_text(item, f"{name} command") for item in command_node.value)
        simulators.append(SimulatorSpec(name, command))
    return tuple(simulators)


def _event_bus(source: YamlSource, node: yaml.Node) -> str:
    """'embedded' or a bus URL checked for its form (nothing is contacted here)."""
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "null", "~"):
        return EMBEDDED_EVENT_BUS
    text = source.scalar_text(node, "event_bus").strip()
    if text == EMBEDDED_EVENT_BUS:
        return text
    try:
        return parse_bus_url(text).url
    except ConfigurationError as error:
        raise source.error(node, f"event_bus: {error}; or 'embedded'") from None


# step: degrees per frame of a rotation; sample: the DataManager's Sample for the demo's experiment
DEMO_SETTINGS = {"frames": int, "exposure": float, "period": float, "step": float, "sample": str}


def _demo_settings(source: YamlSource, node: yaml.Node) -> dict[str, float | str]:
    """The detector's demo acquisition: frames, exposure and period (s) its hardware can do, and the
    rotation's step per frame (degrees) when the deployment scans an axis, and the sample in the beam."""
    settings = {}
    for key, value_node in source.mapping(node, "demo"):
        if key.value not in DEMO_SETTINGS:
            raise source.error(key, f"demo: unknown key '{key.value}'; expected {', '.join(DEMO_SETTINGS)}")
        text = source.scalar_text(value_node, f"demo {key.value}")
        try:
            value = DEMO_SETTINGS[key.value](text)
        except ValueError:
            value = None
        if key.value == "sample":
            if not text.strip():
                raise source.error(value_node, "demo sample: expected the sample's name, got nothing")
        elif value is None or value <= 0:
            raise source.error(value_node, f"demo {key.value}: expected a positive number, got {text!r}")
        settings[key.value] = value
    return settings


def load_deployment_file(
    path: str | Path, environment: Mapping[str, str] | None = None, simulators_only: bool = False,
) -> Deployment:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error.strerror}") from None
    return load_deployment(text, str(path), environment, simulators_only)


def with_instance(deployment: Deployment, instance: str) -> Deployment:
    """The deployment with every server run as ``<Executable>/<instance>``, and its Starter entries
    renamed alike: two suites on one host need instances of their own, since a Tango Starter finds
    its servers by ``<executable> <instance>`` in the host's process table."""
    if not _INSTANCE.match(instance):
        raise ConfigurationError(f"instance '{instance}': use letters, digits, '_', '-' or '.' only")
    renamed = {server.name: f"{server.executable}/{instance}" for server in deployment.servers}
    merged = sorted({name for name in renamed.values() if list(renamed.values()).count(name) > 1})
    if merged:
        raise ConfigurationError(f"instance '{instance}' would merge servers of this configuration into "
                                 f"{', '.join(merged)}: it runs an executable under several instances")
    return replace(
        deployment,
        servers=tuple(replace(server, instance=instance) for server in deployment.servers),
        starter=tuple(replace(entry, server=renamed.get(entry.server, entry.server)) for entry in deployment.starter),
    )


MAX_RECORDERS = 16


def with_recorders(deployment: Deployment, count: int) -> Deployment:
    """The deployment with ``count`` Recorders sharing the Controller's stream: the Recorder it names
    and ``count - 1`` copies (``<name>_2``...; each in a server of its own, ``<instance>_r2``..., the
    Starter's level of the first), the Controller naming them all and the Acquirer dealing its frames
    to as many outputs (``StreamOutputs``)."""
    if not 1 <= count <= MAX_RECORDERS:
        raise ConfigurationError(f"recorders: {count}; give 1 to {MAX_RECORDERS}")
    if count == 1:
        return deployment
    controller = deployment.device("PhotonflowController")
    recorders = controller.properties.get("Recorder") or []
    if len(recorders) != 1:
        raise ConfigurationError(f"{controller.name} names {len(recorders)} Recorders: recorders={count} copies one")
    acquirer_name = (controller.properties.get("Acquirer") or [""])[0]
    server, recorder = next(((s, d) for s in deployment.servers for d in s.devices
                             if d.name.lower() == recorders[0].lower()), (None, None))
    if server is None or recorder is None:
        raise ConfigurationError(f"{controller.name}'s Recorder {recorders[0]} is not in the configuration")
    copies = [ServerSpec(server.executable, f"{server.instance}_r{n}",
                         (replace(recorder, name=f"{recorder.name}_{n}", alias=""),)) for n in range(2, count + 1)]
    names = [recorder.name, *(copy.devices[0].name for copy in copies)]

    def changed(device: DeviceSpec) -> DeviceSpec:
        if device.name == controller.name:
            return replace(device, properties={**device.properties, "Recorder": names})
        if device.name.lower() == acquirer_name.lower():
            return replace(device, properties={**device.properties, "StreamOutputs": [str(count)]})
        return device

    servers = tuple(replace(s, devices=tuple(changed(d) for d in s.devices)) for s in deployment.servers)
    level = next((entry for entry in deployment.starter if entry.server == server.name), None)
    starter = deployment.starter + tuple(StarterEntry(copy.name, level.host, level.level) for copy in copies
                                         if level is not None)
    return replace(deployment, servers=servers + tuple(copies), starter=starter)


def with_live_analysis(deployment: Deployment, properties: Mapping[str, list[str]] | None = None) -> Deployment:
    """The deployment with a live-analysis worker (``PhotonflowAnalysis``) beside each Recorder the
    Controller names: the Recorder deals every frame to it on a push fan-out (``FanOutMode push``,
    ``FanOutEvery 1``: a viewers' pub fan-out gives way), the worker, in a server of its own
    (``PhotonflowAnalysis/<the Recorder server's instance>``) on the Recorder's Starter host and
    level, keeps its results beside the Recorder's file and publishes them into its blissdata
    scan. ``properties``: the workers' (AzimuthalPoints, ROIs...)."""
    controller = deployment.device("PhotonflowController")
    recorders = {name.lower() for name in controller.properties.get("Recorder") or []}
    if not recorders:
        raise ConfigurationError(f"{controller.name} names no Recorder: the live analysis takes a Recorder's frames")
    if any(d.tango_class == "PhotonflowAnalysis" for s in deployment.servers for d in s.devices):
        return deployment  # the file deploys its own workers
    fan_out = {"FanOutMode": ["push"], "FanOutEvery": ["1"]}
    servers, workers, starter = [], [], list(deployment.starter)
    for server in deployment.servers:
        devices = []
        for device in server.devices:
            if device.name.lower() in recorders:
                address = device.properties.get("FanOutAddress") or ["tcp://127.0.0.1:*"]
                device = replace(device, properties={**device.properties, **fan_out, "FanOutAddress": address})
                worker = ServerSpec("PhotonflowAnalysis", server.instance, (DeviceSpec(
                    f"{device.name}_analysis", "PhotonflowAnalysis",
                    {**dict(properties or {}), "Recorder": [device.name]}),))
                workers.append(worker)
                level = next((entry for entry in deployment.starter if entry.server == server.name), None)
                if level is not None:
                    starter.append(StarterEntry(worker.name, level.host, level.level))
            devices.append(device)
        servers.append(replace(server, devices=tuple(devices)))
    return replace(deployment, servers=tuple(servers) + tuple(workers), starter=tuple(starter))


def simulator_environment(name: str, announced: Mapping[str, object]) -> dict[str, str]:
    """The variables a started simulator's announcement defines: PHOTONFLOW_SIM_<NAME>_<KEY>."""
    prefix = "PHOTONFLOW_SIM_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    return {f"{prefix}_{re.sub(r'[^A-Za-z0-9]', '_', key).upper()}": str(value) for key, value in announced.items()}


@dataclass
class DatabaseView:
    """What the Tango database holds now, for the devices a deployment names."""

    device_servers: dict[str, tuple[str, str]] = field(default_factory=dict)  # device -> (server, class)
    properties: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # device (lower case) -> {attribute: {property: values}}, for the attributes the deployment names
    attribute_properties: dict[str, dict[str, dict[str, list[str]]]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # device (lower case) -> alias
    class_properties: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    server_info: dict[str, tuple[str, int]] = field(default_factory=dict)  # server (lower) -> (host, level)
    # read for a prune only: every device of the deployment's servers (server lower -> [(device, class)])
    # and every property name of its devices and classes, not only those the deployment names
    server_devices: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    property_names: dict[str, list[str]] = field(default_factory=dict)  # device (lower case) -> names
    class_property_names: dict[str, list[str]] = field(default_factory=dict)


def plan_changes(deployment: Deployment, current: DatabaseView, prune: bool = False) -> list[Change]:
    """The writes that bring the database to the deployment; empty when it already matches.

    A property or attribute property given as an empty list is deleted. With ``prune`` (as
    json2tango does by default): devices of the deployment's servers that it does not list, and
    the properties of its devices and classes that it does not give, are deleted too, except
    the ones Tango keeps itself (``protected_property``)."""
    changes: list[Change] = []
    for server in deployment.servers:
        listed = {device.name.lower() for device in server.devices}
        if prune:
            for name, tango_class in current.server_devices.get(server.name.lower(), []):
                if name.lower() not in listed:
                    changes.append(Change("delete_device", server.name, name, tango_class=tango_class))
        for device in server.devices:
            changes += _device_changes(server, device, current, prune)
    for tango_class, properties in deployment.class_properties.items():
        existing = current.class_properties.get(tango_class, {})
        changes += _property_changes(
            "class_property", "", tango_class, properties, existing,
            current.class_property_names.get(tango_class, []) if prune else [])
    for entry in deployment.starter:
        wanted = (entry.host, entry.level)
        if current.server_info.get(entry.server.lower()) != wanted:
            old = current.server_info.get(entry.server.lower())
            changes.append(Change("put_server_info", entry.server, "",
                                  old=[f"host {old[0]}", f"level {old[1]}"] if old else None,
                                  new=[f"host {entry.host}", f"level {entry.level}"]))
    return changes


def _device_changes(server: ServerSpec, device: DeviceSpec, current: DatabaseView, prune: bool) -> list[Change]:
    changes: list[Change] = []
    key = device.name.lower()
    registered = current.device_servers.get(key)
    if registered is None or registered[0].lower() != server.name.lower() or registered[1] != device.tango_class:
        changes.append(Change("add_device", server.name, device.name, tango_class=device.tango_class))
    changes += _property_changes("property", server.name, device.name, device.properties,
                                 current.properties.get(key, {}), current.property_names.get(key, []) if prune else [])
    stored_attributes = current.attribute_properties.get(key, {})
    for attribute, properties in device.attribute_properties.items():
        changes += _property_changes("attribute_property", server.name, device.name, properties,
                                     stored_attributes.get(attribute, {}), [], attribute)
    if device.alias and current.aliases.get(key) != device.alias:
        old_alias = current.aliases.get(key)
        changes.append(Change("put_alias", server.name, device.name, old=[old_alias] if old_alias else None,
                              new=[device.alias]))
    return changes


def _property_changes(kind: str, server: str, owner: str, wanted: Mapping[str, list[str]],
                      existing: Mapping[str, list[str]], stored_names: list[str], attribute: str = "") -> list[Change]:
    """Put what differs, delete what is given as [] and (``stored_names``: a prune) what is not given."""
    changes = []
    for name, value in wanted.items():
        old = existing.get(name)
        if value == [] and old:
            changes.append(Change(f"delete_{kind}", server, owner, property_name=name, old=old, attribute=attribute))
        elif value and old != value:
            changes.append(Change(f"put_{kind}", server, owner, property_name=name, old=old, new=value,
                                  attribute=attribute))
    given = {name.lower() for name in wanted}
    for name in stored_names:
        if name.lower() not in given and not protected_property(name):
            changes.append(Change(f"delete_{kind}", server, owner, property_name=name,
                                  old=existing.get(name), attribute=attribute))
    return changes
