"""Identity: email OTP login, TOTP second factor, sessions (JWT access + rotating refresh
tokens), personal API tokens, invitations. Security events go to the audit log."""

from __future__ import annotations

import io
import secrets
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import segno
from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth import audit, repository
from bem.auth.audit import Origin, mask_email
from bem.auth.models import (
    ApiToken,
    AuditEvent,
    OtpChallenge,
    Principal,
    RecoveryCode,
    RefreshToken,
    User,
)
from bem.auth.permissions import Scope, expand
from bem.auth.schemas import AuditFilter
from bem.auth.sessions import issue_access_token
from bem.config import Settings, Signup
from bem.kit.db import commit_early, utcnow
from bem.kit.errors import Conflict, Forbidden, NotFound, Problem, TooManyRequests, Unauthorized
from bem.kit.memo import forget_after_commit
from bem.kit.security import (
    REFRESH_PREFIX,
    TOKEN_PREFIX,
    SecretBox,
    derive_key,
    digests_match,
    keyed_digest,
    new_token,
    numeric_code,
    token_digest,
)

# Writing last_used_at on every request would turn reads into writes; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
TOTP_STEP_S = 30
RECOVERY_CODES = 10


class LoginFailed(Unauthorized):
    def __init__(self) -> None:
        super().__init__("The code is invalid or has expired.")


class SecondFactorRequired(Problem):
    status, slug = 401, "second-factor-required"


class InvalidCode(Problem):
    status, slug = 400, "invalid-code"


def normalize_email(email: str) -> str:
    return unicodedata.normalize("NFC", email).strip().lower()


def _code_keys(settings: Settings) -> list[bytes]:
    """Keys of sign-in and recovery codes' digests: new digests use the first; a code is
    checked against each, so codes made before a secret-key rotation keep working."""
    return [derive_key(secret, "codes") for secret in settings.secret_keys]


def _code_digests(settings: Settings, text: str) -> list[str]:
    return [keyed_digest(key, text) for key in _code_keys(settings)]


def _totp_box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_keys, "totp")


# ---- personal API tokens ---------------------------------------------------------------


async def issue_token(
    session: AsyncSession,
    user: User,
    name: str,
    scopes: list[str],
    *,
    project_id: uuid.UUID | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Create a token for ``user`` and return it with its secret (the only time it shows)."""
    secret = new_token()
    token = ApiToken(
        user_id=user.id,
        name=name,
        digest=token_digest(secret),
        display_prefix=secret[: len(TOKEN_PREFIX) + 4],
        scopes=sorted(set(scopes)),
        project_id=project_id,
        expires_at=expires_at,
    )
    session.add(token)
    await session.flush()
    return token, secret


async def authenticate_api_token(
    session: AsyncSession, secret: str
) -> tuple[ApiToken, User] | None:
    """The token and user behind a secret, or None when unknown, revoked or expired."""
    if len(secret) > 128:
        return None
    found = await repository.token_with_user(session, token_digest(secret))
    if found is None:
        return None
    token, user = found
    now = utcnow()
    if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        return None
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        await repository.touch_token(session, token.id, now)
    return token, user


async def list_tokens(session: AsyncSession, user: User) -> list[ApiToken]:
    return await repository.active_tokens(session, user.id)


async def revoke_token(
    session: AsyncSession, origin: Origin, user: User, token_id: uuid.UUID
) -> None:
    token = await session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id or token.revoked_at is not None:
        raise NotFound(f"You have no active token {token_id}.")
    token.revoked_at = utcnow()
    forget_after_commit(session, f"user:{user.id}")
    audit.record(
        session,
        origin,
        "token.revoke",
        actor_id=user.id,
        target_type="api_token",
        target_id=token.id,
    )


def _confined(
    creator: Principal,
    scopes: list[Scope],
    project_id: uuid.UUID | None,
    expires_at: datetime | None,
) -> tuple[uuid.UUID | None, datetime | None]:
    """A token made with a credential never reaches further than that credential: no scope
    it lacks, no project outside its binding (an unbound request inherits the binding), no
    life past its expiry (likewise inherited)."""
    missing = expand(frozenset(scopes)) - creator.scopes
    if missing:
        names = ", ".join(sorted(s.value for s in missing))
        raise Forbidden(f"This credential cannot grant scopes it lacks: {names}.")
    if creator.project_id is not None:
        if project_id not in (None, creator.project_id):
            raise Forbidden("A token bound to a project can only make tokens for that project.")
        project_id = creator.project_id
    if creator.expires_at is not None:
        if expires_at is not None and expires_at > creator.expires_at:
            raise Forbidden("A token cannot outlive the token that makes it.")
        expires_at = expires_at or creator.expires_at
    return project_id, expires_at


Visible = Callable[[AsyncSession, User, uuid.UUID], Awaitable[bool]]


@dataclass(frozen=True)
class ProjectDirectory:
    """Whether a user may see a project at all, for binding a token to it: projects/
    answers (auth knows no projects); the composition root provides it."""

    visible: Visible


async def create_token(
    session: AsyncSession,
    origin: Origin,
    creator: Principal,
    visible: Visible,
    name: str,
    scopes: list[Scope],
    project_id: uuid.UUID | None,
    expires_at: datetime | None,
) -> tuple[ApiToken, str]:
    user = creator.user
    if Scope.admin in scopes and not user.is_admin:
        raise Forbidden("Only server administrators can create admin tokens.")
    project_id, expires_at = _confined(creator, scopes, project_id, expires_at)
    if project_id is not None and not await visible(session, user, project_id):
        raise NotFound(f"Project {project_id} does not exist or you are not a member.")
    token, secret = await issue_token(
        session,
        user,
        name,
        [s.value for s in scopes],
        project_id=project_id,
        expires_at=expires_at,
    )
    audit.record(
        session,
        origin,
        "token.create",
        actor_id=user.id,
        target_type="api_token",
        target_id=token.id,
        scopes=token.scopes,
        project_id=str(project_id) if project_id else None,
        by_token=str(creator.token_id) if creator.token_id else None,
    )
    return token, secret


async def create_admin(session: AsyncSession, email: str, name: str) -> tuple[User, str]:
    """The bootstrap path (``bem users create-admin``): an admin and a token with ``admin``."""
    email = normalize_email(email)
    user = await repository.user_by_email(session, email)
    if user is None:
        user = User(email=email, name=name, is_admin=True)
        session.add(user)
        await session.flush()
    else:
        user.is_admin = True
    _, secret = await issue_token(session, user, "bootstrap (create-admin)", ["admin"])
    audit.record(
        session,
        Origin(user_agent="bem-cli"),
        "user.create_admin",
        actor_id=user.id,
        target_type="user",
        target_id=user.id,
    )
    return user, secret


async def user_with_email(session: AsyncSession, email: str) -> User | None:
    return await repository.user_by_email(session, normalize_email(email))


async def invite_user(
    session: AsyncSession, origin: Origin, actor: User, email: str, name: str, is_admin: bool
) -> User:
    email = normalize_email(email)
    if await repository.user_by_email(session, email) is not None:
        raise Conflict("A user with this email exists already.")
    user = User(email=email, name=name, is_admin=is_admin)
    session.add(user)
    await session.flush()
    audit.record(
        session,
        origin,
        "user.invite",
        actor_id=actor.id,
        target_type="user",
        target_id=user.id,
        email=mask_email(email),
        is_admin=is_admin,
    )
    return user


# ---- email OTP ---------------------------------------------------------------------------


async def request_otp(
    session: AsyncSession, settings: Settings, origin: Origin, email: str
) -> str | None:
    """Open a challenge for ``email``; return the code to send, or None when nothing may be
    sent (unknown email while sign-up is by invitation). Callers answer the same either way.

    Requests are counted per address *and client*, so a stranger asking for codes for your
    address exhausts their own budget, not yours (a higher cap per address bounds the mail
    sent); a new code ends only the same client's earlier one, and a code is accepted only
    from the client that asked for it, so a stranger cannot spend your code's attempts."""
    email = normalize_email(email)
    now = utcnow()
    since = now - timedelta(seconds=settings.otp_request_window_s)
    window = settings.otp_request_window_s
    count = repository.challenges_since
    if await count(session, since, email=email, ip=origin.ip) >= settings.otp_requests_per_email:
        raise TooManyRequests("Too many codes requested for this address.", window)
    if await count(session, since, email=email) >= settings.otp_requests_per_email_total:
        raise TooManyRequests("Too many codes requested for this address.", window)
    if origin.ip and await count(session, since, ip=origin.ip) >= settings.otp_requests_per_ip:
        raise TooManyRequests("Too many codes requested from this address.", window)
    user = await repository.user_by_email(session, email)
    deliverable = user is not None or settings.signup is Signup.open
    await repository.close_challenges(session, email, origin.ip, now)  # this client's old code
    code = numeric_code(settings.otp_digits)
    session.add(
        OtpChallenge(
            email=email,
            code_digest=_code_digests(settings, f"{email}:{code}")[0],
            ip=origin.ip,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.otp_ttl_s),
        )
    )
    audit.record(
        session,
        origin,
        "auth.otp_request",
        outcome="sent" if deliverable else "not_sent",
        actor_id=user.id if user else None,
        email=mask_email(email),
    )
    return code if deliverable else None


async def verify_otp(
    session: AsyncSession,
    settings: Settings,
    origin: Origin,
    email: str,
    code: str,
    totp_code: str | None,
    recovery_code: str | None,
) -> tuple[User, str, str]:
    email = normalize_email(email)
    now = utcnow()
    challenge = await repository.open_challenge(session, email, origin.ip, now)
    user = await repository.user_by_email(session, email)

    async def failed(reason: str) -> None:
        audit.record(
            session,
            origin,
            "auth.login",
            outcome="failure",
            actor_id=user.id if user else None,
            reason=reason,
            email=mask_email(email),
        )
        await commit_early(session)  # a failed attempt counts, whatever follows

    if challenge is None:
        await failed("no_active_code")
        raise LoginFailed()
    challenge.attempts += 1
    if challenge.attempts >= settings.otp_max_attempts:
        challenge.consumed_at = now  # the last attempt: brute force stops here
    expected = _code_digests(settings, f"{email}:{code}")
    if not any(digests_match(challenge.code_digest, digest) for digest in expected):
        await failed("wrong_code")
        raise LoginFailed()
    if user is None:
        if settings.signup is not Signup.open:
            await failed("no_account")
            raise LoginFailed()
        user = User(email=email, name=email.split("@", 1)[0])
        session.add(user)
        await session.flush()
        audit.record(
            session, origin, "user.signup", actor_id=user.id, target_type="user", target_id=user.id
        )
    if user.totp_secret is not None and not (
        (totp_code and _accept_totp(settings, user, totp_code, now))
        or (recovery_code and await _use_recovery_code(session, settings, user, recovery_code))
    ):
        await failed("second_factor_missing" if not (totp_code or recovery_code) else "bad_2fa")
        raise SecondFactorRequired(
            "This account uses TOTP: send `totp_code` (or a `recovery_code`) with the code."
        )
    challenge.consumed_at = now
    access, refresh = await _start_session(session, settings, user, now)
    audit.record(
        session, origin, "auth.login", actor_id=user.id, target_type="user", target_id=user.id
    )
    return user, access, refresh


# ---- sessions ----------------------------------------------------------------------------


async def _start_session(
    session: AsyncSession,
    settings: Settings,
    user: User,
    now: datetime,
    family_id: uuid.UUID | None = None,
) -> tuple[str, str]:
    secret = new_token(REFRESH_PREFIX)
    family_id = family_id or uuid.uuid4()
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            digest=token_digest(secret),
            created_at=now,
            expires_at=now + timedelta(seconds=settings.refresh_token_ttl_s),
        )
    )
    return issue_access_token(settings, user.id, now, family_id), secret


async def _refresh_row(session: AsyncSession, secret: str) -> RefreshToken | None:
    if not secret.startswith(REFRESH_PREFIX) or len(secret) > 128:
        return None
    return await repository.refresh_token(session, token_digest(secret))


async def refresh_session(
    session: AsyncSession, settings: Settings, origin: Origin, secret: str
) -> tuple[User, str, str]:
    """Rotate: the presented token dies and a new pair is issued. A rotated token presented
    again means it was stolen (or replayed): the whole family is revoked."""
    now = utcnow()
    row = await _refresh_row(session, secret)
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized("The refresh token is invalid, expired or revoked.")
    if row.rotated_at is not None:
        await repository.revoke_family(session, row.family_id, now)
        forget_after_commit(session, f"user:{row.user_id}")
        audit.record(
            session,
            origin,
            "auth.refresh_reuse",
            outcome="failure",
            actor_id=row.user_id,
            family_id=str(row.family_id),
        )
        await commit_early(session)  # kept despite the error that follows
        raise Unauthorized("The refresh token was already used; the session is revoked.")
    user = await session.get(User, row.user_id)
    if user is None:
        raise Unauthorized("The refresh token is invalid, expired or revoked.")
    row.rotated_at = now
    access, refresh = await _start_session(session, settings, user, now, row.family_id)
    return user, access, refresh


async def logout(session: AsyncSession, origin: Origin, secret: str) -> None:
    row = await _refresh_row(session, secret)
    if row is not None and row.revoked_at is None:
        await repository.revoke_family(session, row.family_id, utcnow())
        forget_after_commit(session, f"user:{row.user_id}")
        audit.record(session, origin, "auth.logout", actor_id=row.user_id)


# ---- TOTP --------------------------------------------------------------------------------


def _accept_totp(settings: Settings, user: User, code: str, now: datetime) -> bool:
    """A current code (one step of clock drift allowed) that was not used before."""
    secret = _totp_box(settings).open(user.totp_secret or "")
    return secret is not None and _accept_totp_secret(user, secret, code, now)


def _accept_totp_secret(user: User, secret: str, code: str, now: datetime) -> bool:
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // TOTP_STEP_S
    for step in (current - 1, current, current + 1):
        if digests_match(totp.at(step * TOTP_STEP_S), code.strip()):
            if user.totp_last_step is not None and step <= user.totp_last_step:
                return False  # replay of a code already accepted
            user.totp_last_step = step
            return True
    return False


async def _use_recovery_code(
    session: AsyncSession, settings: Settings, user: User, code: str
) -> bool:
    for digest in _code_digests(settings, f"recovery:{user.id}:{code.strip().lower()}"):
        if (row := await repository.unused_recovery_code(session, user.id, digest)) is not None:
            row.used_at = utcnow()
            return True
    return False


async def changing(session: AsyncSession, user: User) -> User:
    """The user's row, read again and locked, to change it: the caller's may be a memo's
    detached copy (kit/memo.py), and two TOTP changes at once must not both pass the replay
    guard. Every memo forgets the user once the change commits."""
    found = await session.get(User, user.id, with_for_update=True, populate_existing=True)
    if found is None:
        raise Unauthorized("The bearer token is invalid, expired or revoked.")
    forget_after_commit(session, f"user:{user.id}")
    return found


async def totp_enroll(
    session: AsyncSession, settings: Settings, origin: Origin, user: User
) -> tuple[str, str, str]:
    """Start enrollment: a new secret (pending until confirmed), its otpauth URI and a QR
    code of it as SVG."""
    user = await changing(session, user)
    if user.totp_secret is not None:
        raise Conflict("TOTP is already enabled; disable it first.")
    secret = pyotp.random_base32()
    user.totp_pending_secret = _totp_box(settings).seal(secret)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=settings.totp_issuer)
    buf = io.BytesIO()
    segno.make(uri, error="m").save(buf, kind="svg", scale=4, xmldecl=False)
    audit.record(session, origin, "totp.enroll", actor_id=user.id)
    return secret, uri, buf.getvalue().decode()


async def totp_confirm(
    session: AsyncSession, settings: Settings, origin: Origin, user: User, code: str
) -> list[str]:
    """Enable TOTP with a code from the new secret; return single-use recovery codes."""
    user = await changing(session, user)
    pending = _totp_box(settings).open(user.totp_pending_secret or "")
    if pending is None:
        raise Conflict("No TOTP enrollment is in progress.")
    if not _accept_totp_secret(user, pending, code, utcnow()):
        raise InvalidCode("The TOTP code is not valid for the new secret.")
    user.totp_secret = user.totp_pending_secret
    user.totp_pending_secret = None
    user.totp_enabled_at = utcnow()
    await repository.delete_recovery_codes(session, user.id)
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(RECOVERY_CODES)]
    for c in codes:
        digest = _code_digests(settings, f"recovery:{user.id}:{c}")[0]
        session.add(RecoveryCode(user_id=user.id, digest=digest))
    audit.record(session, origin, "totp.enable", actor_id=user.id)
    return codes


async def totp_disable(
    session: AsyncSession, settings: Settings, origin: Origin, user: User, code: str
) -> None:
    user = await changing(session, user)
    if user.totp_secret is None:
        raise Conflict("TOTP is not enabled.")
    if not _accept_totp(settings, user, code, utcnow()):
        audit.record(session, origin, "totp.disable", outcome="failure", actor_id=user.id)
        await commit_early(session)  # kept despite the error that follows
        raise InvalidCode("A fresh TOTP code is required to disable TOTP.")
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    await repository.delete_recovery_codes(session, user.id)
    audit.record(session, origin, "totp.disable", actor_id=user.id)


# ---- audit log ---------------------------------------------------------------------------


async def audit_events(session: AsyncSession, chosen: AuditFilter) -> list[AuditEvent]:
    """The audit log, newest first, filtered."""
    return await repository.audit_events(session, chosen)


async def reseal_totp_secrets(session: AsyncSession, settings: Settings) -> tuple[int, int]:
    """Seal every TOTP secret again with the current secret key (a rotation's second step):
    how many were sealed again, and how many no configured key opens (left as they are)."""
    box, done, unreadable = _totp_box(settings), 0, 0
    for user in await repository.users_with_totp(session):
        for column in ("totp_secret", "totp_pending_secret"):
            if (sealed := getattr(user, column)) is None:
                continue
            if (again := box.reseal(sealed)) is None:
                unreadable += 1
            else:
                setattr(user, column, again)
                done += 1
    return done, unreadable
