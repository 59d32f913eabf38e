from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bem.kit.db import Base, UTCDateTime, utcnow


class VersionGeometry(Base):
    """A version's 3D geometry as one GLB file, kept in the source store under its SHA-256.
    Made by a ``geometry`` job; until the file exists, that job's row says how it goes."""

    __tablename__ = "version_geometry"

    version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    sha256: Mapped[str | None] = mapped_column(String(64))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    elements: Mapped[int | None] = mapped_column(Integer)
    meshes: Mapped[int | None] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    made_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
