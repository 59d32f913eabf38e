from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth.models import (
    ApiToken,
    AuditEvent,
    OtpChallenge,
    RecoveryCode,
    RefreshToken,
    User,
)
from bem.auth.schemas import AuditFilter


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    result: User | None = await session.scalar(select(User).where(User.email == email))
    return result


async def users_with_totp(session: AsyncSession) -> list[User]:
    """Users holding a sealed TOTP secret, enabled or pending."""
    query = select(User).where(
        (User.totp_secret.is_not(None)) | (User.totp_pending_secret.is_not(None))
    )
    return list((await session.scalars(query)).all())


async def token_with_user(session: AsyncSession, digest: str) -> tuple[ApiToken, User] | None:
    row = (
        await session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.digest == digest)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def touch_token(session: AsyncSession, token_id: uuid.UUID, now: datetime) -> None:
    await session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))


async def active_tokens(session: AsyncSession, user_id: uuid.UUID) -> list[ApiToken]:
    stmt = select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    return list(await session.scalars(stmt.order_by(ApiToken.created_at)))


async def challenges_since(
    session: AsyncSession, since: datetime, *, email: str | None = None, ip: str | None = None
) -> int:
    stmt = select(func.count()).select_from(OtpChallenge).where(OtpChallenge.created_at >= since)
    if email is not None:
        stmt = stmt.where(OtpChallenge.email == email)
    if ip is not None:
        stmt = stmt.where(OtpChallenge.ip == ip)
    return int(await session.scalar(stmt) or 0)


def _of_client(ip: str | None) -> ColumnElement[bool]:
    return OtpChallenge.ip.is_(None) if ip is None else OtpChallenge.ip == ip


async def close_challenges(
    session: AsyncSession, email: str, ip: str | None, now: datetime
) -> None:
    """End the open challenges ``ip`` asked for ``email`` (other clients' stay open)."""
    await session.execute(
        update(OtpChallenge)
        .where(OtpChallenge.email == email, _of_client(ip), OtpChallenge.consumed_at.is_(None))
        .values(consumed_at=now)
    )


async def open_challenge(
    session: AsyncSession, email: str, ip: str | None, now: datetime
) -> OtpChallenge | None:
    """The live challenge ``ip`` asked for ``email``, locked so concurrent guesses count
    one by one."""
    result: OtpChallenge | None = await session.scalar(
        select(OtpChallenge)
        .where(
            OtpChallenge.email == email,
            _of_client(ip),
            OtpChallenge.consumed_at.is_(None),
            OtpChallenge.expires_at > now,
        )
        .order_by(OtpChallenge.created_at.desc())
        .limit(1)
        .with_for_update()
    )
    return result


async def session_user(
    session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID | None
) -> User | None:
    """The user of an access token, unless its login (``session_id``) has ended: one
    statement."""
    stmt = select(User).where(User.id == user_id)
    if session_id is not None:
        ended = select(RefreshToken.id).where(
            RefreshToken.family_id == session_id, RefreshToken.revoked_at.is_not(None)
        )
        stmt = stmt.where(~ended.exists())
    result: User | None = await session.scalar(stmt)
    return result


async def refresh_token(session: AsyncSession, digest: str) -> RefreshToken | None:
    result: RefreshToken | None = await session.scalar(
        select(RefreshToken).where(RefreshToken.digest == digest).with_for_update()
    )
    return result


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def unused_recovery_code(
    session: AsyncSession, user_id: uuid.UUID, digest: str
) -> RecoveryCode | None:
    result: RecoveryCode | None = await session.scalar(
        select(RecoveryCode).where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.digest == digest,
            RecoveryCode.used_at.is_(None),
        )
    )
    return result


async def delete_recovery_codes(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))


async def audit_events(session: AsyncSession, chosen: AuditFilter) -> list[AuditEvent]:
    stmt = select(AuditEvent)
    if chosen.action is not None:
        stmt = stmt.where(AuditEvent.action == chosen.action)
    if chosen.actor_id is not None:
        stmt = stmt.where(AuditEvent.actor_id == chosen.actor_id)
    if chosen.since is not None:
        stmt = stmt.where(AuditEvent.at >= chosen.since)
    if chosen.until is not None:
        stmt = stmt.where(AuditEvent.at < chosen.until)
    if chosen.before_id is not None:
        stmt = stmt.where(AuditEvent.id < chosen.before_id)
    return list(await session.scalars(stmt.order_by(AuditEvent.id.desc()).limit(chosen.limit)))
