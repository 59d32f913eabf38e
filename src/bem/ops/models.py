from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from bem.kit.db import Base, UTCDateTime, utcnow


class Backup(Base):
    """A completed ``bem backup``: where it went, how big, what it holds. Its age is what
    ``BemBackupTooOld`` alerts on."""

    __tablename__ = "backups"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    location: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    tables: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(BigInteger)
