from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from bem.kit.db import Base, JSONDoc, UTCDateTime, utcnow


class Version(Base):
    """An immutable snapshot of a model. ``seq`` is assigned when the version turns ready."""

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("model_id", "seq"),
        CheckConstraint("status IN ('pending', 'ready', 'failed')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    model_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int | None] = mapped_column(Integer)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("versions.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(16), default="pending")
    message: Mapped[str | None] = mapped_column(Text)
    source_name: Mapped[str | None] = mapped_column(String(255))
    source_format: Mapped[str] = mapped_column(String(16))
    source_schema: Mapped[str | None] = mapped_column(String(16))
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    source_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Where the original file is kept (kit/storage), for GET /versions/{id}/source.
    source_key: Mapped[str | None] = mapped_column(String(128))
    # The project's units as authored; element values are stored in SI (DOMAIN.md).
    units: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    element_count: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ElementPayload(Base):
    """An element document without its GlobalId, stored once under its SHA-256.

    ``ifc_class`` and ``name`` are copied out of the document for indexing and sorting.
    """

    __tablename__ = "element_payloads"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    ifc_class: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(Text, index=True)
    doc: Mapped[dict[str, Any]] = mapped_column(JSONDoc)


class ElementFacts(Base):
    """What a takeoff reads of a payload, in narrow columns (versions/facts.py)."""

    __tablename__ = "element_facts"

    hash: Mapped[str] = mapped_column(
        ForeignKey("element_payloads.hash", ondelete="CASCADE"), primary_key=True
    )
    ifc_class: Mapped[str] = mapped_column(String(64))
    type_name: Mapped[str | None] = mapped_column(Text)
    container_gid: Mapped[str | None] = mapped_column(String(22))
    storey: Mapped[str | None] = mapped_column(Text)
    parent_storey: Mapped[str | None] = mapped_column(Text)
    materials: Mapped[dict[str, float]] = mapped_column(JSONDoc)  # name -> share (facts.py)
    measures: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    content_key: Mapped[str | None] = mapped_column(String(64))  # facts.identity_keys
    place_key: Mapped[str | None] = mapped_column(String(64))
    name_key: Mapped[str | None] = mapped_column(String(64))


class VersionElement(Base):
    """A version maps each GlobalId to one payload."""

    __tablename__ = "version_elements"

    version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True
    )
    global_id: Mapped[str] = mapped_column(String(22), primary_key=True)
    payload_hash: Mapped[str] = mapped_column(ForeignKey("element_payloads.hash"), index=True)


class Relation(Base):
    __tablename__ = "relations"
    __table_args__ = (Index("ix_relations_version_id_target", "version_id", "target"),)

    version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True
    )
    source: Mapped[str] = mapped_column(String(22), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    target: Mapped[str] = mapped_column(String(22), primary_key=True)
