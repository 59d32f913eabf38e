"""Takeoff facts: the few values a quantity takeoff reads, kept narrow beside each payload.

A takeoff touches every element of a version. Reading group keys and quantities out of the
JSON documents cost PostgreSQL about 5 µs per element (600 ms of CPU at 100k elements), so
each new payload also gets one ``element_facts`` row: plain columns for the group keys and
only the numeric values. Like payloads, facts are content-addressed and written once.
"""

from __future__ import annotations

from typing import Any

from bem.kit.canonical import content_hash

STOREY = "IfcBuildingStorey"
REFERENCES = ("type", "container", "parent")


def _storey(ref: Any) -> str | None:
    """The name of a reference when it is a storey."""
    if isinstance(ref, dict) and ref.get("ifc_class") == STOREY:
        name = ref.get("name")
        return name if isinstance(name, str) else None
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def measures(doc: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Numeric values by set and name. A quantity set and a property set of the same name
    read as the quantity first, then the property: a quantity that is present but not a
    number hides the property (the element has no value there)."""
    out: dict[str, dict[str, float]] = {}
    for set_name, values in (doc.get("properties") or {}).items():
        numbers = {k: v for k, v in values.items() if _number(v)}
        if numbers:
            out[set_name] = numbers
    for set_name, values in (doc.get("quantities") or {}).items():
        merged = out.setdefault(set_name, {})
        for key, value in values.items():
            if _number(value):
                merged[key] = value
            else:
                merged.pop(key, None)
        if not merged:
            del out[set_name]
    return out


def material_shares(materials: list[dict[str, Any]]) -> dict[str, float]:
    """Each material's share of the element, summing to 1, so that a takeoff by material
    adds up to the takeoff by class (docs/query.md):

    - layers (every material has a thickness): thickness over the set's total;
    - constituents with fractions: the fraction; those without share what the given ones
      leave, equally; fractions adding up to more than 1 are scaled down;
    - otherwise (a single material, a list, profiles): equal shares.

    A material named by several layers or constituents gets the sum of their shares."""
    named = [m for m in materials if isinstance(m.get("name"), str)]
    if not named:
        return {}

    def numbers(key: str) -> list[float | None]:
        return [float(m[key]) if _number(m.get(key)) else None for m in named]

    equal = [1.0 / len(named)] * len(named)
    thickness, fractions = numbers("layer_thickness"), numbers("fraction")
    layers = [t for t in thickness if t is not None]
    given = [f for f in fractions if f is not None]
    weights = equal
    if len(layers) == len(named) and sum(layers) > 0:
        weights = [t / sum(layers) for t in layers]
    elif given:
        missing = len(named) - len(given)
        rest = max(0.0, 1.0 - sum(given)) / missing if missing else 0.0
        raw = [f if f is not None else rest for f in fractions]
        if sum(raw) > 0:
            weights = [w / sum(raw) for w in raw]
    shares: dict[str, float] = {}
    for material, weight in zip(named, weights, strict=True):
        shares[material["name"]] = shares.get(material["name"], 0.0) + weight
    return dict(sorted(shares.items()))


def _named(ref: Any) -> Any:
    """A reference without its GlobalId: what survives a re-export that renumbers them."""
    return [ref.get("name"), ref.get("ifc_class")] if isinstance(ref, dict) else None


_LINKS = frozenset({*REFERENCES, "groups", "relations"})  # what carries GlobalIds


def renumbered(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as a re-export that regenerates every GlobalId leaves it: references
    reduced to (name, class), relations to their kinds."""
    content = {k: v for k, v in doc.items() if k not in _LINKS}
    content.update({k: _named(doc.get(k)) for k in REFERENCES})
    content["groups"] = sorted((_named(g) for g in doc.get("groups") or []), key=str)
    content["relations"] = sorted(str(r.get("kind")) for r in doc.get("relations") or [])
    return content


def identity_keys(doc: dict[str, Any]) -> dict[str, str]:
    """The hashes that find an element again when every GlobalId was regenerated (a
    re-export from another tool, a copied model), for the diff's stages (docs/query.md):

    - ``content_key``: the :func:`renumbered` document: "the same element, renumbered";
    - ``place_key``: class, name, the names of type, container and aggregate, and the
      placement to the centimetre: "the same element, renumbered and edited";
    - ``name_key``: class, name and type name: "the same element, renumbered, edited and
      moved"."""
    names = [doc.get("ifc_class"), doc.get("name"), _named(doc.get("type"))]
    place = [_named(doc.get(k)) for k in ("container", "parent")]
    origin = doc.get("placement")
    if isinstance(origin, list):  # to the centimetre: a re-export may round differently
        place.append([round(float(v), 2) + 0.0 for v in origin])
    return {
        "content_key": content_hash(renumbered(doc)),
        "place_key": content_hash([*names, *place]),
        "name_key": content_hash(names),
    }


def facts_of(payload_hash: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The ``element_facts`` row of one payload.

    ``storey`` is the container, else the aggregate, when that is a storey; ``parent_storey``
    is the aggregate when that is a storey, read by elements contained in this one (a space)."""
    container, kind = doc.get("container"), doc.get("type")
    own = _storey(container)
    return {
        "hash": payload_hash,
        "ifc_class": doc["ifc_class"],
        "type_name": kind.get("name") if isinstance(kind, dict) else None,
        "container_gid": container.get("global_id") if isinstance(container, dict) else None,
        "storey": own if own is not None else _storey(doc.get("parent")),
        "parent_storey": _storey(doc.get("parent")),
        "materials": material_shares(doc.get("materials") or []),
        "measures": measures(doc),
        **identity_keys(doc),
    }
