"""A beamline's mapping, as data: which Tango attribute is which NeXus field, in which unit, and
when it is captured (before, during or after the exposure).

A beamline is described once in YAML (``config/standard/*.yaml``) and the Standardizer needs no
code for it. The mapping is refused at load, naming file, line and key, when a component or a
NeXus field is unknown, a unit does not convert to the field's dimension, or an axis'
``depends_on`` chain does not resolve: a mistake is found before an experiment, not after.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pint
import yaml

from photonflow.errors import ConfigurationError
from photonflow.yaml_source import YamlSource, compose

UNITS: pint.UnitRegistry = pint.UnitRegistry()
DEFINITIONS = ("NXmx", "NXtomo")
MOMENTS = ("pre", "during", "post")  # pre-exposure, during the exposure, post-exposure


@dataclass(frozen=True)
class ComponentKind:
    """Where a beamline component goes in the entry, and the NeXus fields it may have with the unit
    each must convert to (None: a text or a plain number without unit)."""

    group: str
    nx_class: str
    fields: Mapping[str, str | None]
    # NeXus' open enumerations: another value is written with the attribute custom=True
    enumerations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


COMPONENTS: dict[str, ComponentKind] = {
    "source": ComponentKind("source", "NXsource", {
        "name": None, "type": None, "probe": None, "mode": None, "top_up": None,
        "current": "A", "energy": "eV", "frequency": "Hz", "last_fill": "A",
    }, {"mode": ("Single Bunch", "Multi Bunch"), "probe": ("neutron", "x-ray", "muon", "electron", "ultraviolet",
                                                           "visible light", "positron", "proton")}),
    "monochromator": ComponentKind("instrument/monochromator", "NXmonochromator", {
        "energy": "eV", "wavelength": "m", "energy_error": "eV", "wavelength_error": "m",
    }),
    "beam": ComponentKind("instrument/beam", "NXbeam", {
        "incident_wavelength": "m", "incident_energy": "eV", "total_flux": "Hz", "incident_beam_size": "m",
    }),
    "attenuator": ComponentKind("instrument/attenuator", "NXattenuator", {
        "attenuator_transmission": "dimensionless", "thickness": "m", "type": None,
    }),
    # NXinstrument has no place for NXslit, and NeXus has no shutter class: both are kept as
    # collections beside the components
    "slits": ComponentKind("instrument/slits", "NXcollection", {"x_gap": "m", "y_gap": "m"}),
    "shutter": ComponentKind("instrument/shutter", "NXcollection", {"status": None}),
    # how the sample fits the camera's field (NXtomo, as nxtomo and nabu read it): Full, or Half
    # (the rotation axis near an edge, the sample's other half seen 180 degrees later)
    "detector": ComponentKind("instrument/detector", "NXdetector", {"field_of_view": None},
                              {"field_of_view": ("Full", "Half")}),
    # what the acquisition means, from the DataManager (its role: dark, flat, data...)
    "experiment": ComponentKind("experiment", "NXcollection", {
        "role": None, "node": None, "proposal": None, "session": None, "sample": None,
    }),
    "sample": ComponentKind("sample", "NXsample", {
        "name": None, "description": None, "chemical_formula": None, "temperature": "K",
    }),
}
# Axes (NXtransformations) belong to the sample's goniometer or to the detector's position.
AXIS_GROUPS = ("goniometer", "detector_position")
AXIS_UNITS = {"rotation": "deg", "translation": "m"}


@dataclass(frozen=True)
class Capture:
    """Where one value comes from and when it is read."""

    key: str  # "component/field" or "axis_group/axis": its name in the snapshots
    device: str | None  # Tango device, None for a fixed value
    attribute: str | None
    value: object = None  # a fixed value when there is no attribute
    unit: str | None = None
    moments: frozenset[str] = frozenset({"pre"})
    rate: float = 10.0  # Hz, when captured during the exposure by polling
    events: bool = False  # during the exposure from the attribute's change events, not polling
    origin: str | None = None  # who stated a fixed value, when not the mapping itself (a command's option)

    @property
    def source(self) -> str:
        return f"{self.device}/{self.attribute}" if self.device else "fixed value"

    @property
    def tango_attribute(self) -> tuple[str, str]:
        """(device, attribute) of a value read from Tango; refused for a fixed value."""
        if self.device is None or self.attribute is None:
            raise ConfigurationError(f"{self.key} is a fixed value: there is no attribute to read")
        return self.device, self.attribute


@dataclass(frozen=True)
class FieldMapping:
    component: str
    name: str
    capture: Capture


@dataclass(frozen=True)
class AxisMapping:
    group: str  # goniometer or detector_position
    name: str
    transformation_type: str  # rotation or translation
    vector: tuple[float, float, float]
    depends_on: str  # another axis of the same group, or "."
    capture: Capture
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    offset_unit: str = "m"
    scan: bool = False  # the axis moved during the series: written per frame
    # the position-compare device that triggered the frames and latched this axis' encoder at each
    # trigger: the per-frame values come from it when its capture belongs to the series
    triggers: str | None = None


@dataclass(frozen=True)
class BeamlineMapping:
    path: str
    beamline: str
    instrument: str
    definition: str
    fields: tuple[FieldMapping, ...] = ()
    axes: tuple[AxisMapping, ...] = ()
    devices: Mapping[str, str] = field(default_factory=dict)

    def captures(self, moment: str) -> list[Capture]:
        every = [f.capture for f in self.fields] + [a.capture for a in self.axes]
        return [c for c in every if c.device and moment in c.moments]

    def polled(self) -> list[Capture]:
        """Values read during the exposure by polling at their rate."""
        return [c for c in self.captures("during") if not c.events]

    def evented(self) -> list[Capture]:
        """Values taken during the exposure from their change events."""
        return [c for c in self.captures("during") if c.events]

    def fixed(self) -> list[Capture]:
        return [f.capture for f in self.fields if not f.capture.device] + [
            a.capture for a in self.axes if not a.capture.device
        ]

    def triggered(self) -> list[AxisMapping]:
        """The axes whose per-frame positions a position-compare device captures."""
        return [axis for axis in self.axes if axis.triggers]

    def capture_of(self, key: str) -> Capture:
        """The capture of ``key`` ("component/field" or "axis_group/axis")."""
        every = [f.capture for f in self.fields] + [a.capture for a in self.axes]
        found = next((capture for capture in every if capture.key == key), None)
        if found is None:
            raise ConfigurationError(f"{Path(self.path).name} maps no {key}")
        return found

    def fixed_source(self, what: str) -> str:
        """The source of ``what`` this mapping states itself: a YAML mapping is configuration; a
        tool's own mapping (``standardize cbf``'s) names what it was made from."""
        name = Path(self.path).name
        return f"configuration: {name} {what}" if name.endswith((".yaml", ".yml")) else f"{name}: {what}"

    def source_of(self, capture: Capture) -> str:
        """Where a captured value comes from, as the file names it: the DataManager's or another
        Tango attribute, or this mapping's fixed value."""
        if capture.device is None:
            return capture.origin or self.fixed_source(capture.key)
        kind = "DataManager" if capture.device == self.devices.get("datamanager") else "Tango"
        return f"{kind}: {capture.source}"

    def axes_of(self, group: str) -> list[AxisMapping]:
        return [axis for axis in self.axes if axis.group == group]

    def chain_head(self, group: str) -> str | None:
        """The axis the sample (or detector) depends on: the one no other axis depends on."""
        axes = self.axes_of(group)
        used = {axis.depends_on for axis in axes}
        heads = [axis.name for axis in axes if axis.name not in used]
        return heads[0] if heads else None


def load_mapping(path: str | Path, variables: Mapping[str, str] | None = None) -> BeamlineMapping:
    """Read and check a mapping file; ``variables`` fill ``${NAME}`` (e.g. the device prefix)."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigurationError(f"{path}: cannot read the mapping: {error.strerror}") from None
    return parse_mapping(text, path, variables)


def check_mappings(deployment) -> list[BeamlineMapping]:
    """Load the mapping of every Standardizer of a deployment (photonflow.deployment.Deployment),
    so that a mistake is named, with file, line and key, before any server starts."""
    mappings = []
    for server in deployment.servers:
        for device in server.devices:
            if device.tango_class == "PhotonflowStandardizer":
                if not device.properties.get("MappingFile"):
                    raise ConfigurationError(f"{device.name}: the property MappingFile is missing")
                variables = {"PREFIX": device.properties.get("DevicePrefix", [""])[0],
                             "DATAMANAGER": device.properties.get("DataManager", [""])[0]}
                mappings.append(load_mapping(device.properties["MappingFile"][0], variables))
    return mappings


def parse_mapping(text: str, path: str = "<mapping>", variables: Mapping[str, str] | None = None) -> BeamlineMapping:
    source = YamlSource(path, {**os.environ, **(variables or {})})
    root = compose(text, path)
    if root is None:
        raise ConfigurationError(f"{path}: the mapping is empty")
    top = source.keyed(root, "the mapping", {"beamline", "instrument", "definition", "devices", "components", "axes"})
    for required in ("beamline", "definition"):
        if required not in top:
            raise ConfigurationError(f"{path}: missing the top-level key '{required}'")
    definition = source.scalar_text(top["definition"][1], "definition")
    if definition not in DEFINITIONS:
        raise source.error(top["definition"][1], f"definition: '{definition}' is not one of {', '.join(DEFINITIONS)}")
    devices = {}
    if "devices" in top:
        for key, node in source.mapping(top["devices"][1], "devices"):
            devices[key.value] = source.scalar_text(node, f"devices: {key.value}")
    reader = _CaptureReader(source, devices)
    fields = []
    if "components" in top:
        for component_key, component_node in source.mapping(top["components"][1], "components"):
            component = component_key.value
            if component not in COMPONENTS:
                raise source.error(component_key, f"components: unknown component '{component}'; known: "
                                   f"{', '.join(COMPONENTS)}")
            kind = COMPONENTS[component]
            for field_key, field_node in source.mapping(component_node, component):
                name = field_key.value
                if name not in kind.fields:
                    raise source.error(field_key, f"{component}: '{name}' is not a field of {kind.nx_class} photonflow "
                                       f"writes; known: {', '.join(kind.fields)}")
                capture = reader.capture(field_node, f"{component}/{name}", kind.fields[name])
                fields.append(FieldMapping(component, name, capture))
    axes = []
    if "axes" in top:
        for group_key, group_node in source.mapping(top["axes"][1], "axes"):
            if group_key.value not in AXIS_GROUPS:
                raise source.error(group_key, f"axes: unknown group '{group_key.value}'; "
                                   f"known: {', '.join(AXIS_GROUPS)}")
            group_axes = [reader.axis(group_key.value, key, node)
                          for key, node in source.mapping(group_node, group_key.value)]
            _check_chain(source, group_key, group_axes)
            axes.extend(group_axes)
    beamline = source.scalar_text(top["beamline"][1], "beamline")
    instrument = source.scalar_text(top["instrument"][1], "instrument") if "instrument" in top else beamline
    return BeamlineMapping(path, beamline, instrument, definition, tuple(fields), tuple(axes), devices)


class _CaptureReader:
    """Reads one ``{attribute:, unit:, capture:, rate:}`` (or ``{value:}``) entry."""

    KEYS = {"attribute", "value", "unit", "capture", "rate", "events"}
    AXIS_KEYS = KEYS | {"type", "vector", "depends_on", "offset", "offset_unit", "scan", "triggers"}

    def __init__(self, source: YamlSource, devices: Mapping[str, str]):
        self.source = source
        self.devices = devices

    def capture(self, node: yaml.Node, key: str, dimension: str | None, allowed: set[str] | None = None) -> Capture:
        source = self.source
        items = source.keyed(node, key, allowed or self.KEYS)
        if ("attribute" in items) == ("value" in items):
            raise source.error(node, f"{key}: give either 'attribute' (a Tango attribute) or 'value' (a fixed value)")
        unit = source.scalar_text(items["unit"][1], f"{key}: unit") if "unit" in items else None
        self._check_unit(items.get("unit", (node, node))[1], key, unit, dimension)
        moments = frozenset({"pre"})
        if "capture" in items:
            moments = frozenset(source.texts(items["capture"][1], f"{key}: capture"))
            wrong = sorted(moments - set(MOMENTS))
            if wrong or not moments:
                raise source.error(items["capture"][1], f"{key}: capture must be among {', '.join(MOMENTS)}, got "
                                   f"{', '.join(wrong) or 'nothing'}")
        rate = source.number(items["rate"][1], f"{key}: rate") if "rate" in items else 10.0
        events = False
        if "events" in items:
            events = _scalar(source.scalar_text(items["events"][1], f"{key}: events")) is True
        if not 0 < rate <= 1000:
            raise source.error(items["rate"][1], f"{key}: rate must be between 0 and 1000 Hz, got {rate}")
        if "value" in items:
            value_node = items["value"][1]
            value = yaml.safe_load(yaml.serialize(value_node)) if not isinstance(value_node, yaml.ScalarNode) \
                else _scalar(source.scalar_text(value_node, f"{key}: value"))
            return Capture(key, None, None, value, unit, frozenset(), rate)
        device, attribute = self._attribute(items["attribute"][1], key)
        return Capture(key, device, attribute, None, unit, moments, rate, events)

    def axis(self, group: str, key_node: yaml.Node, node: yaml.Node) -> AxisMapping:
        source = self.source
        name = key_node.value
        key = f"{group}/{name}"
        items = source.keyed(node, key, self.AXIS_KEYS)
        if "type" not in items:
            raise source.error(node, f"{key}: 'type' (rotation or translation) is missing")
        kind = source.scalar_text(items["type"][1], f"{key}: type")
        if kind not in AXIS_UNITS:
            raise source.error(items["type"][1], f"{key}: type must be rotation or translation, got '{kind}'")
        capture = self.capture(node, key, AXIS_UNITS[kind], self.AXIS_KEYS)
        if capture.unit is None:
            raise source.error(node, f"{key}: a {kind} axis needs a 'unit' "
                               f"({AXIS_UNITS[kind]} or one converting to it)")
        if "vector" not in items:
            raise source.error(node, f"{key}: 'vector' (the axis direction, 3 numbers) is missing")
        vector = source.numbers(items["vector"][1], f"{key}: vector", 3)
        if not any(vector):
            raise source.error(items["vector"][1], f"{key}: vector must not be zero")
        offset = source.numbers(items["offset"][1], f"{key}: offset", 3) if "offset" in items else (0.0, 0.0, 0.0)
        offset_unit = source.scalar_text(items["offset_unit"][1], f"{key}: offset_unit") if "offset_unit" in items \
            else "m"
        self._check_unit(items.get("offset_unit", (node, node))[1], f"{key}: offset", offset_unit, "m")
        depends_on = source.scalar_text(items["depends_on"][1], f"{key}: depends_on") if "depends_on" in items else "."
        scan = False
        if "scan" in items:
            scan = _scalar(source.scalar_text(items["scan"][1], f"{key}: scan")) is True
        triggers = self._triggers(items["triggers"][1], key, scan) if "triggers" in items else None
        return AxisMapping(group, name, kind, _three(vector), depends_on, capture, _three(offset), offset_unit, scan,
                           triggers)

    def _triggers(self, node: yaml.Node, key: str, scan: bool) -> str:
        """The position-compare device of a scan axis: a name of ``devices:`` (or a full Tango name)."""
        text = self.source.scalar_text(node, f"{key}: triggers")
        device = self.devices.get(text, text)
        if device.count("/") != 2:
            raise self.source.error(node, f"{key}: triggers '{text}' is not a device of 'devices:' (known: "
                                    f"{', '.join(sorted(self.devices)) or 'none'}) nor a domain/family/member name")
        if not scan:
            raise self.source.error(node, f"{key}: triggers needs 'scan: true' (the trigger positions are per frame)")
        return device

    def _attribute(self, node: yaml.Node, key: str) -> tuple[str, str]:
        text = self.source.scalar_text(node, f"{key}: attribute")
        device, _, attribute = text.rpartition("/")
        device = self.devices.get(device, device)
        if not attribute or device.count("/") != 2:
            raise self.source.error(node, f"{key}: attribute '{text}' must be <device alias>/<attribute> or "
                                    "domain/family/member/<attribute>")
        return device, attribute

    def _check_unit(self, node: yaml.Node, key: str, unit: str | None, dimension: str | None) -> None:
        if unit is None:
            if dimension not in (None, "dimensionless"):
                raise self.source.error(node, f"{key}: a 'unit' is needed (one that converts to {dimension})")
            return
        if dimension is None:
            raise self.source.error(node, f"{key}: this field takes no unit, got '{unit}'")
        try:
            UNITS.Quantity(1.0, unit).to(dimension)
        except (pint.errors.PintError, ValueError, AttributeError, TypeError) as error:
            raise self.source.error(node, f"{key}: unit '{unit}' does not convert to {dimension} ({error})") from None


def _check_chain(source: YamlSource, group_key: yaml.Node, axes: list[AxisMapping]) -> None:
    """Every depends_on names an axis of the group or '.', without loops, ending in one head."""
    names = {axis.name for axis in axes}
    for axis in axes:
        if axis.depends_on != "." and axis.depends_on not in names:
            raise source.error(group_key, f"{group_key.value}/{axis.name}: depends_on '{axis.depends_on}' is not an "
                               f"axis of {group_key.value} (known: {', '.join(sorted(names))}) nor '.'")
    parents = {axis.name: axis.depends_on for axis in axes}
    for axis in axes:
        seen, current = set(), axis.name
        while current != ".":
            if current in seen:
                raise source.error(group_key, f"{group_key.value}: the depends_on chain through '{axis.name}' loops")
            seen.add(current)
            current = parents[current]
    heads = [name for name in names if name not in set(parents.values())]
    if axes and len(heads) != 1:
        raise source.error(group_key, f"{group_key.value}: the axes must form one chain; these axes are not "
                           f"depended on by any other: {', '.join(sorted(heads))}")


def _scalar(text: str) -> object:
    """A YAML scalar's natural value: 3 -> int, 0.5 -> float, true -> bool, anything else -> text."""
    value = yaml.safe_load(text)
    return value if isinstance(value, int | float | bool) else text


def convert(value, unit: str | None, target: str):
    """``value`` (a number or an array) in ``unit`` expressed in ``target``."""
    if unit is None:
        return value
    return UNITS.Quantity(value, unit).to(target).magnitude


def _three(numbers: tuple[float, ...]) -> tuple[float, float, float]:
    """A vector or offset, which ``YamlSource.numbers`` read as exactly three numbers."""
    x, y, z = numbers
    return x, y, z
