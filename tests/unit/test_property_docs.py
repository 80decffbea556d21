"""Jive's server wizard shows each property's description and default: every property of every
photonflow class has a description, and a mandatory one says so (pytango shows a default of None)."""

from __future__ import annotations

import importlib

import pytest

from photonflow.servers import SERVERS

CLASSES = sorted({(tango_class, module) for classes in SERVERS.values() for tango_class, module in classes.items()})


def properties_of(tango_class: str, module: str) -> dict[str, list]:
    """{name: [type, doc, default, mandatory]}: what the Tango class gives Jive (no server started)."""
    device_class = getattr(importlib.import_module(module), tango_class)
    return device_class.TangoClassClass.device_property_list


@pytest.mark.parametrize("tango_class, module", CLASSES, ids=[c for c, _ in CLASSES])
def test_every_property_has_a_description_and_mandatory_ones_say_so(tango_class, module):
    properties = properties_of(tango_class, module)
    assert properties, f"{tango_class} has no device property"
    undocumented = sorted(name for name, (_, doc, *_) in properties.items() if not (doc or "").strip())
    assert undocumented == [], f"{tango_class}: properties without a description: {undocumented}"
    unsaid = sorted(name for name, (_, doc, _, mandatory) in properties.items()
                    if mandatory and "mandatory" not in doc.lower())
    assert unsaid == [], f"{tango_class}: mandatory properties whose description does not say so: {unsaid}"


def test_the_walk_covers_every_class_and_finds_mandatory_ones():
    assert len(CLASSES) == sum(len(classes) for classes in SERVERS.values())
    controller = properties_of("PhotonflowController", "photonflow.devices.controller")
    assert controller["Acquirer"][3] is True and controller["Acquirer"][2] is None
    assert controller["PeerTimeout"][3] is False
