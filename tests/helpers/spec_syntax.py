"""A parser for the subset of SPEC's macro language that clients/spec/*.mac use (SPEC itself is
commercial and does not run here): ``def`` macros (commands, ``def f(a, b)`` functions), ``if``/
``else``, ``while``, ``for``, ``local``/``global``/``constant``, strings, numbers, ``$1``/``$#``
parameters, expressions with C operators, function calls, array elements, ``print``/``eprint``,
``break``/``continue``/``exit``/``return``, and command-macro calls with words as arguments.

``parse(text, path)`` returns a :class:`Script` (definitions and an AST of tuples) or raises
:class:`SpecSyntaxError` naming the file, line and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KEYWORDS = {"def", "if", "else", "while", "for", "in", "local", "global", "constant", "break", "continue",
            "exit", "return", "print", "eprint"}
OPERATORS = sorted("<<= >>= += -= *= /= %= &= |= ^= == != <= >= && || << >> ++ -- "
                   "+ - * / % = < > ! ~ & | ^ ? : ( ) [ ] { } , ;".split(), key=len, reverse=True)
TOKEN = re.compile(r"""
    (?P<nl>\n) | (?P<space>[ \t\r]+|\\\n) | (?P<comment>\#[^\n]*)
  | (?P<dq>"(?:\\.|[^"\\\n])*") | (?P<sq>'[^']*')
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<param>\$(?:\d+|\#|\*))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>""" + "|".join(re.escape(op) for op in OPERATORS) + r""")
""", re.VERBOSE)
BINARY = [("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", "<=", ">", ">="), ("<<", ">>"),
          ("+", "-"), ("*", "/", "%")]
ASSIGN = {"=", "+=", "-=", "*=", "/=", "%=", "<<=", ">>=", "&=", "|=", "^="}


class SpecSyntaxError(Exception):
    pass


@dataclass
class Token:
    kind: str
    text: str
    line: int


@dataclass
class Definition:
    name: str
    params: tuple[str, ...] | None  # None: a command macro ($1, $2...); else a macro function
    body: list
    line: int


@dataclass
class Script:
    path: str
    statements: list
    definitions: dict[str, Definition] = field(default_factory=dict)


def tokenize(text: str, path: str, first_line: int = 1) -> list[Token]:
    tokens, line, position = [], first_line, 0
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None:
            raise SpecSyntaxError(f"{path}:{line}: unexpected character {text[position]!r}")
        kind, value = match.lastgroup, match.group()
        if kind not in ("space", "comment"):
            tokens.append(Token(kind, value, line))
        line += value.count("\n")
        position = match.end()
    tokens.append(Token("eof", "", line))
    return tokens


def parse(text: str, path: str = "<spec>") -> Script:
    script = Script(path, [])
    # command macros are known by name before their use (SPEC expands them as they are read)
    commands = set(re.findall(r"^\s*def\s+([A-Za-z_]\w*)\s+'", text, re.MULTILINE))
    script.statements = _Parser(tokenize(text, path), path, script, commands).program()
    return script


class _Parser:
    def __init__(self, tokens: list[Token], path: str, script: Script, commands: set[str]):
        self.tokens, self.path, self.script, self.commands, self.at = tokens, path, script, commands, 0

    # -- helpers
    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.at + offset, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        self.at += 1
        return token

    def error(self, expected: str) -> SpecSyntaxError:
        token = self.peek()
        found = "end of file" if token.kind == "eof" else "end of line" if token.kind == "nl" else repr(token.text)
        return SpecSyntaxError(f"{self.path}:{token.line}: expected {expected}, found {found}")

    def accept(self, text: str) -> bool:
        if self.peek().text == text and self.peek().kind in ("op", "name"):
            self.at += 1
            return True
        return False

    def expect(self, text: str) -> Token:
        if not (self.peek().text == text and self.peek().kind in ("op", "name")):
            raise self.error(f"'{text}'")
        return self.next()

    def skip_newlines(self) -> None:
        while self.peek().kind == "nl" or self.peek().text == ";" and self.peek().kind == "op":
            self.at += 1

    def end_of_statement(self) -> None:
        token = self.peek()
        if token.kind in ("nl", "eof") or (token.kind == "op" and token.text in (";", "}")):
            if token.text == ";" or token.kind == "nl":
                self.at += 1
            return
        raise self.error("the end of the statement (newline or ';')")

    # -- statements
    def program(self) -> list:
        statements = []
        self.skip_newlines()
        while self.peek().kind != "eof":
            statements.append(self.statement())
            self.skip_newlines()
        return statements

    def block(self) -> tuple:
        line = self.expect("{").line
        statements = []
        self.skip_newlines()
        while not (self.peek().kind == "op" and self.peek().text == "}"):
            if self.peek().kind == "eof":
                raise SpecSyntaxError(f"{self.path}:{line}: '{{' opened here is never closed")
            statements.append(self.statement())
            self.skip_newlines()
        self.expect("}")
        return ("block", statements)

    def body(self) -> tuple:
        """The statement an if/while/for controls, on the same line or the next."""
        while self.peek().kind == "nl":
            self.at += 1
        return self.statement(nested=True)

    def statement(self, nested: bool = False):
        token = self.peek()
        if token.kind == "op" and token.text == "{":
            result = self.block()
            if not nested:
                self.end_of_statement()
            return result
        if token.kind == "name" and token.text in KEYWORDS:
            return getattr(self, f"statement_{token.text}")()
        if token.kind == "name" and token.text in self.commands and not (
                self.peek(1).kind == "op" and (self.peek(1).text in ASSIGN or self.peek(1).text in ("(", "["))):
            self.next()
            arguments = []
            while self.peek().kind not in ("nl", "eof") and not (
                    self.peek().kind == "op" and self.peek().text in (";", "}")):
                arguments.append(self.next().text)
            self.end_of_statement()
            return ("macro", token.text, arguments, token.line)
        expression = self.expression()
        self.end_of_statement()
        return ("expr", expression)

    def statement_def(self):
        line = self.next().line
        name = self.next()
        if name.kind != "name":
            raise SpecSyntaxError(f"{self.path}:{line}: def needs a macro name")
        params = None
        if self.accept("("):
            params = []
            while not self.accept(")"):
                if params:
                    self.expect(",")
                parameter = self.next()
                if parameter.kind != "name":
                    raise SpecSyntaxError(f"{self.path}:{parameter.line}: a parameter name, found {parameter.text!r}")
                params.append(parameter.text)
            params = tuple(params)
        body_token = self.next()
        if body_token.kind != "sq":
            raise SpecSyntaxError(f"{self.path}:{body_token.line}: def {name.text}: expected its body in '...'")
        body_text = body_token.text[1:-1]
        body = _Parser(tokenize(body_text, self.path, body_token.line), self.path, self.script, self.commands)
        definition = Definition(name.text, params, body.program(), line)
        if name.text in self.script.definitions:
            raise SpecSyntaxError(f"{self.path}:{line}: {name.text} is defined twice")
        self.script.definitions[name.text] = definition
        self.end_of_statement()
        return ("def", definition)

    def names(self, kind: str):
        line = self.next().line
        names = []
        while self.peek().kind == "name":
            names.append(self.next().text)
            if self.accept("["):
                self.expect("]")
            self.accept(",")
        if not names:
            raise SpecSyntaxError(f"{self.path}:{line}: {kind} needs variable names")
        self.end_of_statement()
        return (kind, names, line)

    def statement_local(self):
        return self.names("local")

    def statement_global(self):
        return self.names("global")

    def statement_constant(self):
        line = self.next().line
        name = self.next()
        if name.kind != "name":
            raise SpecSyntaxError(f"{self.path}:{line}: constant needs a name")
        value = self.expression()
        self.end_of_statement()
        return ("constant", name.text, value, line)

    def condition(self):
        self.expect("(")
        expression = self.expression()
        self.expect(")")
        return expression

    def statement_if(self):
        self.next()
        condition = self.condition()
        then = self.body()
        otherwise = None
        if then[0] == "block" and self.peek().kind == "nl" and self.peek(1).text == "else":
            self.next()  # "}" then "else" on the next line
        if self.accept("else"):
            otherwise = self.body()
            self.after_block(otherwise)
        else:
            self.after_block(then)
        return ("if", condition, then, otherwise)

    def statement_while(self):
        self.next()
        condition = self.condition()
        result = ("while", condition, self.body())
        self.after_block(result[-1])
        return result

    def statement_for(self):
        self.next()
        self.expect("(")
        if self.peek().kind == "name" and self.peek(1).text == "in":
            variable = self.next().text
            self.next()
            array = self.next().text
            self.expect(")")
            result = ("for_in", variable, array, self.body())
        else:
            parts = []
            for closing in (";", ";", ")"):
                parts.append(None if self.peek().text == closing else self.expression())
                self.expect(closing)
            result = ("for", *parts, self.body())
        self.after_block(result[-1])
        return result

    def after_block(self, body):
        """A '{...}' body leaves the end of its line to read; a simple statement read it already."""
        if body[0] == "block" and self.peek().kind != "eof" and not (
                self.peek().kind == "op" and self.peek().text == "}"):
            self.end_of_statement()

    def simple(self, kind: str, with_value: bool):
        line = self.next().line
        value = None
        if with_value and not (self.peek().kind in ("nl", "eof") or self.peek().text in (";", "}")):
            value = self.expression()
        self.end_of_statement()
        return (kind, value, line)

    def statement_break(self):
        return self.simple("break", False)

    def statement_continue(self):
        return self.simple("continue", False)

    def statement_exit(self):
        return self.simple("exit", False)

    def statement_return(self):
        return self.simple("return", True)

    def print_list(self, kind: str):
        line = self.next().line
        values = [self.expression()]
        while self.accept(","):
            values.append(self.expression())
        self.end_of_statement()
        return (kind, values, line)

    def statement_print(self):
        return self.print_list("print")

    def statement_eprint(self):
        return self.print_list("eprint")

    def statement_else(self):
        raise self.error("a statement ('else' without 'if')")

    statement_in = statement_else

    # -- expressions
    def expression(self):
        target = self.ternary()
        if self.peek().kind == "op" and self.peek().text in ASSIGN:
            operator = self.next().text
            if target[0] not in ("var", "index"):
                raise SpecSyntaxError(f"{self.path}:{self.peek().line}: cannot assign to that")
            return ("assign", operator, target, self.expression())
        return target

    def ternary(self):
        condition = self.binary(0)
        if self.accept("?"):
            then = self.expression()
            self.expect(":")
            return ("?", condition, then, self.expression())
        return condition

    def binary(self, level: int):
        if level == len(BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek().kind == "op" and self.peek().text in BINARY[level]:
            operator = self.next().text
            left = ("binary", operator, left, self.binary(level + 1))
        return left

    def unary(self):
        if self.peek().kind == "op" and self.peek().text in ("!", "-", "+", "~", "++", "--"):
            return ("unary", self.next().text, self.unary())
        return self.postfix()

    def postfix(self):
        value = self.primary()
        while True:
            if self.peek().kind == "op" and self.peek().text == "[":
                self.next()
                value = ("index", value, self.expression())
                self.expect("]")
            elif self.peek().kind == "op" and self.peek().text in ("++", "--"):
                value = ("postfix", self.next().text, value)
            else:
                return value

    def primary(self):
        token = self.peek()
        if token.kind == "number":
            self.next()
            return ("number", token.text)
        if token.kind == "dq":
            self.next()
            return ("string", token.text[1:-1], token.line)
        if token.kind == "param":
            self.next()
            return ("param", token.text)
        if token.kind == "name" and token.text not in KEYWORDS:
            self.next()
            if self.accept("("):
                arguments = []
                while not self.accept(")"):
                    if arguments:
                        self.expect(",")
                    arguments.append(self.expression())
                return ("call", token.text, arguments, token.line)
            return ("var", token.text)
        if token.kind == "op" and token.text == "(":
            self.next()
            value = self.expression()
            self.expect(")")
            return value
        raise self.error("a value")


def walk(node):
    """Every tuple node under ``node`` (statements, expressions, definitions' bodies), depth first."""
    if isinstance(node, Definition):
        for statement in node.body:
            yield from walk(statement)
    elif isinstance(node, tuple):
        yield node
        for part in node:
            yield from walk(part)
    elif isinstance(node, list):
        for part in node:
            yield from walk(part)
