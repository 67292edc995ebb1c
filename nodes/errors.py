"""Typed errors: one module, one hierarchy.

Every message says what happened and what to do. No message ever holds the API key or a
base64 payload: server-provided text goes through :func:`scrub` before it is kept.
"""

from __future__ import annotations

import re

__all__ = [
    "GPTImageError",
    "ConfigurationError",
    "InvalidInputError",
    "APIError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "BadRequestError",
    "PayloadTooLargeError",
    "InsufficientCreditsError",
    "RateLimitError",
    "ServerError",
    "TimeoutError",
    "ConnectionError",
    "ContentFilterError",
    "NoImageError",
    "MalformedAnswerError",
    "CancelledError",
    "scrub",
]

# Long runs of base64 alphabet (data URLs or bare), bearer tokens and sk- style keys.
_DATA_URL = re.compile(r"data:[\w/+.-]*;base64,[A-Za-z0-9+/=_\-\s]*", re.IGNORECASE)
_LONG_B64 = re.compile(r"[A-Za-z0-9+/_\-]{120,}={0,2}")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")

_MAX_SERVER_TEXT = 500


def scrub(text: object, *secrets: str | None) -> str:
    """Make server or user text safe to show: no secrets, no base64 payloads, bounded length."""
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "[redacted]")
    out = _DATA_URL.sub("data:…[base64 omitted]", out)
    out = _LONG_B64.sub("[base64 omitted]", out)
    out = _BEARER.sub(r"\1[redacted]", out)
    out = _SK_KEY.sub("sk-[redacted]", out)
    out = out.strip()
    if len(out) > _MAX_SERVER_TEXT:
        out = out[:_MAX_SERVER_TEXT] + "…"
    return out


class GPTImageError(Exception):
    """Base of every error this package raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(GPTImageError):
    """The key, base URL, model or config file is missing or unusable."""


class InvalidInputError(GPTImageError, ValueError):
    """A prompt, size, quality, n, image or workflow input was refused before sending."""


class CancelledError(GPTImageError):
    """The caller asked to stop (ComfyUI's Cancel, Ctrl-C, a closed browser tab)."""


class APIError(GPTImageError):
    """The service answered, but not with what was asked for."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        server_message: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.error_type = error_type
        self.request_id = request_id
        self.server_message = server_message
        self.attempts = attempts


class AuthenticationError(APIError):
    """401: the key was refused."""


class PermissionDeniedError(APIError):
    """403: the key may not use this model or endpoint."""


class NotFoundError(APIError):
    """404: wrong base URL or model name."""


class BadRequestError(APIError):
    """400/422: the service refused the request itself (size, image format, ...)."""


class PayloadTooLargeError(BadRequestError):
    """413: the request body is too large for the gateway."""


class InsufficientCreditsError(APIError):
    """402: the account has no credit left."""


class RateLimitError(APIError):
    """429: too many requests; retried with backoff before this is raised."""


class ServerError(APIError):
    """5xx, 408 or 409: the service or a proxy in front of it failed."""


class TimeoutError(APIError):  # noqa: A001 - deliberately shadows the builtin inside this package
    """Connecting, reading or the whole request took longer than allowed."""


class ConnectionError(APIError):  # noqa: A001
    """The service could not be reached or dropped the connection."""


class ContentFilterError(APIError):
    """The model refused the prompt or image (finish_reason content_filter, or a refusal text)."""


class NoImageError(APIError):
    """An image was asked for and the answer held none; the model's text is in the message."""


class MalformedAnswerError(APIError):
    """The answer could not be read: not JSON, truncated, bad base64, an unreadable image."""
