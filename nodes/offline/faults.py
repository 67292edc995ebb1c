"""Injected failures for the offline server: a FIFO queue, and the error bodies gateways send.

``inject(kind, times, **params)`` queues a fault for the next ``times`` chat requests. Faults
are consumed in order across injects: ``inject("status", 2, status=429); inject("drop")`` makes
requests 1-2 answer 429 and request 3 drop its connection; request 4 is answered normally.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = ["FAULT_KINDS", "STREAM_ONLY_FAULTS", "Fault", "FaultQueue", "status_response"]

FAULT_KINDS: tuple[str, ...] = (
    "status",
    "slow",
    "hang",
    "drop",
    "reset_mid_body",
    "truncated_json",
    "not_json",
    "bad_base64",
    "no_image",
    "refusal",
    "stream_cut",
    "mid_stream_error",
    "garbage_stream",
)
# These need an SSE answer; on a non-stream request they are answered as a plain 500.
STREAM_ONLY_FAULTS = frozenset({"stream_cut", "mid_stream_error", "garbage_stream"})

STATUS_BODIES = ("openai", "openrouter", "vllm", "html", "empty", "text")

# Allowed parameters per kind, with defaults. Unknown parameters are refused so a typo in a
# test ("statsu=429") fails loudly instead of silently injecting a 500.
_PARAMS: dict[str, dict[str, object]] = {
    "status": {"status": 500, "body": "openai", "retry_after": None, "retry_after_ms": None,
               "message": None, "headers": None},
    "slow": {"delay": 1.0},
    "hang": {},
    "drop": {},
    "reset_mid_body": {},
    "truncated_json": {},
    "not_json": {},
    "bad_base64": {"value": "!!!notbase64***"},
    "no_image": {"text": "I wasn't able to generate the image because the request may violate "
                         "our policies."},
    "refusal": {"text": None},
    "stream_cut": {"progress": 2},
    "mid_stream_error": {"with_finish_reason": False, "message": "Upstream model failed."},
    "garbage_stream": {"lines": 5},
}

# OpenAI-style (type, code) per status, for the "openai" body.
_OPENAI_KINDS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", "request_timeout"),
    409: ("conflict_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


@dataclass
class Fault:
    kind: str
    params: dict = field(default_factory=dict)

    def __getitem__(self, key: str):
        return self.params[key]


@dataclass
class _Entry:
    fault: Fault
    remaining: int


def make_fault(kind: str, **params: object) -> Fault:
    """Validate ``kind`` and ``params`` (filling defaults); raises ValueError on a mistake."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    allowed = _PARAMS[kind]
    unknown = set(params) - set(allowed)
    if unknown:
        raise ValueError(f"fault {kind!r} takes no parameter(s) {sorted(unknown)}; "
                         f"allowed: {sorted(allowed) or 'none'}")
    full = {**allowed, **params}
    if kind == "status":
        status = full["status"]
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {status!r}")
        if full["body"] not in STATUS_BODIES:
            raise ValueError(f"body must be one of {STATUS_BODIES}, not {full['body']!r}")
    if kind == "slow":
        full["delay"] = float(full["delay"])  # type: ignore[arg-type]
    return Fault(kind, full)


class FaultQueue:
    """Thread-safe FIFO of faults; each entry serves ``times`` requests before the next one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: deque[_Entry] = deque()

    def push(self, kind: str, times: int = 1, **params: object) -> Fault:
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be a positive integer, not {times!r}")
        fault = make_fault(kind, **params)
        with self._lock:
            self._entries.append(_Entry(fault, times))
        return fault

    def pop(self) -> Fault | None:
        """The fault for the next request, or None when the queue is empty."""
        with self._lock:
            if not self._entries:
                return None
            entry = self._entries[0]
            entry.remaining -= 1
            if entry.remaining <= 0:
                self._entries.popleft()
            return entry.fault

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def pending(self) -> list[dict]:
        with self._lock:
            return [{"kind": e.fault.kind, "remaining": e.remaining, **e.fault.params}
                    for e in self._entries]

    def __len__(self) -> int:
        with self._lock:
            return sum(e.remaining for e in self._entries)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def status_response(fault: Fault) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) for a ``status`` fault, in the chosen gateway's style."""
    p = fault.params
    status = int(p["status"])
    message = p["message"] or f"{_phrase(status)} (offline fault)"
    style = p["body"]
    headers: dict[str, str] = {}
    if style == "openai":
        etype, code = _OPENAI_KINDS.get(status, ("server_error" if status >= 500 else
                                                 "invalid_request_error", None))
        doc = {"error": {"message": message, "type": etype, "param": None, "code": code}}
        body, headers["Content-Type"] = json.dumps(doc).encode(), "application/json"
    elif style == "openrouter":
        doc = {"error": {"code": status, "message": message,
                         "metadata": {"provider_name": "offline", "raw": message}}}
        body, headers["Content-Type"] = json.dumps(doc).encode(), "application/json"
    elif style == "vllm":
        doc = {"object": "error", "message": message, "type": _phrase(status).replace(" ", ""),
               "param": None, "code": status}
        body, headers["Content-Type"] = json.dumps(doc).encode(), "application/json"
    elif style == "html":
        title = f"{status} {_phrase(status)}"
        body = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}"
                f"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n").encode()
        headers["Content-Type"] = "text/html"
    elif style == "text":
        body, headers["Content-Type"] = message.encode(), "text/plain; charset=utf-8"
    else:  # empty
        body = b""
    if p["retry_after"] is not None:
        headers["Retry-After"] = str(p["retry_after"])
    if p["retry_after_ms"] is not None:
        headers["retry-after-ms"] = str(p["retry_after_ms"])
    for key, value in (p["headers"] or {}).items():
        headers[str(key)] = str(value)
    return status, headers, body
