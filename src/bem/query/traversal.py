"""The spatial tree of a version and an element's neighbourhood in the relation graph."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bem.kit.errors import NotFound, Problem
from bem.query import repository
from bem.versions.classes import spatial_classes
from bem.versions.models import Version

MAX_DEPTH = 5
MAX_NODES = 2000


async def tree(session: AsyncSession, version: Version) -> dict[str, Any]:
    """Project -> sites -> buildings -> storeys -> spaces, with the number of elements each
    node contains directly (``element_count``) and with everything below it (``total_count``)."""
    spatial = await repository.elements_by_class(session, version.id, spatial_classes())
    counts = await repository.contained_counts(session, version.id)
    nodes: dict[str, dict[str, Any]] = {}
    parents: dict[str, dict[str, Any] | None] = {}
    for gid, doc in spatial:
        nodes[gid] = {
            "global_id": gid,
            "name": doc.get("name"),
            "ifc_class": doc["ifc_class"],
            "element_count": counts.get(gid, 0),
            "children": [],
        }
        parents[gid] = doc.get("parent")
    roots: list[dict[str, Any]] = []
    for gid, node in list(nodes.items()):
        parent = parents[gid]
        if parent is None:
            roots.append(node)
            continue
        if parent["global_id"] not in nodes:  # the IfcProject (not an element) or an outsider
            nodes[parent["global_id"]] = {**parent, "element_count": 0, "children": []}
            roots.append(nodes[parent["global_id"]])
        nodes[parent["global_id"]]["children"].append(node)

    def finish(node: dict[str, Any]) -> int:
        node["children"].sort(key=lambda n: (n["name"] or "", n["global_id"]))
        node["total_count"] = node["element_count"] + sum(finish(c) for c in node["children"])
        return int(node["total_count"])

    for root in roots:
        finish(root)
    return {"version_id": str(version.id), "roots": roots}


async def neighbours(
    session: AsyncSession,
    version: Version,
    global_id: str,
    kinds: tuple[str, ...] | None,
    direction: str,
    depth: int,
) -> dict[str, Any]:
    """Breadth-first over the relations table, one query per level and direction."""
    if not 1 <= depth <= MAX_DEPTH:
        raise Problem(f"depth must be between 1 and {MAX_DEPTH}.", slug="invalid-depth")
    if not await repository.summaries(session, version.id, {global_id}):
        raise NotFound(f"Version {version.id} has no element {global_id}.")
    seen = {global_id}
    frontier = {global_id}
    edges: set[tuple[str, str, str]] = set()
    truncated = False
    for _ in range(depth):
        found: list[tuple[str, str, str]] = []
        for outgoing in (True, False):
            if direction in ("both", "out" if outgoing else "in"):
                found += await repository.edges(session, version.id, frontier, kinds, outgoing)
        edges.update(found)
        frontier = {n for s, _, t in found for n in (s, t)} - seen
        if len(seen) + len(frontier) > MAX_NODES:
            truncated = True
            break
        seen |= frontier
        if not frontier:
            break
    known = await repository.summaries(session, version.id, seen)
    return {
        "version_id": str(version.id),
        "root": global_id,
        "nodes": [
            {
                "global_id": g,
                "name": known.get(g, (None, None))[0],
                "ifc_class": known.get(g, (None, None))[1],
            }
            for g in sorted(seen)
        ],
        "edges": [
            {"source": s, "kind": k, "target": t}
            for s, k, t in sorted(edges)
            if s in seen and t in seen
        ],
        "truncated": truncated,
    }
