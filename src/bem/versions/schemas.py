"""The element document (DOMAIN.md) as strict Pydantic models, and version responses."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, WithJsonSchema

from bem.kit.text import NO_CONTROL, LongText, Name, Text, no_control_chars
from bem.versions.classes import canonical_names

GLOBAL_ID_PATTERN = r"^[0-9A-Za-z_$]{22}$"
RelationKind = Literal[
    "contained_in",
    "aggregated_by",
    "typed_by",
    "voided_by",
    "voids",
    "filled_by",
    "fills",
    "connected_to",
    "assigned_to_group",
    "classified_as",
]
ELEMENT_FIELDS = (
    "global_id",
    "ifc_class",
    "predefined_type",
    "name",
    "description",
    "object_type",
    "tag",
    "attributes",
    "placement",
    "type",
    "container",
    "parent",
    "materials",
    "classification",
    "groups",
    "properties",
    "quantities",
    "relations",
    "geometry",
)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("numbers must be finite")
    return value


def _canonical_class(value: str, root: str) -> str:
    canonical = canonical_names(root).get(value.lower())
    if canonical is None:
        raise ValueError(f"{value!r} is not an {root} class of IFC2X3, IFC4 or IFC4X3")
    return canonical


def _product_class(value: str) -> str:
    return _canonical_class(value, "IfcProduct")


def _rooted_class(value: str) -> str:
    return _canonical_class(value, "IfcRoot")


GlobalId = Annotated[StrictStr, Field(pattern=GLOBAL_ID_PATTERN)]
_CLASS_NAME = r"^[Ii][Ff][Cc][A-Za-z0-9]{1,60}$"
IfcClass = Annotated[StrictStr, Field(pattern=_CLASS_NAME), AfterValidator(_product_class)]
RootedClass = Annotated[StrictStr, Field(pattern=_CLASS_NAME), AfterValidator(_rooted_class)]
Number = Annotated[float, AfterValidator(_finite)]
MAX_LIST_VALUES = 1000
MAX_STRING_VALUE = 4000


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, str):
        if len(value) > MAX_STRING_VALUE:
            raise ValueError(f"strings are limited to {MAX_STRING_VALUE} characters")
        return no_control_chars(value)
    raise ValueError("values must be strings, numbers, booleans, null, or lists of those")


def _property_value(value: Any) -> Any:
    """One check with one clear message, instead of a union's error per member."""
    if isinstance(value, list):
        if len(value) > MAX_LIST_VALUES:
            raise ValueError(f"lists are limited to {MAX_LIST_VALUES} values")
        return [_scalar(v) for v in value]
    return _scalar(value)


def _quantity_value(value: Any) -> Any:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value if value is None or isinstance(value, int) else _finite(value)
    raise ValueError("quantities must be numbers or null")


_SCALAR_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "maxLength": MAX_STRING_VALUE, "pattern": NO_CONTROL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
    ]
}
PropertyValue = Annotated[
    Any,
    AfterValidator(_property_value),
    WithJsonSchema(
        {
            "anyOf": [
                *_SCALAR_SCHEMA["anyOf"],
                {"type": "array", "items": _SCALAR_SCHEMA, "maxItems": MAX_LIST_VALUES},
            ]
        }
    ),
]
QuantityValue = Annotated[
    Any,
    AfterValidator(_quantity_value),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "null"}]}),
]
PropertySets = Annotated[
    dict[Name, Annotated[dict[Name, PropertyValue], Field(max_length=2000)]],
    Field(max_length=500),
]
QuantitySets = Annotated[
    dict[Name, Annotated[dict[Name, QuantityValue], Field(max_length=2000)]],
    Field(max_length=500),
]


AttributeName = Annotated[StrictStr, Field(pattern=r"^[A-Z][A-Za-z0-9_]{0,63}$")]
Attributes = Annotated[
    dict[AttributeName, PropertyValue],
    Field(
        max_length=100,
        description="The element's other direct attributes, by their IFC names (LongName, "
        "Elevation, OverallHeight, CompositionType, ...): strings, numbers (measures in SI), "
        "booleans. Selectors filter on them as on Name.",
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ElementRef(Strict):
    """A reference to a rooted object: an element, a type, a group, the project."""

    global_id: GlobalId
    name: Text | None = None
    ifc_class: RootedClass | None = None


Ref = GlobalId | ElementRef


class Material(Strict):
    name: Text
    category: Text | None = None
    layer_thickness: Annotated[Number, Field(ge=0)] | None = None
    fraction: Annotated[Number, Field(ge=0, le=1)] | None = None


class Classification(Strict):
    system: Text | None = None
    identification: Text | None = None
    name: Text | None = None


class RelationIn(Strict):
    kind: RelationKind
    target: GlobalId


Point = Annotated[list[Number], Field(min_length=3, max_length=3)]


class Geometry(Strict):
    bbox: Annotated[list[Point], Field(min_length=2, max_length=2)] | None = None
    volume: Annotated[Number, Field(ge=0)] | None = None
    area: Annotated[Number, Field(ge=0)] | None = None


class ElementIn(Strict):
    """One element of an upload; ``type``/``container``/``parent``/``groups`` may be GlobalIds
    that are resolved against the other elements of the same upload."""

    global_id: GlobalId
    ifc_class: IfcClass
    predefined_type: Text | None = None
    name: Text | None = None
    description: LongText | None = None
    object_type: Text | None = None
    tag: Text | None = None
    attributes: Attributes = {}
    placement: Point | None = Field(
        default=None, description="The element's origin in world coordinates, metres."
    )
    type: Ref | None = None
    container: Ref | None = None
    parent: Ref | None = None
    materials: Annotated[list[Material], Field(max_length=200)] = []
    classification: Annotated[list[Classification], Field(max_length=100)] = []
    groups: Annotated[list[Ref], Field(max_length=200)] = []
    properties: PropertySets = {}
    quantities: QuantitySets = {}
    relations: Annotated[list[RelationIn], Field(max_length=5000)] = []
    geometry: Geometry | None = None


class VersionOut(BaseModel):
    id: uuid.UUID
    model_id: uuid.UUID
    seq: int | None
    parent_id: uuid.UUID | None
    status: Literal["pending", "ready", "failed"]
    message: str | None
    source_name: str | None
    source_format: str
    source_schema: str | None
    source_sha256: str | None
    source_bytes: int | None
    units: dict[str, Any] | None = Field(
        description="The source file's units per quantity kind, as declared, with the factor "
        "that took its values to SI (`to_si`). Element values are always SI."
    )
    element_count: int
    stats: dict[str, Any]
    created_by: uuid.UUID | None
    created_at: datetime

    model_config = ConfigDict(from_attributes=True)


class ElementOut(BaseModel):
    """An element document. With ``fields=`` only the chosen keys are present."""

    model_config = ConfigDict(extra="allow")

    global_id: str
