"""Exceptions raised by the client."""

from __future__ import annotations

from typing import Any


class ClientError(RuntimeError):
    """Base of every client exception."""


class ServerError(ClientError):
    """The server answered a request with `error`."""

    def __init__(self, code: str, message: str, raw: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.raw = raw or {}


class AuthRejected(ClientError):
    """The server refused the control token (HTTP 401 before the upgrade); retrying will not help."""


class ConnectionLost(ClientError):
    """The link dropped before a request was answered."""


class GaveUp(ClientError):
    """Every reconnect attempt allowed by the backoff policy failed, or the client was closed."""
