"""Time: timeouts, retry policy with jittered backoff, Retry-After, and cancellable waiting."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping, TypeVar

from .errors import CancelledError

__all__ = ["Timeouts", "RetryPolicy", "CancelCheck", "retry_after_seconds", "run_cancellable", "sleep_cancellable"]

T = TypeVar("T")
CancelCheck = Callable[[], bool]

#: How often a caller's cancel check is polled; well inside the one-second promise.
CANCEL_POLL_SECONDS = 0.1

#: Besides every 5xx: timeout, conflict and rate limit are worth another try.
RETRY_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``read`` is the longest silence while waiting for the answer: image models
    often send nothing for a minute or more. ``total`` bounds one whole call, retries included."""

    connect: float = 10.0
    read: float = 300.0
    write: float = 60.0
    total: float = 900.0


@dataclass(frozen=True)
class RetryPolicy:
    """Retries after 408/409/429/5xx, timeouts and connection errors; never after a stream
    has started delivering, and never on a 4xx that would fail again."""

    max_retries: int = 3
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    #: A Retry-After longer than this is not waited for: the call fails with the server's figure.
    max_retry_after: float = 60.0

    def backoff(self, retry_index: int) -> float:
        base = min(self.initial_backoff * 2**retry_index, self.max_backoff)
        return base * (1 - 0.25 * random.random())

    def should_retry_status(self, status: int) -> bool:
        return status in RETRY_STATUSES or 500 <= status < 600


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``retry-after-ms`` first, then ``Retry-After`` in seconds or as an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def run_cancellable(awaitable: Awaitable[T], cancel_check: CancelCheck | None) -> T:
    """Await ``awaitable``; if ``cancel_check()`` turns true, cancel it and raise CancelledError."""
    if cancel_check is None:
        return await awaitable
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CANCEL_POLL_SECONDS)
            if done:
                return task.result()
            if _cancelled(cancel_check):
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise CancelledError("Cancelled by the user; the request was stopped.")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _cancelled(cancel_check: CancelCheck) -> bool:
    try:
        return bool(cancel_check())
    except BaseException:  # ComfyUI's check raises its own interrupt exception: that is a yes
        return True


async def sleep_cancellable(seconds: float, cancel_check: CancelCheck | None) -> None:
    await run_cancellable(asyncio.sleep(max(0.0, seconds)), cancel_check)
