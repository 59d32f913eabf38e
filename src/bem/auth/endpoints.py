from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response, status

from bem.auth import audit, service
from bem.auth.audit import origin_of
from bem.auth.dependencies import allow
from bem.auth.models import ApiToken, Principal
from bem.auth.permissions import ACCOUNT, ADMIN, AUTHENTICATED, PUBLIC
from bem.auth.schemas import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenOut,
    AuditEventOut,
    AuditFilter,
    OtpRequest,
    OtpVerify,
    RecoveryCodes,
    RefreshIn,
    TokenPair,
    TotpCode,
    TotpEnrollment,
    UserInvite,
    UserOut,
)
from bem.config import Settings
from bem.kit.db import SessionDep
from bem.kit.errors import Unprocessable, problem_responses
from bem.kit.logging import get_logger
from bem.kit.mail import MailError, send_mail
from bem.kit.pagination import (
    CursorParam,
    InvalidCursor,
    LimitParam,
    Page,
    decode_cursor,
    page_of,
)
from bem.kit.ratelimit import rate_limit
from bem.kit.state import SettingsDep, StateDep

router = APIRouter(prefix="/v1", responses=problem_responses(401, 422))
log = get_logger("bem.auth")

ISO_WITH_ZONE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"
Timestamp = Annotated[
    str | None,
    Query(pattern=ISO_WITH_ZONE, description="ISO 8601 with a zone, e.g. 2026-11-25T08:00:00Z"),
]


def parse_timestamp(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Unprocessable(
            f"{value!r} is not a valid timestamp.", slug="validation-error"
        ) from exc


Public = Annotated[None, allow(PUBLIC)]
Authenticated = Annotated[Principal, allow(AUTHENTICATED)]
Account = Annotated[Principal, allow(ACCOUNT)]
Admin = Annotated[Principal, allow(ADMIN)]


async def _deliver_code(settings: Settings, email: str, code: str) -> None:
    minutes = settings.otp_ttl_s // 60
    body = (
        f"Your BEM sign-in code is {code}\n\n"
        f"It works once and expires in {minutes} minutes. If you did not ask for it, "
        "ignore this message.\n"
    )
    try:
        await send_mail(settings, email, "Your BEM sign-in code", body)
    except MailError as exc:
        log.error("otp_mail_failed", error=str(exc), email=audit.mask_email(email))


@router.post(
    "/auth/otp/request",
    dependencies=[rate_limit("auth")],
    responses=problem_responses(429),
    status_code=status.HTTP_202_ACCEPTED,
    tags=["auth"],
    summary="Email a one-time sign-in code (always 202: accounts are not enumerable)",
)
async def request_code(
    data: OtpRequest,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    _: Public,
) -> dict[str, str]:
    code = await service.request_otp(session, settings, origin_of(request), data.email)
    if code is not None:
        background.add_task(_deliver_code, settings, service.normalize_email(data.email), code)
    return {"status": "accepted", "detail": "If the address may sign in, a code is on its way."}


def _pair(settings: Settings, access: str, refresh: str) -> TokenPair:
    return TokenPair(
        access_token=access, expires_in=settings.access_token_ttl_s, refresh_token=refresh
    )


@router.post(
    "/auth/otp/verify",
    dependencies=[rate_limit("auth")],
    responses=problem_responses(429),
    response_model=TokenPair,
    tags=["auth"],
    summary="Exchange an emailed code (and TOTP, if enabled) for a session",
)
async def verify_code(
    data: OtpVerify, request: Request, session: SessionDep, settings: SettingsDep, _: Public
) -> TokenPair:
    _user, access_token, refresh_token = await service.verify_otp(
        session,
        settings,
        origin_of(request),
        data.email,
        data.code,
        data.totp_code,
        data.recovery_code,
    )
    return _pair(settings, access_token, refresh_token)


@router.post(
    "/auth/token/refresh",
    dependencies=[rate_limit("auth")],
    responses=problem_responses(429),
    response_model=TokenPair,
    tags=["auth"],
    summary="Rotate a refresh token into a new session pair",
)
async def refresh(
    data: RefreshIn, request: Request, session: SessionDep, settings: SettingsDep, _: Public
) -> TokenPair:
    _user, access_token, refresh_token = await service.refresh_session(
        session, settings, origin_of(request), data.refresh_token
    )
    return _pair(settings, access_token, refresh_token)


@router.post(
    "/auth/logout",
    dependencies=[rate_limit("auth")],
    responses=problem_responses(429),
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["auth"],
    summary="Revoke a refresh token and every token rotated from the same login",
)
async def logout(data: RefreshIn, request: Request, session: SessionDep, _: Public) -> None:
    await service.logout(session, origin_of(request), data.refresh_token)


@router.get("/me", response_model=UserOut, tags=["identity"], summary="The calling user")
async def me(caller: Authenticated) -> UserOut:
    return UserOut.of(caller.user)


@router.post(
    "/me/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiTokenCreated,
    tags=["identity"],
    summary="Create a personal API token (the secret is shown once)",
    description="The new token never reaches further than the credential that makes it: "
    "no scope it lacks; a token bound to a project makes tokens bound to that project (the "
    "binding is inherited when `project_id` is omitted); a token with an expiry makes tokens "
    "that expire no later (inherited likewise).",
    responses=problem_responses(403, 404),
)
async def create_token(
    data: ApiTokenCreate, request: Request, session: SessionDep, state: StateDep, caller: Account
) -> ApiTokenCreated:
    token, secret = await service.create_token(
        session,
        origin_of(request),
        caller,
        state.resource(service.ProjectDirectory).visible,
        data.name,
        data.scopes,
        data.project_id,
        data.expires_at,
    )
    return ApiTokenCreated(**ApiTokenOut.model_validate(token).model_dump(), token=secret)


@router.get(
    "/me/tokens",
    response_model=list[ApiTokenOut],
    tags=["identity"],
    summary="Your active personal API tokens (never their secrets)",
)
async def list_tokens(session: SessionDep, caller: Account) -> list[ApiToken]:
    return await service.list_tokens(session, caller.user)


@router.delete(
    "/me/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["identity"],
    summary="Revoke one of your tokens",
    responses=problem_responses(404),
)
async def revoke_token(
    token_id: uuid.UUID, request: Request, session: SessionDep, caller: Account
) -> None:
    await service.revoke_token(session, origin_of(request), caller.user, token_id)


@router.post(
    "/me/totp",
    response_model=TotpEnrollment,
    tags=["identity"],
    summary="Start TOTP enrollment: secret, otpauth URI and QR code (SVG)",
    responses=problem_responses(409),
)
async def totp_enroll(
    request: Request, session: SessionDep, settings: SettingsDep, caller: Account
) -> TotpEnrollment:
    secret, uri, svg = await service.totp_enroll(session, settings, origin_of(request), caller.user)
    return TotpEnrollment(secret=secret, otpauth_uri=uri, qr_svg=svg)


@router.post(
    "/me/totp/confirm",
    response_model=RecoveryCodes,
    tags=["identity"],
    summary="Confirm TOTP with a code; returns single-use recovery codes",
    responses=problem_responses(400, 409),
)
async def totp_confirm(
    data: TotpCode, request: Request, session: SessionDep, settings: SettingsDep, caller: Account
) -> RecoveryCodes:
    codes = await service.totp_confirm(
        session, settings, origin_of(request), caller.user, data.code
    )
    return RecoveryCodes(recovery_codes=codes)


@router.post(
    "/me/totp/disable",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["identity"],
    summary="Disable TOTP with a fresh code",
    responses=problem_responses(400, 409),
)
async def totp_disable(
    data: TotpCode, request: Request, session: SessionDep, settings: SettingsDep, caller: Account
) -> None:
    await service.totp_disable(session, settings, origin_of(request), caller.user, data.code)


@router.post(
    "/admin/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    tags=["admin"],
    summary="Invite a user (they sign in with an emailed code)",
    responses=problem_responses(403, 409),
)
async def invite_user(
    data: UserInvite, request: Request, session: SessionDep, caller: Admin
) -> UserOut:
    user = await service.invite_user(
        session, origin_of(request), caller.user, data.email, data.name, data.is_admin
    )
    return UserOut.of(user)


@router.get(
    "/admin/audit",
    response_model=Page[AuditEventOut],
    tags=["admin"],
    summary="The audit log, newest first, with filters",
    responses=problem_responses(400, 403),
)
async def audit_log(
    session: SessionDep,
    _: Admin,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$")] = None,
    actor_id: uuid.UUID | None = None,
    since: Timestamp = None,
    until: Timestamp = None,
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> Page[AuditEventOut]:
    values = decode_cursor(cursor, 1)
    if values is not None and not isinstance(values[0], int):
        raise InvalidCursor()
    chosen = AuditFilter(
        action=action,
        actor_id=actor_id,
        since=parse_timestamp(since),
        until=parse_timestamp(until),
        before_id=values[0] if values else None,
        limit=limit + 1,
    )
    rows = await service.audit_events(session, chosen)
    page, next_cursor = page_of(rows, limit, lambda e: [e.id])
    return Page(items=[AuditEventOut.model_validate(e) for e in page], next_cursor=next_cursor)
