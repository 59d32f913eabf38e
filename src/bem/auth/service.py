"""Users and personal API tokens. Until OTP login exists, ``bem users create-admin`` is the
bootstrap path: it creates (or reuses) an admin and issues a token shown exactly once."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth import repository
from bem.auth.models import ApiToken, User
from bem.kit.db import utcnow
from bem.kit.security import TOKEN_PREFIX, new_token, token_digest

# Writing last_used_at on every request would turn reads into writes; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def normalize_email(email: str) -> str:
    return unicodedata.normalize("NFC", email).strip().lower()


async def issue_token(
    session: AsyncSession,
    user: User,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
) -> str:
    """Create a token for ``user`` and return its secret (the only time it is visible)."""
    secret = new_token()
    session.add(
        ApiToken(
            user_id=user.id,
            name=name,
            digest=token_digest(secret),
            display_prefix=secret[: len(TOKEN_PREFIX) + 4],
            scopes=scopes,
            expires_at=expires_at,
        )
    )
    await session.flush()
    return secret


async def create_admin(session: AsyncSession, email: str, name: str) -> tuple[User, str]:
    email = normalize_email(email)
    user = await repository.user_by_email(session, email)
    if user is None:
        user = User(email=email, name=name, is_admin=True)
        session.add(user)
        await session.flush()
    else:
        user.is_admin = True
    secret = await issue_token(session, user, name="bootstrap (create-admin)", scopes=["admin"])
    await session.commit()
    return user, secret


async def authenticate(session: AsyncSession, secret: str) -> User | None:
    """The user behind a bearer token, or None when unknown, revoked or expired."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 128:
        return None
    found = await repository.token_with_user(session, token_digest(secret))
    if found is None:
        return None
    token, user = found
    now = utcnow()
    if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        return None
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        await repository.touch_token(session, token, now)
        await session.commit()
    return user
