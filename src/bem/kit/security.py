"""Secrets: generation, digests, keyed digests and symmetric encryption at rest.

High-entropy tokens are stored as SHA-256 digests (a slow password hash adds nothing for
256-bit random values and would cost every request). Low-entropy codes (emailed OTPs,
recovery codes) are stored as HMAC-SHA256 under a key derived from the server secret, so a
database dump alone does not let anyone test guesses offline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

TOKEN_PREFIX = "bem_pat_"  # noqa: S105 - a public prefix, not a secret
REFRESH_PREFIX = "bem_rt_"


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, so no two features share key material."""
    return hmac.new(secret.encode(), f"bem:{purpose}".encode(), hashlib.sha256).digest()


def keyed_digest(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def digests_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def numeric_code(digits: int) -> str:
    return "".join(str(secrets.randbelow(10)) for _ in range(digits))


class SecretBox:
    """Fernet (AES-128-CBC + HMAC) with keys derived from the server secret and the secrets
    it replaced: seals with the first, opens what any of them sealed, and seals an old seal
    again with the first (``reseal``), so a secret key can be rotated."""

    def __init__(self, secret_keys: Sequence[str], purpose: str) -> None:
        keys = [Fernet(base64.urlsafe_b64encode(derive_key(k, purpose))) for k in secret_keys]
        self._fernet = MultiFernet(keys)

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str | None:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            return None

    def reseal(self, token: str) -> str | None:
        """``token`` sealed with the first key (None: no key opens it)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            return None
