"""JWT access tokens: HS256 only (an explicit allowlist, so ``alg=none`` and RS/HS confusion
are refused), signed with the active key of a key set and verified by ``kid``, so keys rotate
by adding a new key, making it active, and removing the old one after the access TTL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from starlette.datastructures import Headers
from starlette.types import Scope

from bem.config import Settings
from bem.kit.security import TOKEN_PREFIX, derive_key, token_digest

ALGORITHMS = ["HS256"]
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "iss", "aud"]
LEEWAY_S = 10


@dataclass(frozen=True)
class KeySet:
    keys: dict[str, bytes]
    active: str


def key_set(settings: Settings) -> KeySet:
    if not settings.jwt_keys:
        derived = derive_key(settings.secret_key.get_secret_value(), "jwt")
        return KeySet({"default": derived}, "default")
    keys = {kid: key.get_secret_value().encode() for kid, key in settings.jwt_keys.items()}
    return KeySet(keys, settings.jwt_active_kid or list(keys)[-1])


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID | None  # the login (refresh-token family) it belongs to


def issue_access_token(
    settings: Settings, user_id: uuid.UUID, now: datetime, session_id: uuid.UUID | None = None
) -> str:
    """``sid`` names the login: when it ends (logout, refresh-token reuse), its access
    tokens stop working at once instead of living out their TTL."""
    keys = key_set(settings)
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=settings.access_token_ttl_s)).timestamp()),
        "jti": uuid.uuid4().hex,
        **({"sid": str(session_id)} if session_id else {}),
    }
    return jwt.encode(
        claims, keys.keys[keys.active], algorithm="HS256", headers={"kid": keys.active}
    )


def verify_access_token(settings: Settings, token: str) -> AccessClaims | None:
    """The claims of a valid access token, else None (never raises on bad input)."""
    keys = key_set(settings)
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str) or kid not in keys.keys:
            return None
        claims = jwt.decode(
            token,
            keys.keys[kid],
            algorithms=ALGORITHMS,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=LEEWAY_S,
            options={"require": REQUIRED_CLAIMS},
        )
        sid = claims.get("sid")
        return AccessClaims(uuid.UUID(str(claims["sub"])), uuid.UUID(str(sid)) if sid else None)
    except (jwt.PyJWTError, ValueError):
        return None


def rate_identity(settings: Settings) -> Callable[[Scope], str]:
    """Who a request counts against for rate limits: the verified session user, the API
    token (by digest; the middleware also caps every IP), else "" for the client IP."""

    def identify(scope: Scope) -> str:
        scheme, _, credential = Headers(scope=scope).get("authorization", "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return ""
        if credential.startswith(TOKEN_PREFIX):
            return f"token:{token_digest(credential)[:32]}"
        claims = verify_access_token(settings, credential)
        return f"user:{claims.user_id}" if claims else ""

    return identify
