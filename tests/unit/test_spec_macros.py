"""The SPEC macros (clients/spec/*.mac) parse, call only what exists, and name only devices,
commands and attributes that photonflow's Tango classes define, with the argument types used.
SPEC does not run here: tests/helpers/spec_syntax.py parses the subset of SPEC the macros use."""

from __future__ import annotations

import importlib

import pytest
import tango

from photonflow.deployment import load_deployment_file
from photonflow.servers import SERVERS
from tests.helpers.paths import DEMO_CONFIG, REPOSITORY
from tests.helpers.spec_syntax import SpecSyntaxError, parse, walk

MACRO_FILES = sorted((REPOSITORY / "clients" / "spec").glob("*.mac"))
# SPEC's built-in functions the macros may call
BUILTINS = {"tango_io", "tango_get", "tango_put", "sprintf", "printf", "eprintf", "index", "substr", "length",
            "time", "sleep", "cdef", "eval"}
# commands every Tango device has
EVERY_DEVICE = {"State": (tango.CmdArgType.DevVoid, tango.CmdArgType.DevState),
                "Status": (tango.CmdArgType.DevVoid, tango.CmdArgType.DevString),
                "Init": (tango.CmdArgType.DevVoid, tango.CmdArgType.DevVoid)}
STRING_FUNCTIONS = {"sprintf", "substr"}
NUMBER_FUNCTIONS = {"index", "length", "time"}


def scripts():
    return [parse(path.read_text(), path.name) for path in MACRO_FILES]


def test_there_are_macro_files():
    assert [path.name for path in MACRO_FILES] == ["photonflow.mac"]


@pytest.mark.parametrize("path", MACRO_FILES, ids=lambda p: p.name)
def test_every_macro_file_parses(path):
    script = parse(path.read_text(), path.name)
    assert {"pfsetup", "pfconfig", "pfstart", "pfwait", "pfreport", "pfseries", "pfexperiment",
            "pfstructure"} <= set(script.definitions)


@pytest.mark.parametrize("text, complaint", [
    ("def f '{\n  if (x {\n}'\n", "x.mac:2: expected ')', found '{'"),
    ("def f '{\n  x = 1\n'\n", "x.mac:1: '{' opened here is never closed"),
    ("def f '{ x = (1 + }'\n", "x.mac:1: expected a value, found '}'"),
    ("x = 1 2\n", "x.mac:1: expected the end of the statement (newline or ';'), found '2'"),
    ("def f {x}\n", "x.mac:1: def f: expected its body in '...'"),
    ("else x = 1\n", "x.mac:1: expected a statement ('else' without 'if'), found 'else'"),
    ('print "unterminated\n', "x.mac:1: unexpected character '\"'"),
])
def test_the_parser_refuses_what_spec_would(text, complaint):
    with pytest.raises(SpecSyntaxError) as caught:
        parse(text, "x.mac")
    assert complaint in str(caught.value)


def test_the_parser_reads_spec_constructs():
    script = parse('global A B\nconstant ON 0\ndef go \'{\n  local i\n  for (i = 0; i < $1; i++) {\n'
                   '    if (i == 2) break; else continue\n  }\n  while (A) sleep(0.1)\n  other 1 "two"\n}\'\n'
                   "def other '{ print $1, $2 }'\ndef f(a, b) '{ return(a ? b : -a) }'\n", "y.mac")
    assert set(script.definitions) == {"go", "other", "f"}
    assert script.definitions["f"].params == ("a", "b") and script.definitions["go"].params is None
    macros = [node for node in walk(script.definitions["go"]) if node[0] == "macro"]
    assert macros == [("macro", "other", ["1", '"two"'], 9)]


def test_every_call_is_a_spec_builtin_or_a_macro_of_the_files():
    for script in scripts():
        functions = {name for name, d in script.definitions.items() if d.params is not None}
        commands = {name for name, d in script.definitions.items() if d.params is None}
        calls = {node[1] for node in walk(script.statements) if node[0] == "call"}
        macros = {node[1] for node in walk(script.statements) if node[0] == "macro"}
        assert calls - BUILTINS - functions == set(), script.path
        assert macros <= commands, script.path
        for name, definition in script.definitions.items():
            for node in walk(definition):
                if node[0] == "call" and node[1] in functions:
                    assert len(node[2]) == len(script.definitions[node[1]].params), f"{name} calls {node[1]}"


# -- what the macros name on the devices -------------------------------------------------------

def tango_class(name: str):
    for classes in SERVERS.values():
        if name in classes:
            return getattr(importlib.import_module(classes[name]), name)
    raise KeyError(name)


def commands_of(device_class) -> dict[str, tuple]:
    found = dict(EVERY_DEVICE)
    found.update({name: (spec[0][0], spec[1][0]) for name, spec in device_class.TangoClassClass.cmd_list.items()})
    return found


def attributes_of(device_class) -> dict[str, object]:
    return dict(device_class.TangoClassClass.attr_list)


class Kinds:
    """What kind of value (string or number) an expression of a script gives."""

    def __init__(self, script):
        self.script = script

    def of(self, expression, definition, seen=()) -> set[str]:
        kind = expression[0]
        if kind == "string":
            return {"string"}
        if kind == "number":
            return {"number"}
        if kind == "call":
            name = expression[1]
            if name in STRING_FUNCTIONS:
                return {"string"}
            if name in NUMBER_FUNCTIONS:
                return {"number"}
            target = self.script.definitions.get(name)
            if target is not None and target.params is not None and name not in seen:
                return set().union(*[self.of(node[1], target, (*seen, name)) for node in walk(target)
                                     if node[0] == "return" and node[1] is not None])
            return {"unknown"}
        if kind == "var" and definition is not None:
            assigned = [node[3] for node in walk(definition) if node[0] == "assign" and node[2] == expression]
            if assigned:
                return set().union(*[self.of(value, definition, seen) for value in assigned])
            if definition.params and expression[1] in definition.params:  # from the call sites' arguments
                position = definition.params.index(expression[1])
                return set().union(*[self.of(node[2][position], caller, seen)
                                     for caller in self.script.definitions.values() for node in walk(caller)
                                     if node[0] == "call" and node[1] == definition.name], set())
        return {"unknown"}


def device_variables(script) -> dict[str, str]:
    """The device-name globals and the name each defaults to (VAR = "a/b/c" at the top level)."""
    return {node[2][1]: node[3][1] for node in walk(script.statements)
            if node[0] == "assign" and node[2][0] == "var" and node[3][0] == "string" and node[3][1].count("/") == 2}


def test_every_device_command_and_attribute_named_exists_with_the_types_used():
    deployment = load_deployment_file(DEMO_CONFIG, {"PHOTONFLOW_DATA_ROOT": "/data", "PHOTONFLOW_CONFIG_DIR": "/c"})
    classes = {device.name: device.tango_class for server in deployment.servers for device in server.devices}
    checked = []
    for script in scripts():
        variables = device_variables(script)
        assert set(variables) >= {"PF_CONTROLLER", "PF_DATAMANAGER"}
        for variable, device in variables.items():
            assert device in classes, f"{variable} defaults to {device}, which config/demo.yaml does not define"
        kinds = Kinds(script)
        for definition in script.definitions.values():
            for node in walk(definition):
                if node[0] != "call" or node[1] not in ("tango_io", "tango_get", "tango_put"):
                    continue
                function, arguments, line = node[1], node[2], node[3]
                where = f"{script.path}:{line} {function}"
                assert arguments[1][0] == "string", f"{where}: the command or attribute must be a literal name"
                member = arguments[1][1]
                device = arguments[0]
                if device[0] == "var" and device[1] in variables:
                    device_class = tango_class(classes[variables[device[1]]])
                else:  # a macro function's parameter: only what every device has
                    assert function == "tango_io" and member in EVERY_DEVICE, f"{where}: {member} on any device?"
                    checked.append(("any", member))
                    continue
                if function == "tango_io":
                    commands = commands_of(device_class)
                    assert member in commands, f"{where}: {device_class.__name__} has no command {member}"
                    argument_type = commands[member][0]
                    if argument_type == tango.CmdArgType.DevVoid:
                        assert len(arguments) == 2, f"{where}: {member} takes no argument"
                    else:
                        assert len(arguments) == 3, f"{where}: {member} takes one argument"
                        wanted = "string" if argument_type == tango.CmdArgType.DevString else "number"
                        assert argument_type in (tango.CmdArgType.DevString, tango.CmdArgType.DevLong,
                                                 tango.CmdArgType.DevDouble), f"{where}: SPEC cannot pass {argument_type}"
                        assert kinds.of(arguments[2], definition) == {wanted}, f"{where}: {member} takes a {wanted}"
                else:
                    attributes = attributes_of(device_class)
                    assert member in attributes, f"{where}: {device_class.__name__} has no attribute {member}"
                    if function == "tango_put":
                        assert attributes[member].attr_write != tango.AttrWriteType.READ, f"{where}: read-only"
                checked.append((device_class.__name__, member))
    assert ("PhotonflowController", "Configure") in checked and ("PhotonflowDataManager", "NextAcquisition") in checked
    assert ("PhotonflowController", "Progress") in checked and ("PhotonflowDataManager", "LastRun") in checked
