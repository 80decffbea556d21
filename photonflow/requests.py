"""One layer for the JSON arguments of photonflow's commands (Configure, Arm, CheckSettings...).

A request is a frozen dataclass deriving from ``Request``: each field's annotation is its type
and ``value(...)`` declares its limits, its JSON word (when the field's name differs) and what it
is for. ``parse`` turns a command's JSON text into the request, or raises ConfigurationError
naming the key and what to do; ``json_schema`` gives the same declaration as JSON Schema, which
docs/commands/ publishes (``python -m photonflow.commands`` writes it). Checks that involve
several fields (a period of at least the exposure) are the request's ``check``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from typing import Any, ClassVar

from photonflow.errors import ConfigurationError

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a request field accepts beyond its type."""

    doc: str = ""  # what the value is for, in the operator's words
    key: str | None = None  # the JSON word, when it is not the field's name
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # more than 0
    span: bool = False  # say the minimum and maximum together: "must be 0 to 9223372036854775807"
    unit: str = ""  # e.g. "seconds": "must be a finite number of seconds"
    choices: tuple[str, ...] = ()
    pattern: re.Pattern | None = None  # the whole value (each item of a list) must match
    mismatch: str = ""  # what a value not matching the pattern is not, e.g. "is not a ZeroMQ address"
    mismatch_reason: str | None = None  # the DevFailed reason of that refusal


def value(default: Any = dataclasses.MISSING, **limits: Any) -> Any:
    """A request field: its default (none: the key must be given) and its ``Limits``."""
    return dataclasses.field(default=default, metadata={"limits": Limits(**limits)})


@dataclasses.dataclass(frozen=True)
class Request:
    """Base of the command arguments; subclasses are frozen dataclasses of declared fields."""

    command: ClassVar[str] = "the command"  # its name in the messages, e.g. "Configure"
    example: ClassVar[dict[str, Any]] = {}  # what a good argument looks like
    error_reason: ClassVar[str | None] = None  # the DevFailed reason of its refusals (None: InvalidConfiguration)

    def check(self) -> None:
        """Refuse a combination of values each fine on its own; the default accepts any."""

    @classmethod
    def parse(cls, text: str):
        """The request in ``text`` (a JSON object), every value checked."""
        return cls.from_object(cls._json_object(text))

    @classmethod
    def from_object(cls, given: dict[str, Any], prefix: str = ""):
        """The request in an already decoded JSON object; a nested request's keys are named
        with ``prefix`` ("scan.step") in the refusals."""
        keys = {_key(f): f for f in dataclasses.fields(cls)}
        unknown = sorted(given.keys() - keys.keys())
        if unknown:
            raise ConfigurationError(
                f"unknown key(s) {', '.join(prefix + k for k in unknown)}; allowed keys are "
                f"{', '.join(prefix + k for k in keys)}",
                reason="UnknownConfigurationKey",
            )
        hints = typing.get_type_hints(cls)
        values = {}
        for key, field in keys.items():
            if key in given:
                values[field.name] = cls._checked(prefix + key, given[key], hints[field.name], _limits(field))
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                doc = _limits(field).doc
                cls._refuse(f"missing key '{prefix}{key}'" + (f": give {doc}" if doc else ""))
        request = cls(**values)
        request.check()
        return request

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The request as JSON Schema (draft 2020-12): types, limits, defaults, no other keys."""
        hints = typing.get_type_hints(cls)
        properties, required = {}, []
        for field in dataclasses.fields(cls):
            schema = _schema_of(hints[field.name], _limits(field))
            if field.default is dataclasses.MISSING:
                required.append(_key(field))
            elif field.default is not None:
                schema["default"] = field.default
            properties[_key(field)] = schema
        return {
            "$schema": JSON_SCHEMA_DIALECT,
            "title": cls.command,
            "description": " ".join((cls.__doc__ or "").split()),
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
            "examples": [cls.example],
        }

    @classmethod
    def _json_object(cls, text: str) -> dict:
        return json_object(text, cls.command, cls.example, cls.error_reason)

    @classmethod
    def _checked(cls, key: str, given: Any, kind: Any, limits: Limits) -> Any:
        """``given`` as the field's type, within its limits; ConfigurationError saying what to give."""
        optional = type(None) in typing.get_args(kind)
        if optional:
            if given is None:
                return None
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        if typing.get_origin(kind) is tuple:  # one or several: a string, or a list of them
            items = [given] if isinstance(given, str) else given
            if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
                cls._refuse(f"'{key}' must be {_phrase(kind, limits, optional)}, got {given!r}")
            for item in items:
                cls._within(key, item, limits)
            return tuple(items)
        if _is_request(kind):  # a group of settings of its own, e.g. Configure's "scan"
            if not isinstance(given, dict):
                cls._refuse(f"'{key}' must be a JSON object such as {json.dumps(kind.example)}, got {given!r:.80}")
            return kind.from_object(given, prefix=f"{key}.")
        accepted = isinstance(given, _ACCEPTED[kind])  # kept apart: it would narrow ``given`` to ``object``
        if isinstance(given, bool) != (kind is bool) or not accepted:
            cls._refuse(f"'{key}' must be {_phrase(kind, limits, optional)}, got {given!r}")
        if kind is float:
            if not math.isfinite(given):
                cls._refuse(f"'{key}' must be a finite number{_of(limits)}, got {given}")
            given = float(given)
        cls._within(key, given, limits)
        return given

    @classmethod
    def _within(cls, key: str, given: Any, limits: Limits) -> None:
        low, high = limits.minimum, limits.maximum
        if limits.span and not low <= given <= high:
            cls._refuse(f"'{key}' must be {low} to {high}, got {given}")
        if low is not None and given < low:
            cls._refuse(f"'{key}' must be at least {low}{_of(limits, ' ')}, got {given}")
        if high is not None and given > high:
            cls._refuse(f"'{key}' must be at most {high}{_of(limits, ' ')}, got {given}")
        if limits.positive and not given > 0:
            cls._refuse(f"'{key}' must be a positive number{_of(limits)}, got {given}")
        if limits.choices and given not in limits.choices:
            cls._refuse(f"'{key}' must be one of {', '.join(limits.choices)}, got {given!r}")
        if limits.pattern is not None and not limits.pattern.fullmatch(given):
            raise ConfigurationError(f"'{key}' {given!r} {limits.mismatch}",
                                     reason=limits.mismatch_reason or cls.error_reason)

    @classmethod
    def _refuse(cls, message: str) -> typing.NoReturn:
        raise ConfigurationError(message, reason=cls.error_reason)


_ACCEPTED: dict[type, type | tuple[type, ...]] = {int: int, float: (int, float), str: str, bool: bool}
_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def json_object(text: str, command: str, example: dict[str, Any], reason: str | None = None) -> dict:
    """The JSON object a command was given, or a refusal showing what one looks like."""
    shown = json.dumps(example)
    try:
        given = json.loads(text)
    except (json.JSONDecodeError, RecursionError, TypeError) as error:
        detail = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ConfigurationError(f"{command} needs a JSON object such as {shown}: {detail}", reason=reason) from None
    if not isinstance(given, dict):
        raise ConfigurationError(f"{command} needs a JSON object of settings such as {shown}, got {given!r:.80}",
                                 reason=reason)
    return given


def _key(field: dataclasses.Field) -> str:
    return _limits(field).key or field.name


def _limits(field: dataclasses.Field) -> Limits:
    return field.metadata.get("limits", Limits())


def _of(limits: Limits, separator: str = " of ") -> str:
    """The unit after a number: " of seconds" ("a number of seconds") or " seconds" ("at least 1 seconds")."""
    return f"{separator}{limits.unit}" if limits.unit else ""


def _is_request(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Request)


def _phrase(kind: Any, limits: Limits, optional: bool) -> str:
    """The type as the operator reads it in a message."""
    if typing.get_origin(kind) is tuple:
        phrase = "a string or a list of strings"
    else:
        phrase = {int: "int", float: f"a number{_of(limits)}", str: "a string",
                  bool: "true or false"}[kind]
    return phrase + (" or null" if optional else "")


def _schema_of(kind: Any, limits: Limits) -> dict[str, Any]:
    optional = type(None) in typing.get_args(kind)
    if optional:
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    schema: dict[str, Any]
    if _is_request(kind):
        nested = kind.json_schema()
        schema = {name: nested[name] for name in ("type", "properties", "required", "additionalProperties")}
        if optional:
            schema = {"oneOf": [schema, {"type": "null"}]}
    elif typing.get_origin(kind) is tuple:  # the limits are each item's
        item = _schema_of(str, dataclasses.replace(limits, doc=""))
        schema = {"oneOf": [item, {"type": "array", "items": item, "minItems": 1}]}
    else:
        schema = {"type": [_JSON_TYPES[kind], "null"] if optional else _JSON_TYPES[kind]}
        for name, given in (("minimum", limits.minimum), ("maximum", limits.maximum)):
            if given is not None:
                schema[name] = given
        if limits.positive:
            schema["exclusiveMinimum"] = 0
        if limits.choices:
            schema["enum"] = list(limits.choices)
        if limits.pattern is not None:
            schema["pattern"] = f"^(?:{limits.pattern.pattern})$"
    if limits.doc:
        schema["description"] = limits.doc + (f" ({limits.unit})" if limits.unit else "")
    return schema
