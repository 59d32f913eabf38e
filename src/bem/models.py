"""Every table, imported in one place so Alembic and tests see the whole schema."""

from bem.auth.models import ApiToken, AuditEvent, OtpChallenge, RecoveryCode, RefreshToken, User
from bem.events.models import Event, Webhook, WebhookDelivery
from bem.geometry.models import VersionGeometry
from bem.jobs.models import Job
from bem.ops.models import Backup
from bem.projects.models import Membership, Model, Project
from bem.versions.models import ElementFacts, ElementPayload, Relation, Version, VersionElement

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Backup",
    "ElementFacts",
    "ElementPayload",
    "Event",
    "Job",
    "Membership",
    "Model",
    "OtpChallenge",
    "Project",
    "RecoveryCode",
    "RefreshToken",
    "Relation",
    "User",
    "Version",
    "VersionElement",
    "VersionGeometry",
    "Webhook",
    "WebhookDelivery",
]
