from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from bem.auth.schemas import Email
from bem.kit.text import KeyName
from bem.kit.text import LongText as Description
from bem.kit.text import Name as ProjectName


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ProjectName
    description: Description | None = None


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ProjectName | None = None
    description: Description | None = None


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str | None
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: KeyName
    description: Description | None = None


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    description: str | None
    created_at: datetime


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["owner", "editor", "viewer"]


class MemberAdd(MemberSet):
    email: Email


class MemberOut(BaseModel):
    user_id: uuid.UUID
    email: str
    name: str
    role: Literal["owner", "editor", "viewer"]
    created_at: datetime
