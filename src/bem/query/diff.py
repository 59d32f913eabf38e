"""Version diff as set operations on ``global_id -> payload hash`` maps.

Unchanged elements share a payload hash, so they cost one join and nothing else. Elements
only in the old version whose payload (the whole document but the GlobalId) equals that of an
element only in the new one are "re-identified": the same element exported with a new
GlobalId. Field-level changes are computed for the elements of one page only.
"""

from __future__ import annotations

from typing import Any

KINDS = ("added", "removed", "changed", "re_identified")
ATTRIBUTES = ("ifc_class", "predefined_type", "name", "description", "object_type", "tag")
NESTED = ("properties", "quantities")
AREAS = {
    **{a: "attributes" for a in (*ATTRIBUTES, "attributes")},
    "type": "type",
    "container": "container",
    "parent": "relations",
    "groups": "relations",
    "relations": "relations",
    "materials": "materials",
    "classification": "classification",
    "properties": "properties",
    "quantities": "quantities",
    "geometry": "geometry",
}

# ``a`` and ``b`` are NOT MATERIALIZED: materialized CTEs have no statistics, and PostgreSQL
# then merge-joined 117k rows through sorts that spilled to disk (summary at 100k elements:
# 1.4 s; inlined, the primary key serves the join: 0.6 s). SQLite >= 3.35 accepts the hint.
#
# Elements on one side only (``lone``) are paired by payload hash with an aggregate, not a
# join: PostgreSQL estimates an anti-join's result at one row, and joined the two sides by
# nested loops, comparing 70M pairs three times over at 1M elements (32 s).
ENTRIES = """
WITH a AS NOT MATERIALIZED (
  SELECT global_id, payload_hash FROM version_elements WHERE version_id = :old),
b AS NOT MATERIALIZED (
  SELECT global_id, payload_hash FROM version_elements WHERE version_id = :new),
lone AS (
  SELECT 'old' AS side, a.global_id AS gid, a.payload_hash AS hash
  FROM a LEFT JOIN b ON b.global_id = a.global_id WHERE b.global_id IS NULL
  UNION ALL
  SELECT 'new', b.global_id, b.payload_hash
  FROM b LEFT JOIN a ON a.global_id = b.global_id WHERE a.global_id IS NULL),
paired AS (
  SELECT hash,
         MIN(CASE WHEN side = 'old' THEN gid END) AS old_gid,
         MIN(CASE WHEN side = 'new' THEN gid END) AS new_gid
  FROM (SELECT side, gid, hash,
               ROW_NUMBER() OVER (PARTITION BY hash, side ORDER BY gid) AS rn
        FROM lone) AS ranked
  GROUP BY hash, rn),
entries AS (
  SELECT 'changed' AS kind, a.global_id AS gid, CAST(NULL AS VARCHAR(22)) AS new_gid,
         a.payload_hash AS old_hash, b.payload_hash AS new_hash
  FROM a JOIN b ON b.global_id = a.global_id WHERE a.payload_hash <> b.payload_hash
  UNION ALL
  SELECT CASE WHEN old_gid IS NULL THEN 'added'
              WHEN new_gid IS NULL THEN 'removed' ELSE 're_identified' END,
         COALESCE(old_gid, new_gid),
         CASE WHEN old_gid IS NOT NULL THEN new_gid END,
         CASE WHEN old_gid IS NOT NULL THEN hash END,
         CASE WHEN new_gid IS NOT NULL THEN hash END
  FROM paired)
"""

SUMMARY = ENTRIES + "SELECT kind, COUNT(*) FROM entries GROUP BY kind"
PAGE = (
    ENTRIES
    + "SELECT kind, gid, new_gid, old_hash, new_hash FROM entries "
    + "WHERE (:kind IS NULL OR kind = :kind) AND gid > :after ORDER BY gid LIMIT :limit"
)


def field_changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """What differs between two element documents: whole fields, single attributes inside
    ``attributes``, and single properties and quantities inside ``properties``/``quantities``."""
    changes: list[dict[str, Any]] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if key == "attributes":
            a, b = before or {}, after or {}
            for name in sorted(set(a) | set(b)):
                if a.get(name) != b.get(name):
                    changes.append(
                        {"path": f"attributes.{name}", "old": a.get(name), "new": b.get(name)}
                    )
            continue
        if key in NESTED:
            for set_name in sorted(set(before or {}) | set(after or {})):
                a, b = (before or {}).get(set_name) or {}, (after or {}).get(set_name) or {}
                for prop in sorted(set(a) | set(b)):
                    if a.get(prop) != b.get(prop):
                        changes.append(
                            {
                                "path": f"{key}.{set_name}.{prop}",
                                "old": a.get(prop),
                                "new": b.get(prop),
                            }
                        )
            continue
        changes.append({"path": key, "old": before, "new": after})
    return changes


def areas(changes: list[dict[str, Any]]) -> list[str]:
    return sorted({AREAS.get(c["path"].split(".")[0], "other") for c in changes})
