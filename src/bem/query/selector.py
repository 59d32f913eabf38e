"""IfcOpenShell selector syntax -> a small AST.

Parsing uses IfcOpenShell's own grammar (``ifcopenshell.util.selector.filter_elements_grammar``)
so that BEM accepts exactly the queries ``filter_elements`` accepts; :mod:`bem.query.compile`
turns the AST into SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import lark
from ifcopenshell.util.selector import filter_elements_grammar

MAX_QUERY_LENGTH = 4000
MAX_FACETS = 64
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

Operator = Literal["=", "!=", ">", ">=", "<", "<=", "*=", "!*="]
_OPERATORS = {
    "equals": "=",
    "morethanequalto": ">=",
    "lessthanequalto": "<=",
    "morethan": ">",
    "lessthan": "<",
    "contains": "*=",
}


class Special:
    """``NULL``, ``TRUE`` and ``FALSE``: compared by identity, as IfcOpenShell does."""

    def __init__(self, value: bool | None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return {None: "NULL", True: "TRUE", False: "FALSE"}[self.value]


Value = str | re.Pattern[str] | Special
Key = str | re.Pattern[str]


@dataclass(frozen=True)
class Comparison:
    op: Operator
    value: Value

    @property
    def negated(self) -> bool:
        return self.op.startswith("!")

    @property
    def operator(self) -> str:
        """The operator without its negation."""
        return self.op.lstrip("!")


@dataclass(frozen=True)
class Instance:
    negated: bool
    global_id: str


@dataclass(frozen=True)
class Entity:
    negated: bool
    ifc_class: str


@dataclass(frozen=True)
class Filter:
    """A facet that narrows the current set: attribute, type, material, property,
    classification, location, group or parent."""

    kind: str
    comparison: Comparison
    name: str | None = None  # attribute name
    pset: Key | None = None
    prop: Key | None = None


Facet = Instance | Entity | Filter


@dataclass(frozen=True)
class Selector:
    """``facet_lists`` are united; the facets of one list apply left to right."""

    text: str
    facet_lists: tuple[tuple[Facet, ...], ...]


class SelectorError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


def _regex(source: str, position: int) -> re.Pattern[str]:
    try:
        return re.compile(source)
    except re.error as exc:
        raise SelectorError(f"invalid regular expression /{source}/: {exc}", position) from exc


def _position(node: lark.Tree[lark.Token]) -> int:
    """Where the first token of ``node`` starts."""
    for token in node.scan_values(lambda v: isinstance(v, lark.Token)):
        return int(token.start_pos or 0)
    return 0


def _text(node: lark.Tree[lark.Token]) -> Value:
    """A ``value``/``pset``/``prop``/``keys`` node, as IfcOpenShell's transformer reads it."""
    inner = node.children[0]
    assert isinstance(inner, lark.Tree)
    if inner.data == "special":
        kind = inner.children[0]
        assert isinstance(kind, lark.Tree)
        return Special({"null": None, "true": True, "false": False}[str(kind.data)])
    token = inner.children[0]
    assert isinstance(token, lark.Token)
    raw = str(token.value)
    if inner.data == "quoted_string":
        return raw[1:-1].replace('\\"', '"')
    if inner.data == "regex_string":
        return _regex(raw, token.start_pos or 0)
    return raw


def _comparison(node: lark.Tree[lark.Token], value: lark.Tree[lark.Token]) -> Comparison:
    parts = [str(c.data) for c in node.children if isinstance(c, lark.Tree)]
    negated = parts[0] == "not"
    op = ("!" if negated else "") + _OPERATORS[parts[-1]]
    return Comparison(op=op, value=_text(value))  # type: ignore[arg-type]


def _facet(node: lark.Tree[lark.Token]) -> Facet:
    kind = str(node.data)
    children = [c for c in node.children if isinstance(c, lark.Tree)]
    if kind in ("instance", "entity"):
        negated = children[0].data == "not"
        token = children[-1].children[0]
        assert isinstance(token, lark.Token)
        if kind == "instance":
            return Instance(negated=negated, global_id=token.value)
        return Entity(negated=negated, ifc_class=token.value)
    if kind == "attribute":
        name_token = children[0].children[0]
        assert isinstance(name_token, lark.Token)
        return Filter("attribute", _comparison(children[1], children[2]), name=name_token.value)
    if kind == "property":
        pset, prop = (_text(children[0]), _text(children[1]))
        assert not isinstance(pset, Special) and not isinstance(prop, Special)
        return Filter("property", _comparison(children[2], children[3]), pset=pset, prop=prop)
    if kind == "query":
        raise SelectorError(
            "query: facets are not supported; use attribute, property, type, material, "
            "classification, location, group or parent facets",
            _position(node),
        )
    return Filter(kind, _comparison(children[0], children[1]))


def _parse_error(exc: lark.exceptions.LarkError, text: str) -> SelectorError:
    if isinstance(exc, lark.exceptions.UnexpectedEOF):
        return SelectorError("the selector ends too early", len(text))
    if isinstance(exc, lark.exceptions.UnexpectedInput):
        position = exc.pos_in_stream if exc.pos_in_stream is not None else len(text)
        found = text[position : position + 12] if position < len(text) else "end of input"
        return SelectorError(f"unexpected {found!r}", position)
    return SelectorError("the selector cannot be parsed", 0)


def parse(text: str) -> Selector:
    """Parse a selector; :class:`SelectorError` carries the character position of a mistake."""
    if len(text) > MAX_QUERY_LENGTH:
        raise SelectorError(f"a selector may be at most {MAX_QUERY_LENGTH} characters", 0)
    if control := _CONTROL.search(text):
        raise SelectorError("control characters are not allowed", control.start())
    try:
        tree = filter_elements_grammar.parse(text)
    except lark.exceptions.LarkError as exc:
        raise _parse_error(exc, text) from exc
    lists: list[tuple[Facet, ...]] = []
    count = 0
    for facet_list in tree.find_data("facet_list"):
        facets = []
        for facet in facet_list.children:
            assert isinstance(facet, lark.Tree)
            inner = facet.children[0]
            assert isinstance(inner, lark.Tree)
            facets.append(_facet(inner))
            count += 1
        lists.append(tuple(facets))
    if count > MAX_FACETS:
        raise SelectorError(f"a selector may have at most {MAX_FACETS} facets", 0)
    return Selector(text=text, facet_lists=tuple(lists))
