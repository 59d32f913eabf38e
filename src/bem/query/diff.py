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
# nested loops, comparing 70M pairs three times over at 1M elements (32 s). Only a payload
# held by one element on each side pairs: identical twins are a tie.
#
# Elements still alone after that are paired in stages (``STAGES``) by the keys of their
# facts (``versions/facts.identity_keys``), each stage only where its key is held by exactly
# one still unpaired element on each side: two candidates for one element are a tie, and the
# diff abstains (they stay removed + added). Window counts, not anti-joins, for the same
# reason.
STAGES = (("content", "content_key"), ("place", "place_key"), ("name", "name_key"))


def _staged_pairs() -> str:
    """The CTEs ``s0`` .. ``sN`` (one per stage) and ``fuzzy``, the pairs they found."""
    keys = ", ".join(stage for stage, _ in STAGES)
    facts = ", ".join(f"f.{column} AS {stage}" for stage, column in STAGES)
    ctes = [
        f"s0 AS (SELECT r.side, r.gid, r.hash, {facts}, "
        "CAST(NULL AS VARCHAR(80)) AS pk, CAST(NULL AS VARCHAR(16)) AS how "
        "FROM (SELECT 'old' AS side, old_gid AS gid, hash FROM paired WHERE new_gid IS NULL "
        "UNION ALL SELECT 'new', new_gid, hash FROM paired WHERE old_gid IS NULL) AS r "
        "JOIN element_facts AS f ON f.hash = r.hash)"
    ]
    for i, (stage, _) in enumerate(STAGES, start=1):
        left = {
            side: f"SUM(CASE WHEN pk IS NULL AND side = '{side}' THEN 1 ELSE 0 END) "
            f"OVER (PARTITION BY {stage})"
            for side in ("old", "new")
        }
        unique = f"pk IS NULL AND {stage} IS NOT NULL AND {left['old']} = 1 AND {left['new']} = 1"
        ctes.append(
            f"s{i} AS (SELECT side, gid, hash, {keys}, "
            f"CASE WHEN {unique} THEN '{stage}:' || {stage} ELSE pk END AS pk, "
            f"CASE WHEN {unique} THEN '{stage}' ELSE how END AS how FROM s{i - 1})"
        )
    ctes.append(
        "fuzzy AS (SELECT MIN(how) AS how, "
        "MIN(CASE WHEN side = 'old' THEN gid END) AS old_gid, "
        "MIN(CASE WHEN side = 'new' THEN gid END) AS new_gid, "
        "MIN(CASE WHEN side = 'old' THEN hash END) AS old_hash, "
        "MIN(CASE WHEN side = 'new' THEN hash END) AS new_hash "
        f"FROM s{len(STAGES)} GROUP BY COALESCE(pk, side || ':' || gid))"
    )
    return ",\n".join(ctes)


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
               CASE WHEN SUM(CASE WHEN side = 'old' THEN 1 ELSE 0 END)
                           OVER (PARTITION BY hash) = 1
                     AND SUM(CASE WHEN side = 'new' THEN 1 ELSE 0 END)
                           OVER (PARTITION BY hash) = 1
                    THEN '' ELSE side || gid END AS k
        FROM lone) AS counted
  GROUP BY hash, k),
{stages},
entries AS (
  SELECT 'changed' AS kind, a.global_id AS gid, CAST(NULL AS VARCHAR(22)) AS new_gid,
         a.payload_hash AS old_hash, b.payload_hash AS new_hash,
         CAST(NULL AS VARCHAR(16)) AS how
  FROM a JOIN b ON b.global_id = a.global_id WHERE a.payload_hash <> b.payload_hash
  UNION ALL
  SELECT 're_identified', old_gid, new_gid, hash, hash, 'payload'
  FROM paired WHERE old_gid IS NOT NULL AND new_gid IS NOT NULL
  UNION ALL
  SELECT CASE WHEN old_gid IS NULL THEN 'added'
              WHEN new_gid IS NULL THEN 'removed' ELSE 're_identified' END,
         COALESCE(old_gid, new_gid), CASE WHEN old_gid IS NOT NULL THEN new_gid END,
         old_hash, new_hash, how
  FROM fuzzy)
""".replace("{stages}", _staged_pairs())

SUMMARY = ENTRIES + "SELECT kind, COUNT(*) FROM entries GROUP BY kind"
PAGE = (
    ENTRIES
    + "SELECT kind, gid, new_gid, old_hash, new_hash, how FROM entries "
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


# What a pairing by content or identity compares (docs/query.md, "Diff").
EVIDENCE = (
    "ifc_class",
    "name",
    "type",
    "container",
    "parent",
    "attributes",
    "properties",
    "quantities",
    "materials",
    "classification",
    "geometry",
)
BBOX_TOLERANCE_M = 0.01


def _agree(field: str, old: Any, new: Any) -> bool:
    if field == "geometry" and isinstance(old, dict) and isinstance(new, dict):
        a, b = old.get("bbox"), new.get("bbox")
        if a and b:  # the same place within the tolerance
            corners = zip([*a[0], *a[1]], [*b[0], *b[1]], strict=True)
            return all(abs(x - y) <= BBOX_TOLERANCE_M for x, y in corners)
    return bool(old == new)


def match(how: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """How a re-identified pair was found, what agrees, and how sure the pairing is: 1 for
    the same payload, 0.95 for the same content with other GlobalIds, and for a pairing by
    place or name 0.5 plus 0.4 times the share of compared fields that agree (a field
    empty on both sides is not compared)."""
    compared = [f for f in EVIDENCE if old.get(f) or new.get(f)]
    agreeing = [f for f in compared if _agree(f, old.get(f), new.get(f))]
    if how == "payload":
        confidence = 1.0
    elif how == "content":
        confidence = 0.95
    else:
        confidence = 0.5 + 0.4 * len(agreeing) / max(len(compared), 1)
    return {"by": how, "confidence": round(confidence, 3), "evidence": agreeing}


def areas(changes: list[dict[str, Any]]) -> list[str]:
    return sorted({AREAS.get(c["path"].split(".")[0], "other") for c in changes})
