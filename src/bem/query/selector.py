"""IfcOpenShell selector syntax -> a small AST.

Parsing uses IfcOpenShell's own grammar (``ifcopenshell.util.selector.filter_elements_grammar``)
so that BEM accepts every query ``filter_elements`` accepts, extended by one alternative: a
decimal with a unit (``2.5m2``), which IfcOpenShell's grammar cannot read (an unquoted value
has no dot); ``3000mm`` already reads as an unquoted value. :mod:`bem.query.compile` turns the
AST into SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import lark
from ifcopenshell.util.selector import filter_elements_grammar as ifcopenshell_grammar

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


# Unit-suffixed literals (``3000mm``, ``2.5m2``, ``10ft``) -> the SI factor. Element values
# are stored in SI (docs/imports.md), so a literal in the file's units must say its unit.
UNITS = {
    **{"mm": 1e-3, "cm": 1e-2, "dm": 0.1, "m": 1.0, "km": 1e3},
    **{"in": 0.0254, "ft": 0.3048, "yd": 0.9144},
    **{"mm2": 1e-6, "cm2": 1e-4, "m2": 1.0, "ha": 1e4, "km2": 1e6},
    **{"in2": 0.0254**2, "ft2": 0.3048**2, "yd2": 0.9144**2},
    **{"mm3": 1e-9, "cm3": 1e-6, "l": 1e-3, "m3": 1.0, "in3": 0.0254**3, "ft3": 0.3048**3},
    **{"yd3": 0.9144**3, "g": 1e-3, "kg": 1.0, "t": 1e3, "lb": 0.45359237},
}
_WITH_UNIT = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]+[23²³]?)$")


_VALUE_RULE = "value: special | quoted_string | regex_string | decimal_string | unquoted_string"


def _grammar() -> lark.Lark:
    source = ifcopenshell_grammar.source_grammar
    if _VALUE_RULE not in source:  # IfcOpenShell changed its grammar: look again
        raise RuntimeError("IfcOpenShell's selector grammar has no value rule as expected")
    extended = source.replace(
        _VALUE_RULE,
        _VALUE_RULE.replace("decimal_string", "measure_string | decimal_string")
        + "\n    measure_string: /[+-]?(\\d+\\.\\d*|\\.\\d+)([eE][+-]?\\d+)?[A-Za-z]+[23]?/",
    )
    options = ifcopenshell_grammar.options
    return lark.Lark(extended, parser=options.parser, lexer=options.lexer)


filter_elements_grammar = _grammar()


@dataclass(frozen=True)
class Measure:
    """A number with a unit, as written (``3000mm``) and in SI (``3.0``)."""

    text: str
    si: float


Value = str | re.Pattern[str] | Special | Measure
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


def _measure(value: Value, operator: str, position: int, *, decimal: bool) -> Value:
    """An unquoted number with a known unit is a :class:`Measure`. With an unknown unit it
    stays text for ``=``, ``!=`` and ``*=`` (``Name=3D``, ``60min``), and is an error for an
    ordering operator, where text would only compare equal, or a ``decimal`` one (``2.5xy``,
    which is no value in IfcOpenShell's grammar); quoting keeps text text."""
    if not isinstance(value, str) or (found := _WITH_UNIT.match(value)) is None:
        return value
    try:
        float(value)  # 1e2 is a number, not a unit "e2"
        return value
    except ValueError:
        pass
    number, unit = found.groups()
    factor = UNITS.get(unit.lower().replace("²", "2").replace("³", "3"))
    if factor is not None:
        return Measure(text=value, si=float(number) * factor)
    if decimal or operator in (">", ">=", "<", "<="):
        raise SelectorError(
            f"unknown unit {unit!r} in {value}; units: {', '.join(UNITS)} "
            '(quote the value, "like this", to compare it as text)',
            position,
        )
    return value


def _comparison(node: lark.Tree[lark.Token], value: lark.Tree[lark.Token]) -> Comparison:
    parts = [str(c.data) for c in node.children if isinstance(c, lark.Tree)]
    negated = parts[0] == "not"
    operator = _OPERATORS[parts[-1]]
    op = ("!" if negated else "") + operator
    target = _text(value)
    inner = value.children[0]
    if isinstance(inner, lark.Tree) and inner.data in ("unquoted_string", "measure_string"):
        decimal = inner.data == "measure_string"
        target = _measure(target, operator, _position(value), decimal=decimal)
    return Comparison(op=op, value=target)  # type: ignore[arg-type]


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
        assert isinstance(pset, str | re.Pattern) and isinstance(prop, str | re.Pattern)
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
