"""Outgoing mail: SMTP in production, ``console`` and ``file`` backends for development and
tests. Every send has a timeout; failures raise :class:`MailError` for the caller to log."""

from __future__ import annotations

import sys
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib
import anyio

from bem.config import MailBackend, Settings, SmtpSecurity


class MailError(Exception):
    pass


def build_message(settings: Settings, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="bem.invalid")
    message.set_content(body)
    return message


async def send_mail(settings: Settings, to: str, subject: str, body: str) -> None:
    message = build_message(settings, to, subject, body)
    if settings.mail_backend is MailBackend.console:
        # For a developer's terminal only: the message (with any code) bypasses the logs.
        sys.stderr.write(f"---- mail ----\n{message.as_string()}---- end mail ----\n")
        return
    if settings.mail_backend is MailBackend.file:
        directory = anyio.Path(settings.mail_file_dir)
        await directory.mkdir(parents=True, exist_ok=True)
        await (directory / f"{uuid.uuid4().hex}.eml").write_bytes(message.as_bytes())
        return
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password,
            use_tls=settings.smtp_security is SmtpSecurity.ssl,
            start_tls=settings.smtp_security is SmtpSecurity.starttls,
            timeout=settings.smtp_timeout_s,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise MailError(f"SMTP delivery to {settings.smtp_host} failed: {exc}") from exc
