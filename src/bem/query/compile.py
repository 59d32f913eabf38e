"""Selector AST -> one SQL predicate over a version's elements, on PostgreSQL and SQLite.

The predicate reads ``ve`` (``version_elements``) and ``p`` (``element_payloads``). User text
only ever reaches the database as bound parameters; the SQL around it is fixed.

Semantics follow ``ifcopenshell.util.selector`` facet by facet (see docs/query.md), including
its quirks: a value compares by the *stored* value's JSON type (numbers numerically, strings
as strings, booleans only to ``TRUE``/``FALSE`` or integers), ``!`` negates the whole facet, a
list matches when any item does, and material/classification/location/group facets negate
"any item matches" for every operator but ``=``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from bem.query.dialects import Dialect, Json, dialect_of
from bem.query.selector import (
    Comparison,
    Entity,
    Facet,
    Filter,
    Instance,
    Measure,
    Selector,
    Special,
)
from bem.versions.classes import descendants

ATTRIBUTES = {
    "Name": "name",
    "Description": "description",
    "ObjectType": "object_type",
    "Tag": "tag",
    "PredefinedType": "predefined_type",
    "GlobalId": None,
}
_ATTRIBUTE_NAME = re.compile(r"[A-Z][A-Za-z0-9_]{0,63}")  # embedded in a JSON path: no quotes
# Edges whose target is the "parent" in IfcOpenShell's decomposition (get_decomposition).
DECOMPOSITION_KINDS = ("contained_in", "aggregated_by", "voids", "fills")
TRUE, FALSE = "(1=1)", "(1=0)"


class UnsupportedFacet(ValueError):
    pass


def compare_none(comparison: Comparison) -> bool:
    """IfcOpenShell's ``compare(None, op, value)``, which is known before the query runs."""
    value = comparison.value
    result = isinstance(value, Special) and value.value is None
    return not result if comparison.negated else result


def _as_float(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return None if number != number else number  # NaN never compares equal


def _as_int(text: str) -> int | None:
    """The integer a value reads as, clamped to a BIGINT: it is only compared with a boolean's
    0 or 1, which clamping does not change (a wider one made the database refuse the query)."""
    try:
        number = int(text)
    except ValueError:
        return None
    return max(-(2**63), min(number, 2**63 - 1))


@dataclass
class Compiler:
    dialect: str  # SQLAlchemy's name: postgresql or sqlite
    schema: str | None = None  # the version's IFC schema; None pools every schema's classes
    params: dict[str, Any] = field(default_factory=dict)
    _names: itertools.count[int] = field(default_factory=itertools.count)
    sql: Dialect = field(init=False)

    def __post_init__(self) -> None:
        self.sql = dialect_of(self.dialect)

    def param(self, value: Any) -> str:
        name = f"bq{next(self._names)}"
        self.params[name] = value
        return f":{name}"

    def alias(self, stem: str) -> str:
        return f"{stem}{next(self._names)}"

    # JSON access -----------------------------------------------------------------------
    def field(self, doc: str, *keys: str) -> Json:
        """A fixed path into a document column (keys are BEM's own field names)."""
        return self.sql.field(doc, *keys)

    def text_column(self, column: str) -> Json:
        return self.sql.text_column(column)

    def each(self, alias: str, container: Json, *, objects: bool = False) -> tuple[str, Json]:
        """A FROM item over an array's items (or an object's values); ``key(alias)`` is the
        key."""
        return self.sql.each(alias, container, objects=objects)

    def key(self, alias: str) -> str:
        return self.sql.key(alias)

    def regex(self, subject: str, pattern: re.Pattern[str]) -> str:
        return self.sql.matches(subject, self.param(f"^(?:{pattern.pattern})"))

    def _is(self, value: Json, kind: str) -> str:
        """kind: string, number, boolean, true, false, null, array."""
        return self.sql.is_(value, kind)

    def _scalar(self, value: Json, operator: str, target: Any) -> str:
        """IfcOpenShell's ``compare`` for one non-list value and an operator without ``!``."""
        if isinstance(target, Special):
            if target.value is None:
                return f"({self.sql.missing(value)} OR {self._is(value, 'null')})"
            return self._is(value, "true" if target.value else "false")
        if isinstance(target, re.Pattern):
            return f"({self._is(value, 'string')} AND {self.regex(self.sql.text(value), target)})"
        sql_op = {">=": ">=", "<=": "<=", ">": ">", "<": "<"}.get(operator, "=")
        if isinstance(target, Measure):
            return self._measure(value, operator, sql_op, target)
        branches = []
        number = _as_float(target)
        if number is not None:
            check = f"{self.sql.number(value)} {sql_op} {self.param(number)}"
            branches.append(self.sql.numeric(value, check))
        integer = _as_int(target)
        if integer is not None:
            flag = f"(CASE WHEN {self._is(value, 'true')} THEN 1 ELSE 0 END)"
            bound = self.param(integer)
            branches.append(f"({self._is(value, 'boolean')} AND {flag} {sql_op} {bound})")
        text = self.param(target)
        if operator == "*=":
            check = f"{self.sql.position}({self.sql.text(value)}, {text}) > 0"
        else:
            check = f"{self.sql.text(value)} = {text}"
        branches.append(f"({self._is(value, 'string')} AND {check})")
        return "(" + " OR ".join(branches) + ")"

    def _measure(self, value: Json, operator: str, sql_op: str, target: Measure) -> str:
        """A literal with a unit compares numbers in SI (``=`` within 1e-9 of the value, as
        the conversion itself rounds) and, for ``=`` and ``*=``, strings as written."""
        number = self.sql.number(value)
        if sql_op == "=":
            check = (
                f"ABS({number} - {self.param(target.si)}) <= {self.param(abs(target.si) * 1e-9)}"
            )
        else:
            check = f"{number} {sql_op} {self.param(target.si)}"
        branches = [self.sql.numeric(value, check)]
        if operator == "*=":
            text = f"{self.sql.position}({self.sql.text(value)}, {self.param(target.text)}) > 0"
            branches.append(f"({self._is(value, 'string')} AND {text})")
        elif operator == "=":
            text = f"{self.sql.text(value)} = {self.param(target.text)}"
            branches.append(f"({self._is(value, 'string')} AND {text})")
        return "(" + " OR ".join(branches) + ")"

    def compare(self, value: Json, comparison: Comparison, *, lists: bool = False) -> str:
        """``compare(element_value, op, value)``; with ``lists``, the value may be a list
        (property values), which matches when any item does."""
        result = self._scalar(value, comparison.operator, comparison.value)
        if lists:
            alias = self.alias("li")
            source, item = self.each(alias, value)
            in_list = self._scalar(item, comparison.operator, comparison.value)
            items = f"EXISTS (SELECT 1 FROM {source} WHERE {in_list})"
            result = f"(CASE WHEN {self._is(value, 'array')} THEN {items} ELSE {result} END)"
        result = f"COALESCE({result}, {FALSE})"
        return f"(NOT {result})" if comparison.negated else result

    # Facets ------------------------------------------------------------------------------
    def facet(self, facet: Filter) -> str:
        method = getattr(self, f"_facet_{facet.kind}")
        result: str = method(facet)
        return result

    def _facet_attribute(self, facet: Filter) -> str:
        """A document field for the attributes that have one, else ``attributes.<Name>``
        (every scalar direct attribute an import stores; a missing one compares as None,
        as ``getattr(element, name, None)`` does in IfcOpenShell)."""
        name = facet.name or ""
        if name in ATTRIBUTES:
            key = ATTRIBUTES[name]
            value = self.text_column("ve.global_id") if key is None else self.field("p.doc", key)
        elif _ATTRIBUTE_NAME.fullmatch(name):
            key = "attributes"
            value = self.field("p.doc", "attributes", name)
        else:
            raise UnsupportedFacet(f"{name!r} is not an IFC attribute name")
        result = self.compare(value, facet.comparison)
        exact = self._exact(facet.comparison)
        if key == "name" and exact is not None:
            # Implied by the comparison (names are strings), and lets the name index lead.
            result = f"(p.name = {self.param(exact)} AND {result})"
        return result

    def _facet_type(self, facet: Filter) -> str:
        name = self.compare(self.field("p.doc", "type", "name"), facet.comparison)
        gid = self.compare(self.field("p.doc", "type", "global_id"), facet.comparison)
        return f"({name} OR {gid})"

    def _any_item(self, array: str, keys: tuple[str, ...], comparison: Comparison) -> str:
        alias = self.alias("it")
        source, item = self.each(alias, self.field("p.doc", array))
        checks = " OR ".join(self.compare(self.sql.member(item, k), comparison) for k in keys)
        return f"EXISTS (SELECT 1 FROM {source} WHERE {checks})"

    def _any_or_none(self, array: str, keys: tuple[str, ...], comparison: Comparison) -> str:
        """The material and classification facets: any item's fields, negated for every
        operator but ``=``; an element without items compares as None."""
        found = self._any_item(array, keys, comparison)
        if comparison.op != "=":
            found = f"(NOT {found})"
        has_items = f"({self.sql.array_length(self.field('p.doc', array))} > 0)"
        fallback = TRUE if compare_none(comparison) else FALSE
        return f"(CASE WHEN {has_items} THEN {found} ELSE {fallback} END)"

    def _facet_material(self, facet: Filter) -> str:
        return self._any_or_none("materials", ("name", "category"), facet.comparison)

    def _facet_classification(self, facet: Filter) -> str:
        return self._any_or_none("classification", ("name", "identification"), facet.comparison)

    def _facet_group(self, facet: Filter) -> str:
        equals = Comparison(op="=", value=facet.comparison.value)
        found = self._any_item("groups", ("name", "global_id"), equals)
        return found if facet.comparison.op == "=" else f"(NOT {found})"

    def _key_match(self, column: str, key: Any) -> str:
        if isinstance(key, re.Pattern):
            return self.regex(column, key)
        return f"({column} = {self.param(key)})"

    def _facet_property(self, facet: Filter) -> str:
        pset, prop, comparison = facet.pset, facet.prop, facet.comparison
        if isinstance(pset, str) and isinstance(prop, str):
            direct = self.sql.property(pset, prop, self.param)
            if direct is not None:
                return self.compare(direct, comparison, lists=True)
        candidates, matches = [], []
        for section in ("properties", "quantities"):
            ps, pr = self.alias("ps"), self.alias("pr")
            sets, pset_value = self.each(ps, self.field("p.doc", section), objects=True)
            props, value = self.each(pr, pset_value, objects=True)
            where = (
                f"{self._key_match(self.key(ps), pset)} AND {self._key_match(self.key(pr), prop)}"
            )
            if isinstance(pset, re.Pattern) and isinstance(prop, str):
                where += f" AND NOT {self._scalar(value, '=', Special(None))}"
            base = f"SELECT 1 FROM {sets} CROSS JOIN {props} WHERE {where}"
            candidates.append(f"EXISTS ({base})")
            matches.append(f"EXISTS ({base} AND {self.compare(value, comparison, lists=True)})")
        fallback = TRUE if compare_none(comparison) else FALSE
        return (
            f"(CASE WHEN ({' OR '.join(candidates)}) THEN ({' OR '.join(matches)}) "
            f"ELSE {fallback} END)"
        )

    @staticmethod
    def _exact(comparison: Comparison) -> str | None:
        """The string a plain ``=`` comparison needs, when an index can look it up."""
        if comparison.op == "=" and isinstance(comparison.value, str):
            return comparison.value
        return None

    def _node_matches(self, alias_ve: str, alias_p: str, comparison: Comparison) -> str:
        name = self.compare(self.field(f"{alias_p}.doc", "name"), comparison)
        gid = self.compare(self.text_column(f"{alias_ve}.global_id"), comparison)
        return f"({name} OR {gid})"

    def _version_elements(self, alias_ve: str, alias_p: str) -> str:
        return (
            f"version_elements AS {alias_ve} JOIN element_payloads AS {alias_p} "
            f"ON {alias_p}.hash = {alias_ve}.payload_hash"
        )

    def _facet_location(self, facet: Filter) -> str:
        """The element's container (or, without one, its aggregate) or any aggregate above
        it, up to but excluding the IfcProject, matches by Name or GlobalId."""
        comparison = facet.comparison
        equals = Comparison(op="=", value=comparison.value)
        v, tree = ":bem_version", self.alias("tree")
        ve2, p2 = self.alias("ve"), self.alias("p")
        rel = self.alias("rel")
        exact = self._exact(equals)
        if exact is not None:  # two indexed lookups (by name, by GlobalId) instead of a scan
            ve3, p3 = self.alias("ve"), self.alias("p")
            anchor = (
                f"SELECT {ve2}.global_id FROM {self._version_elements(ve2, p2)} "
                f"WHERE {ve2}.version_id = {v} AND {p2}.ifc_class <> 'IfcProject' "
                f"AND {p2}.name = {self.param(exact)} "
                f"UNION SELECT {ve3}.global_id FROM {self._version_elements(ve3, p3)} "
                f"WHERE {ve3}.version_id = {v} AND {p3}.ifc_class <> 'IfcProject' "
                f"AND {ve3}.global_id = {self.param(exact)}"
            )
        else:
            anchor = (
                f"SELECT {ve2}.global_id FROM {self._version_elements(ve2, p2)} "
                f"WHERE {ve2}.version_id = {v} AND {p2}.ifc_class <> 'IfcProject' "
                f"AND {self._node_matches(ve2, p2, equals)}"
            )
        descend = (
            f"SELECT {rel}.source FROM relations AS {rel} JOIN {tree} ON {rel}.target = {tree}.gid "
            f"WHERE {rel}.version_id = {v} AND {rel}.kind = 'aggregated_by'"
        )
        recursive = f"WITH RECURSIVE {tree}(gid) AS ({anchor} UNION {descend})"
        if comparison.op == "=" and not compare_none(comparison):
            return self._located_in(recursive, tree)  # no fallback to honour: the indexed form
        subtree = f"{recursive} SELECT gid FROM {tree}"
        container = self.field("p.doc", "container", "global_id")
        parent = self.field("p.doc", "parent")
        parent_gid = self.field("p.doc", "parent", "global_id")
        parent_class = self.field("p.doc", "parent", "ifc_class")
        at = self.sql.location(container, parent, parent_gid, parent_class)
        empty_tree = f"({at.no_container} AND ({at.parent_missing} OR {at.parent_is_project}))"
        found = f"({at.start} IN ({subtree}))"
        if comparison.op != "=":  # any other operator means "no item matches" (IfcOpenShell)
            found = f"(NOT {found})"
        fallback = TRUE if compare_none(comparison) else FALSE
        return f"(CASE WHEN {empty_tree} THEN {fallback} ELSE COALESCE({found}, {FALSE}) END)"

    def _located_in(self, recursive: str, tree: str) -> str:
        """``location=``: the element's containment edge points into the subtree, or, with no
        containment edge, its aggregation edge does. Found through the relations index from
        the (small) subtree instead of reading every element's document (``in_tree``)."""
        v = ":bem_version"
        rel, other = self.alias("rel"), self.alias("rel")
        members = self.sql.in_tree(tree)
        return (
            f"(ve.global_id IN ({recursive} SELECT {rel}.source FROM relations AS {rel} "
            f"WHERE {rel}.version_id = {v} AND {rel}.target {members} "
            f"AND ({rel}.kind = 'contained_in' OR ({rel}.kind = 'aggregated_by' AND NOT EXISTS ("
            f"SELECT 1 FROM relations AS {other} WHERE {other}.version_id = {v} "
            f"AND {other}.source = {rel}.source AND {other}.kind = 'contained_in')))))"
        )

    def _facet_parent(self, facet: Filter) -> str:
        """Parents (relating objects of aggregation, containment, voids and fills) matching by
        Name or GlobalId, and everything they decompose into, recursively."""
        v, tree = ":bem_version", self.alias("tree")
        ve2, p2, rel, rel2 = self.alias("ve"), self.alias("p"), self.alias("rel"), self.alias("rel")
        kinds = ", ".join(f"'{k}'" for k in DECOMPOSITION_KINDS)
        name = self.compare(self.field(f"{p2}.doc", "name"), facet.comparison)
        gid = self.compare(self.text_column(f"{rel}.target"), facet.comparison)
        anchor = (
            f"SELECT DISTINCT {rel}.target FROM relations AS {rel} "
            f"LEFT JOIN version_elements AS {ve2} "
            f"ON {ve2}.version_id = {v} AND {ve2}.global_id = {rel}.target "
            f"LEFT JOIN element_payloads AS {p2} ON {p2}.hash = {ve2}.payload_hash "
            f"WHERE {rel}.version_id = {v} AND {rel}.kind IN ({kinds}) "
            f"AND ({gid} OR COALESCE({name}, {FALSE}))"
        )
        descend = (
            f"SELECT {rel2}.source FROM relations AS {rel2} "
            f"JOIN {tree} ON {rel2}.target = {tree}.gid "
            f"WHERE {rel2}.version_id = {v} AND {rel2}.kind IN ({kinds})"
        )
        subtree = f"WITH RECURSIVE {tree}(gid) AS ({anchor} UNION {descend}) SELECT gid FROM {tree}"
        found = f"(ve.global_id IN ({subtree}))"
        return found if facet.comparison.op == "=" else f"(NOT {found})"

    # Structure ---------------------------------------------------------------------------
    def entity(self, facet: Entity) -> str:
        classes = sorted(descendants(facet.ifc_class, self.schema))
        if not classes:
            return FALSE
        listed = ", ".join(self.param(c) for c in classes)
        return f"(p.ifc_class IN ({listed}))"

    def facet_list(self, facets: tuple[Facet, ...]) -> str:
        """IfcOpenShell's sequential evaluation: the set starts empty; instances and entities
        add (or with ``!`` remove); the first filter without a prior addition starts from
        every element."""
        current, started = FALSE, False
        for facet in facets:
            if isinstance(facet, Instance | Entity):
                test = (
                    f"(ve.global_id = {self.param(facet.global_id)})"
                    if isinstance(facet, Instance)
                    else self.entity(facet)
                )
                current = (
                    f"({current} AND NOT {test})" if facet.negated else f"({current} OR {test})"
                )
                started = True
                continue
            if not started:
                current, started = TRUE, True
            current = f"({current} AND {self.facet(facet)})"
        return current


def compile_selector(selector: Selector, compiler: Compiler) -> str:
    """The SQL predicate; its parameters are in ``compiler.params`` (the caller binds
    ``:bem_version``)."""
    lists = [compiler.facet_list(facets) for facets in selector.facet_lists]
    return "(" + " OR ".join(lists) + ")"
