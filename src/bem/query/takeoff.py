"""Quantity takeoff: group a version's (selected) elements and aggregate their quantities.

Everything is one GROUP BY in SQL. Group keys: ``class``, ``type``, ``storey``, ``material``
(an element with several materials counts once under each, its measures apportioned by its
materials' shares: ``versions/facts.material_shares``) or a property ``Pset.Prop``.
Measures: ``Set.Name`` with ``:sum`` (default), ``:avg``, ``:min`` or ``:max``, read from
quantity sets or property sets; values are SI as stored.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from bem.kit.errors import Problem
from bem.query.compile import Compiler
from bem.versions.classes import spatial_classes

GROUPS = ("class", "type", "storey", "material")
AGGREGATES = ("sum", "avg", "min", "max")
MAX_GROUP_BY = 3
MAX_MEASURES = 10
MAX_ROWS = 10_000
# Measures are rounded to 6 decimals of their SI unit (1 µm, 1 mm², 1 cm³, 1 g): float sums
# of converted values otherwise read 48.02700000000001 in JSON, CSV and XLSX alike.
DECIMALS = 6
MATERIAL_RULE = (
    "Grouped by material, an element counts under each of its materials and its sums are "
    "apportioned: layers by thickness, constituents by fraction, other material lists "
    "equally; totals by material equal totals by class."
)
_NAME = re.compile(r"^[^.:,\x00-\x1f]{1,255}\.[^.:,\x00-\x1f]{1,255}$")


@cache
class InvalidTakeoff(Problem):
    status, slug = 400, "invalid-takeoff"


def unit_of(quantity: str) -> str | None:
    """The SI unit a stored quantity is in, from its IFC name (Qto names say what they are)."""
    name = quantity.lower()
    for suffix, unit in (("volume", "m3"), ("area", "m2"), ("weight", "kg"), ("mass", "kg")):
        if name.endswith(suffix):
            return unit
    lengths = ("length", "width", "height", "depth", "perimeter", "thickness", "span")
    if name.endswith(lengths):
        return "m"
    return None


@dataclass(frozen=True)
class Measure:
    pset: str
    name: str
    aggregate: str

    @property
    def label(self) -> str:
        return f"{self.aggregate}({self.pset}.{self.name})"


def parse_group_by(text: str | None) -> list[str]:
    keys = [k.strip() for k in (text or "class").split(",") if k.strip()]
    if not 1 <= len(keys) <= MAX_GROUP_BY:
        raise InvalidTakeoff(f"group_by takes 1 to {MAX_GROUP_BY} keys.")
    for key in keys:
        if key not in GROUPS and not _NAME.match(key):
            raise InvalidTakeoff(
                f"Cannot group by {key!r}; use {', '.join(GROUPS)} or a property as Pset.Prop."
            )
    return keys


def parse_measures(text: str | None) -> list[Measure]:
    measures = []
    for item in (m.strip() for m in (text or "").split(",")):
        if not item:
            continue
        path, _, aggregate = item.partition(":")
        aggregate = aggregate or "sum"
        if not _NAME.match(path) or aggregate not in AGGREGATES:
            raise InvalidTakeoff(
                f"Cannot measure {item!r}; write Qto_Set.Quantity[:{'|'.join(AGGREGATES)}]."
            )
        pset, _, name = path.partition(".")
        measures.append(Measure(pset, name, aggregate))
    if len(measures) > MAX_MEASURES:
        raise InvalidTakeoff(f"At most {MAX_MEASURES} measures.")
    return measures


class TakeoffSql:
    """SQL expressions for group keys and measures over ``f`` (``element_facts``), and over
    ``p`` (the payload) for what only documents hold: property group keys. Parameters are
    shared with the selector compiler."""

    def __init__(self, compiler: Compiler) -> None:
        self.c = compiler

    def property_text(self, key: str) -> str:
        """A property or quantity value of ``p.doc`` as text (quantity sets first)."""
        pset, _, name = key.partition(".")
        return self.c.sql.property_text(self.c.param(pset), self.c.param(name))

    def group(self, key: str, i: int) -> str:
        """Over ``f``; a property key was read from the document as ``d.k<i>``."""
        if key == "class":
            return "f.ifc_class"
        if key == "type":
            return "f.type_name"
        if key == "material":
            return self.c.sql.materials()[1]
        if key == "storey":
            return "COALESCE(f.storey, cs.storey)"
        return f"d.k{i}"

    def value(self, measure: Measure, keys: list[str]) -> str:
        """Facts hold numbers only, so the value needs no type check. Grouped by material,
        a sum takes the material's share of it (min, max and avg describe whole elements)."""
        value = self.c.sql.measure(self.c.param(measure.pset), self.c.param(measure.name))
        if "material" in keys and measure.aggregate == "sum":
            share = self.c.sql.materials()[2]
            return f"({value} * COALESCE({share}, 1.0))"
        return value

    def joins(self, keys: list[str]) -> str:
        out = []
        if "material" in keys:  # each distinct material name of an element once
            out.append(self.c.sql.materials()[0])
        if "storey" in keys:
            # Elements contained in a space are on the storey the space belongs to. Only
            # spatial elements contain (IfcRelContainedInSpatialStructure).
            spatial = ", ".join(self.c.param(c) for c in spatial_classes())
            out.append(
                f"LEFT JOIN (SELECT cve.global_id AS gid, cf.parent_storey AS storey "
                f"FROM version_elements AS cve "
                f"JOIN element_facts AS cf ON cf.hash = cve.payload_hash "
                f"WHERE cve.version_id = :bem_version AND cf.parent_storey IS NOT NULL "
                f"AND cf.ifc_class IN ({spatial})) AS cs ON cs.gid = f.container_gid"
            )
        return " ".join(out)


def statement(
    compiler: Compiler, keys: list[str], measures: list[Measure], where: str | None
) -> str:
    """Group keys and measured values per element in a subquery, aggregated outside it.

    They come from the narrow ``element_facts`` rows. A selector or a property group key
    needs the documents: then the version's elements are first joined with their payloads
    in a fenced subquery (``d``) that passes on only the payload hash and the property
    values, and facts join those narrow rows. Joined all at once, PostgreSQL hashed the
    wide payload table and grouping by a property went from 138 to 272 ms at 100k elements.
    The per-element subquery is fenced too, so the aggregate is hashed over the computed
    columns (unfenced, the planner expected one group per element and sorted)."""
    sql = TakeoffSql(compiler)
    fence = compiler.sql.fence
    props = [f"{sql.property_text(k)} AS k{i}" for i, k in enumerate(keys) if k not in GROUPS]
    payload = where is not None or bool(props)
    elements = (
        f"SELECT ve.payload_hash AS hash{''.join(', ' + c for c in props)} "
        f"FROM version_elements AS ve"
        + (" JOIN element_payloads AS p ON p.hash = ve.payload_hash" if payload else "")
        + f" WHERE ve.version_id = :bem_version{f' AND {where}' if where else ''}"
        + (fence if payload else "")
    )
    inner = [f"{sql.group(k, i)} AS g{i}" for i, k in enumerate(keys)]
    inner += [f"{sql.value(m, keys)} AS v{i}" for i, m in enumerate(measures)]
    outer = [f"g{i}" for i in range(len(keys))]
    outer.append("COUNT(*) AS n")
    outer += [f"{m.aggregate.upper()}(v{i}) AS m{i}" for i, m in enumerate(measures)]
    ordinals = ", ".join(str(i + 1) for i in range(len(keys)))
    return (
        f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} "
        f"FROM ({elements}) AS d JOIN element_facts AS f ON f.hash = d.hash "
        f"{sql.joins(keys)}{fence}) AS e "
        f"GROUP BY {ordinals} ORDER BY {ordinals} LIMIT {MAX_ROWS + 1}"
    )


def table(keys: list[str], measures: list[Measure], rows: list[Any]) -> dict[str, Any]:
    if len(rows) > MAX_ROWS:
        raise InvalidTakeoff(f"The takeoff has more than {MAX_ROWS} groups; group more coarsely.")
    columns: list[dict[str, Any]] = [{"name": k, "kind": "group"} for k in keys]
    columns.append({"name": "count", "kind": "count"})
    columns += [{"name": m.label, "kind": "measure", "unit": unit_of(m.name)} for m in measures]
    out_rows: list[dict[str, Any]] = []
    raw: list[list[float | None]] = []
    totals: dict[str, Any] = {"count": 0, **{m.label: None for m in measures}}
    for row in rows:
        values = list(row)
        record = dict(zip(keys, values[: len(keys)], strict=True))
        record["count"] = values[len(keys)]
        totals["count"] += record["count"]
        numbers = [float(v) if v is not None else None for v in values[len(keys) + 1 :]]
        for m, value in zip(measures, numbers, strict=True):
            record[m.label] = _rounded(value)
        out_rows.append(record)
        raw.append(numbers)
    for i, m in enumerate(measures):
        present = [v for r in raw if (v := r[i]) is not None]
        if present and m.aggregate == "sum":
            totals[m.label] = _rounded(sum(present))
        elif present and m.aggregate in ("min", "max"):
            totals[m.label] = _rounded(min(present) if m.aggregate == "min" else max(present))
    notes = [MATERIAL_RULE] if "material" in keys else []
    return {"columns": columns, "rows": out_rows, "totals": totals, "notes": notes}


def _rounded(value: float | None) -> float | None:
    if value is None:
        return None
    rounded = round(value, DECIMALS)
    return rounded + 0.0  # no -0.0


def _header(column: dict[str, Any]) -> str:
    return f"{column['name']} [{column['unit']}]" if column.get("unit") else str(column["name"])


def _cell(value: Any) -> Any:
    """Spreadsheet-safe: text that a spreadsheet would run as a formula is quoted."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(result: dict[str, Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    names = [c["name"] for c in result["columns"]]
    writer.writerow([_cell(_header(c)) for c in result["columns"]])  # names come from the query
    for row in result["rows"]:
        writer.writerow([_cell(row[n]) for n in names])
    return out.getvalue().encode()


def to_xlsx(result: dict[str, Any]) -> bytes:
    import xlsxwriter

    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True, "strings_to_formulas": False})
    sheet = book.add_worksheet("Takeoff")
    bold = book.add_format({"bold": True})
    names = [c["name"] for c in result["columns"]]
    sheet.write_row(0, 0, [_header(c) for c in result["columns"]], bold)
    for i, row in enumerate(result["rows"], start=1):
        sheet.write_row(i, 0, [row[n] for n in names])
    book.close()
    return out.getvalue()
