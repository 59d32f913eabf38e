from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from bem.auth.permissions import Scope
from bem.kit.text import Name

Email = Annotated[
    StrictStr,
    Field(min_length=3, max_length=254, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$"),
]
Code = Annotated[StrictStr, Field(min_length=6, max_length=10, pattern=r"^[0-9]+$")]
OpaqueSecret = Annotated[StrictStr, Field(min_length=8, max_length=128, pattern=r"^[\w-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str
    is_admin: bool
    totp_enabled: bool = False
    created_at: datetime

    @classmethod
    def of(cls, user: object) -> UserOut:
        out = cls.model_validate(user)
        out.totp_enabled = getattr(user, "totp_secret", None) is not None
        return out


class OtpRequest(Strict):
    email: Email


class OtpVerify(Strict):
    email: Email
    code: Code
    totp_code: Code | None = None
    recovery_code: Annotated[StrictStr, Field(max_length=32)] | None = None


class TokenPair(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name
    expires_in: int
    refresh_token: str


class RefreshIn(Strict):
    refresh_token: OpaqueSecret


class ApiTokenCreate(Strict):
    name: Name
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(Scope))]
    project_id: uuid.UUID | None = None
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires_at needs a timezone (e.g. 2027-01-01T00:00:00Z)")
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future")
        return value


class ApiTokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    display_prefix: str
    scopes: list[str]
    project_id: uuid.UUID | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="The secret: shown once, store it now.")


class TotpEnrollment(BaseModel):
    secret: str
    otpauth_uri: str
    qr_svg: str


class TotpCode(Strict):
    code: Code


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(description="Single-use codes: shown once, store them.")


class UserInvite(Strict):
    email: Email
    name: Name
    is_admin: StrictBool = False


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    action: str
    outcome: str
    actor_id: uuid.UUID | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    target_type: str | None
    target_id: str | None
    details: dict[str, object]


@dataclass(frozen=True)
class AuditFilter:
    """Which audit events to list (newest first; ``before_id`` is the keyset cursor)."""

    action: str | None
    actor_id: uuid.UUID | None
    since: datetime | None
    until: datetime | None
    before_id: int | None
    limit: int
