"""What differs between PostgreSQL (jsonb) and SQLite (JSON1) in the SQL that selectors and
takeoffs compile to: one object per database, the rest of the SQL is shared text.

A JSON value in SQL is a :class:`Json`: on PostgreSQL a jsonb expression (``pg``); on SQLite
a ``json_type``-style kind (SQL NULL when missing), the SQL scalar (``atom``) and the JSON
text of an array or object (``raw``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Json:
    pg: str = ""
    kind: str = ""
    atom: str = ""
    raw: str = ""


@dataclass(frozen=True)
class Location:
    """The parts of the ``location=`` fallback that read the element's own document."""

    start: str  # the container's GlobalId, else the aggregate's
    no_container: str
    parent_missing: str
    parent_is_project: str


class Postgres:
    name = "postgresql"
    fence = " OFFSET 0"  # keeps the planner from flattening a subquery
    position = "strpos"

    def field(self, doc: str, *keys: str) -> Json:
        return Json(pg=doc + "".join(f"->'{k}'" for k in keys))

    def text_column(self, column: str) -> Json:
        return Json(pg=f"to_jsonb({column})")

    def each(self, alias: str, container: Json, *, objects: bool = False) -> tuple[str, Json]:
        fn = "jsonb_each" if objects else "jsonb_array_elements"
        columns = "(k, v)" if objects else "(v)"
        return f"{fn}({container.pg}) AS {alias}{columns}", Json(pg=f"{alias}.v")

    def key(self, alias: str) -> str:
        return f"{alias}.k"

    def matches(self, subject: str, bound: str) -> str:
        return f"({subject} ~ {bound})"

    def is_(self, value: Json, kind: str) -> str:
        if kind in ("true", "false"):
            return f"({value.pg} = '{kind}'::jsonb)"
        return f"(jsonb_typeof({value.pg}) = '{kind}')"

    def missing(self, value: Json) -> str:
        return f"({value.pg} IS NULL)"

    def text(self, value: Json) -> str:
        return f"({value.pg} #>> '{{}}')"

    def number(self, value: Json) -> str:
        return f"({value.pg})::float8"

    def numeric(self, value: Json, check: str) -> str:
        """``check`` on a value that must be a number; the cast must only see numbers."""
        return f"(CASE WHEN {self.is_(value, 'number')} THEN {check} ELSE FALSE END)"

    def member(self, item: Json, key: str) -> Json:
        return Json(pg=f"{item.pg}->'{key}'")

    def array_length(self, items: Json) -> str:
        return f"jsonb_array_length({items.pg})"

    def property(self, pset: str, prop: str, bind: Callable[[str], str]) -> Json | None:
        """A named property or quantity, read directly (None: no direct form)."""
        a, b = bind(pset), bind(prop)
        return Json(pg=f"COALESCE(p.doc->'properties'->{a}->{b}, p.doc->'quantities'->{a}->{b})")

    def location(
        self, container: Json, parent: Json, parent_gid: Json, parent_class: Json
    ) -> Location:
        return Location(
            start=f"COALESCE({container.pg} #>> '{{}}', {parent_gid.pg} #>> '{{}}')",
            no_container=f"({container.pg} IS NULL OR jsonb_typeof({container.pg}) = 'null')",
            parent_missing=f"(jsonb_typeof({parent.pg}) IS DISTINCT FROM 'object')",
            parent_is_project=f"({parent_class.pg} #>> '{{}}') = 'IfcProject'",
        )

    def in_tree(self, tree: str) -> str:
        """Membership in a recursive subtree. As ``IN (subquery)`` the planner hash-joined it
        against every relation of the version (bench/query.py, 100k elements: 87 -> 24 ms;
        at 1M the join had taken 10 s); as an array it goes to the index."""
        return f"= ANY(ARRAY(SELECT gid FROM {tree}))"

    # Takeoff --------------------------------------------------------------------------
    def property_text(self, a: str, b: str) -> str:
        value = f"COALESCE(p.doc->'quantities'->{a}->{b}, p.doc->'properties'->{a}->{b})"
        return f"({value} #>> '{{}}')"

    def measure(self, a: str, b: str) -> str:
        return f"((f.measures->{a}->>{b})::float8)"

    def materials(self) -> tuple[str, str, str]:
        """The join over an element's materials, the name column, and the share column
        (NULL for an element without materials: it counts whole)."""
        join = "LEFT JOIN LATERAL jsonb_each(f.materials) AS mat(name, share) ON TRUE"
        return join, "mat.name", "(mat.share)::float8"


class Sqlite:
    name = "sqlite"
    fence = ""
    position = "instr"

    def field(self, doc: str, *keys: str) -> Json:
        path = "'$." + ".".join(keys) + "'"
        return Json(
            kind=f"json_type({doc}, {path})",
            atom=f"json_extract({doc}, {path})",
            raw=f"json_extract({doc}, {path})",
        )

    def text_column(self, column: str) -> Json:
        return Json(kind="'text'", atom=column, raw=column)

    def each(self, alias: str, container: Json, *, objects: bool = False) -> tuple[str, Json]:
        return (
            f"json_each({container.raw}) AS {alias}",
            Json(kind=f"{alias}.type", atom=f"{alias}.atom", raw=f"{alias}.value"),
        )

    def key(self, alias: str) -> str:
        return f"{alias}.key"

    def matches(self, subject: str, bound: str) -> str:
        return f"({subject} REGEXP {bound})"

    def is_(self, value: Json, kind: str) -> str:
        kinds = {
            "string": "('text')",
            "number": "('integer', 'real')",
            "boolean": "('true', 'false')",
        }.get(kind, f"('{kind}')")
        return f"({value.kind} IN {kinds})"

    def missing(self, value: Json) -> str:
        return f"({value.kind} IS NULL)"

    def text(self, value: Json) -> str:
        return value.atom

    def number(self, value: Json) -> str:
        return value.atom

    def numeric(self, value: Json, check: str) -> str:
        return f"({self.is_(value, 'number')} AND {check})"

    def member(self, item: Json, key: str) -> Json:
        return Json(
            kind=f"json_type({item.raw}, '$.{key}')",
            atom=f"json_extract({item.raw}, '$.{key}')",
            raw=f"json_extract({item.raw}, '$.{key}')",
        )

    def array_length(self, items: Json) -> str:
        return f"json_array_length({items.raw})"

    def property(self, pset: str, prop: str, bind: Callable[[str], str]) -> Json | None:
        return None  # JSON1 cannot index by a bound key: the general form is used

    def location(
        self, container: Json, parent: Json, parent_gid: Json, parent_class: Json
    ) -> Location:
        return Location(
            start=f"COALESCE({container.atom}, {parent_gid.atom})",
            no_container=f"({container.atom} IS NULL)",
            parent_missing=f"({parent.kind} IS NOT 'object')",
            parent_is_project=f"{parent_class.atom} = 'IfcProject'",
        )

    def in_tree(self, tree: str) -> str:
        return f"IN (SELECT gid FROM {tree})"

    # Takeoff --------------------------------------------------------------------------
    def property_text(self, a: str, b: str) -> str:
        kinds = "('integer', 'real', 'text', 'true', 'false')"
        lookups = [
            f"(SELECT pr.atom FROM json_each(p.doc, '$.{section}') AS ps "
            f"CROSS JOIN json_each(ps.value) AS pr "
            f"WHERE ps.key = {a} AND pr.key = {b} AND pr.type IN {kinds})"
            for section in ("quantities", "properties")
        ]
        return f"COALESCE({', '.join(lookups)})"

    def measure(self, a: str, b: str) -> str:
        return (
            f"(SELECT pr.value FROM json_each(f.measures) AS ps "
            f"CROSS JOIN json_each(ps.value) AS pr WHERE ps.key = {a} AND pr.key = {b})"
        )

    def materials(self) -> tuple[str, str, str]:
        return "LEFT JOIN json_each(f.materials) AS mat", "mat.key", "mat.value"


Dialect = Postgres | Sqlite


def dialect_of(name: str) -> Dialect:
    """The dialect of a SQLAlchemy dialect name (``postgresql``, ``sqlite``)."""
    return Postgres() if name == "postgresql" else Sqlite()
