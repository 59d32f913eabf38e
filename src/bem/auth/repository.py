from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth.models import ApiToken, User


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    result: User | None = await session.scalar(select(User).where(User.email == email))
    return result


async def token_with_user(session: AsyncSession, digest: str) -> tuple[ApiToken, User] | None:
    row = (
        await session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.digest == digest)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def touch_token(session: AsyncSession, token: ApiToken, now: datetime) -> None:
    await session.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
