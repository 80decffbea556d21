"""Reading configuration YAML so that every mistake names its file, line and key.

Shared by the deployment files and the Standardizer's mappings: an operator who mistypes a key
learns where, before anything is started or written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import yaml

from photonflow.errors import ConfigurationError

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def compose(text: str, path: str) -> yaml.Node | None:
    """The YAML node tree of ``text``, or a ConfigurationError naming the line of a syntax error."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        message = f"{where}: not valid YAML: {getattr(error, 'problem', error)}"
        context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
        if context and context_mark is not None:
            message += f" ({context} started at line {context_mark.line + 1})"
        raise ConfigurationError(message) from None


class YamlSource:
    """Turns YAML nodes into values, errors into 'file:line: key: message'."""

    def __init__(self, path: str, environment: Mapping[str, str]):
        self.path = path
        self.environment = environment

    def error(self, node: yaml.Node, message: str) -> ConfigurationError:
        """A node read from a named stream of its own (a client's overrides of a file) is reported
        under that stream's name; a node of the text (``<unicode string>``) under ``path``."""
        name = node.start_mark.name
        where = self.path if name.startswith("<") else name
        return ConfigurationError(f"{where}:{node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        keys = set()
        for key, _ in node.value:
            if key.value in keys:
                raise self.error(key, f"{what}: '{key.value}' appears twice")
            keys.add(key.value)
        return node.value

    def keyed(
        self, node: yaml.Node, what: str, allowed: set[str] | None = None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """A mapping as {key: (key node, value node)}; keys outside ``allowed`` are refused."""
        items = {key.value: (key, value) for key, value in self.mapping(node, what)}
        if allowed is not None:
            for name, (key, _) in items.items():
                if name not in allowed:
                    raise self.error(key, f"{what}: unknown key '{name}'; expected one of {', '.join(sorted(allowed))}")
        return items

    def scalar_text(self, node: yaml.Node, key: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{key}: expected a single value")
        return self.expand(node, node.value, key)

    def number(self, node: yaml.Node, key: str) -> float:
        text = self.scalar_text(node, key)
        try:
            return float(text)
        except ValueError:
            raise self.error(node, f"{key}: expected a number, got '{text}'") from None

    def numbers(self, node: yaml.Node, key: str, length: int) -> tuple[float, ...]:
        if not isinstance(node, yaml.SequenceNode) or len(node.value) != length:
            raise self.error(node, f"{key}: expected a list of {length} numbers")
        return tuple(self.number(item, key) for item in node.value)

    def texts(self, node: yaml.Node, key: str) -> list[str]:
        """A single value or a list of them."""
        if isinstance(node, yaml.SequenceNode):
            return [self.scalar_text(item, key) for item in node.value]
        return [self.scalar_text(node, key)]

    def expand(self, node: yaml.Node, text: str, key: str) -> str:
        def substitute(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.environment:
                return self.environment[name]
            if default is not None:
                return default
            raise self.error(node, f"{key}: environment variable {name} is not set")

        return VARIABLE.sub(substitute, text)
