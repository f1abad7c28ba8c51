"""The control secret (ROOMSCRIBE_CONTROL_SECRET): what a server refuses, and how to make a good one.

Whoever knows the secret can mint control tokens for any user, `monitor` claim included, so a
server never starts with the `.env.example` placeholder, with fewer than 32 bytes, or with a
repeated pattern.
"""

from __future__ import annotations

import secrets

SECRET_ENV = "ROOMSCRIBE_CONTROL_SECRET"
#: The value `.env.example` ships with; anyone who has read that file knows it.
PLACEHOLDER_CONTROL_SECRET = "change-me-to-32-random-bytes-before-use"
MIN_CONTROL_SECRET_BYTES = 32
#: Fewer distinct characters than this is a pattern ("xxxx…"), not a random secret.
MIN_DISTINCT_CHARACTERS = 8
#: Random bytes in a secret from `new_control_secret()` (43 URL-safe characters).
NEW_SECRET_BYTES = 32
HOW_TO_GENERATE = (
    f"generate one with `roomscribe secret` "
    f"(or: python -c \"import secrets; print(secrets.token_urlsafe({NEW_SECRET_BYTES}))\") "
    f"and set it as {SECRET_ENV} in .env"
)


class WeakSecretError(ValueError):
    """The control secret is missing, the placeholder, or too short; the message says how to fix it."""


def new_control_secret() -> str:
    """A fresh control secret: 32 random bytes, URL-safe base64 (what `roomscribe secret` prints)."""
    return secrets.token_urlsafe(NEW_SECRET_BYTES)


def check_control_secret(secret: str) -> None:
    """Raise WeakSecretError unless `secret` is fit to sign control tokens (never echoes it)."""
    if not secret:
        problem = f"{SECRET_ENV} is not set"
    elif secret == PLACEHOLDER_CONTROL_SECRET:
        problem = f"{SECRET_ENV} is still the placeholder from .env.example"
    elif len(secret.encode("utf-8")) < MIN_CONTROL_SECRET_BYTES:
        problem = f"{SECRET_ENV} is too short (at least {MIN_CONTROL_SECRET_BYTES} bytes)"
    elif len(set(secret)) < MIN_DISTINCT_CHARACTERS:
        problem = f"{SECRET_ENV} repeats a few characters: it is a pattern, not a random secret"
    else:
        return
    raise WeakSecretError(f"{problem}: {HOW_TO_GENERATE}")
