from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bem.kit.db import Base, UTCDateTime, utcnow

BACKUP_STATUSES = ("requested", "running", "succeeded", "failed")
# unverified: written, checked only as it was written; archive: the sealed archive was
# opened again with the key and every file matched the manifest; restore: a drill restored
# it and every table matched.
VERIFICATIONS = ("unverified", "archive", "restore")


class Backup(Base):
    """A backup: asked for (``bem backup``, ``POST /v1/admin/backups``, the schedule), then
    running, then done with where it went, how big and what it holds. The newest success's
    age is what ``BemBackupTooOld`` alerts on."""

    __tablename__ = "backups"
    __table_args__ = (
        CheckConstraint("status IN ('requested', 'running', 'succeeded', 'failed')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    origin: Mapped[str] = mapped_column(String(16), default="cli")  # cli, drill, api, schedule
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    requested_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    location: Mapped[str | None] = mapped_column(Text)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    tables: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    verification: Mapped[str] = mapped_column(String(16), default="unverified")
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
