"""What never leaves the process in clear: one list for the log and for error reports.

Keys that name a secret (their value is masked whole) and patterns of secrets inside any
text (tokens, JWTs, email addresses). Error reports add one-time codes (six to ten digits),
which in log lines would mask ordinary numbers and are never logged anyway.
"""

from __future__ import annotations

import re

MASK = "[Filtered]"
# A key ending in one of these holds a secret: ``refresh_token``, ``totp_code``, ``X-Api-Key``.
SECRET_KEY = re.compile(r"(authorization|cookie|token|secret|password|otp|code|dsn|key)$", re.I)
NOT_SECRET_KEYS = frozenset({"status_code"})
SECRET_TEXT = (
    re.compile(r"bem_(?:pat|rt)_[A-Za-z0-9_-]+"),  # API and refresh tokens
    re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),  # email addresses
)
# Not next to a hyphen: a UUID whose first group is all digits (2 % of them) lost it, and
# job ids in error reports read "[Filtered]-54ab-...".
ONE_TIME_CODE = re.compile(r"(?<![0-9A-Za-z-])[0-9]{6,10}(?![0-9A-Za-z-])")


def secret_key(name: str) -> bool:
    return name not in NOT_SECRET_KEYS and SECRET_KEY.search(name) is not None


def mask_text(text: str, patterns: tuple[re.Pattern[str], ...] = SECRET_TEXT) -> str:
    for pattern in patterns:
        text = pattern.sub(MASK, text)
    return text
