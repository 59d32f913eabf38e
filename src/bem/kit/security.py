"""Opaque secrets: generation and hashing. High-entropy tokens are stored as SHA-256
digests (a slow password hash adds nothing for 256-bit random values and would cost every
request)."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "bem_pat_"  # noqa: S105 - a public prefix, not a secret


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
