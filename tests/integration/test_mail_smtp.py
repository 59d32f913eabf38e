"""OTP mail through a real SMTP server (aiosmtpd) started by the test on 127.0.0.1."""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from typing import Any

from aiosmtpd.controller import Controller

from bem.kit.mail import MailError, send_mail
from tests.conftest import make_api, settings_for
from tests.helpers import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


async def test_otp_code_arrives_over_smtp(sqlite_url: str) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = settings_for(
            sqlite_url,
            mail_backend="smtp",
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security="none",
            smtp_timeout_s=5,
        )
        async with make_api(settings) as api:
            admin = await api.user("root", admin=True)
            await api.client.post(
                "/v1/admin/users", json={"email": "bob@example.com", "name": "Bob"}, headers=admin
            )
            r = await api.client.post("/v1/auth/otp/request", json={"email": "bob@example.com"})
            assert r.status_code == 202
            for _ in range(50):
                if inbox.messages:
                    break
                await asyncio.sleep(0.05)
        assert len(inbox.messages) == 1
        recipients, message = inbox.messages[0]
        assert recipients == ["bob@example.com"]
        assert "sign-in code" in message["Subject"]
        assert "expires in 10 minutes" in message.get_payload()
    finally:
        controller.stop()


async def test_unreachable_smtp_is_a_mail_error_within_the_timeout(sqlite_url: str) -> None:
    settings = settings_for(
        sqlite_url,
        mail_backend="smtp",
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        smtp_security="none",
        smtp_timeout_s=1,
    )
    try:
        await asyncio.wait_for(send_mail(settings, "x@example.com", "s", "b"), 5)
    except MailError as exc:
        assert "failed" in str(exc)
    else:
        raise AssertionError("sending to a closed port must fail")
