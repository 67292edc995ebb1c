"""Reading answers: find every image a message carries, its text, usage and errors.

One walker serves whole messages and stream deltas alike. It knows the seed's shape and the
gateway variants (``image_base64`` parts, ``image_url`` parts, an ``images`` list, markdown
images with data URLs or links, several choices), and falls back to a generic search: any data
URL, any base64 value under an image-ish key that sniffs as an image, any ``url`` under an image
key. Unknown part types are skipped, never fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from . import errors
from .codecs import decode_base64, sniff_format
from .errors import scrub

__all__ = ["ImageRef", "Usage", "MessageParts", "walk_message", "text_images", "parse_answer", "error_body", "error_class", "make_api_error"]

MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?((?:data:image/[\w.+-]+;base64,[A-Za-z0-9+/=_\-\s]+)|(?:https?://[^\s)>]+))>?(?:\s+\"[^\"]*\")?\s*\)")
BARE_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,[A-Za-z0-9+/=_\-]+")
_B64ISH = re.compile(r"^[A-Za-z0-9+/=_\-\s]+$")
#: Keys whose value can only be image data: decoded strictly, damage is an error.
_STRICT_IMAGE_KEYS = {"image_base64", "b64_json", "image_b64"}
#: Keys that may hold image data among other things: taken only if they sniff as an image.
_IMAGE_KEYS = {"image", "b64", "base64", "data", "bytes", "result"}
_URL_KEYS = {"url", "image_url", "uri", "href", "link"}
_TEXT_KEYS = {"content", "text", "refusal", "reasoning_content"}
_SKIP_KEYS = {"type", "index", "role", "id", "detail", "mime_type", "finish_reason", "name"}


@dataclass(frozen=True)
class ImageRef:
    """An image found in an answer: decoded bytes, or a link still to fetch."""

    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class Usage:
    """Token usage as the service reported it; fields it did not send stay None."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: dict[str, int] = field(default_factory=dict)
    completion_tokens_details: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Any) -> "Usage | None":
        if not isinstance(obj, dict):
            return None

        def num(value: Any) -> int | None:
            return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        def details(value: Any) -> dict[str, int]:
            if not isinstance(value, dict):
                return {}
            return {str(k): v for k, v in ((k, num(v)) for k, v in value.items()) if v is not None}

        usage = cls(
            num(obj.get("prompt_tokens", obj.get("input_tokens"))),
            num(obj.get("completion_tokens", obj.get("output_tokens"))),
            num(obj.get("total_tokens")),
            details(obj.get("prompt_tokens_details", obj.get("input_tokens_details"))),
            details(obj.get("completion_tokens_details", obj.get("output_tokens_details"))),
        )
        return usage if usage.as_dict() else None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.prompt_tokens_details:
            out["prompt_tokens_details"] = dict(self.prompt_tokens_details)
        if self.completion_tokens_details:
            out["completion_tokens_details"] = dict(self.completion_tokens_details)
        return out

    def __add__(self, other: "Usage | None") -> "Usage":
        if other is None:
            return self

        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        def add_details(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}

        return Usage(
            add(self.prompt_tokens, other.prompt_tokens),
            add(self.completion_tokens, other.completion_tokens),
            add(self.total_tokens, other.total_tokens),
            add_details(self.prompt_tokens_details, other.prompt_tokens_details),
            add_details(self.completion_tokens_details, other.completion_tokens_details),
        )



@dataclass
class MessageParts:
    """What one message (or stream delta) carried."""

    images: list[ImageRef] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    refusal: str | None = None


def _image_from_data_url(url: str) -> ImageRef:
    _, _, payload = url.partition(",")
    return ImageRef(data=decode_base64(payload))


def _maybe_b64_image(value: str) -> ImageRef | None:
    """Bare base64 that decodes to image bytes; anything else is not an image."""
    if len(value) < 32 or not _B64ISH.match(value[:256]):
        return None
    head = value[:64].strip()
    try:
        probe = decode_base64(head[: len(head) // 4 * 4])
    except errors.MalformedAnswerError:
        return None
    if sniff_format(probe) is None:
        return None
    return ImageRef(data=decode_base64(value))  # strict: a damaged payload is an error


def text_images(text: str, out: MessageParts) -> None:
    """Markdown images and bare data URLs inside text; the rest is the model's text."""
    found = False
    for match in MARKDOWN_IMAGE.finditer(text):
        url = match.group(1).strip()
        out.images.append(_image_from_data_url(url) if url.startswith("data:") else ImageRef(url=url))
        found = True
    rest = MARKDOWN_IMAGE.sub("", text) if found else text
    if "data:image/" in rest:
        for match in BARE_DATA_URL.finditer(rest):
            out.images.append(_image_from_data_url(match.group(0)))
        rest = BARE_DATA_URL.sub("", rest)
    if rest:
        out.text.append(rest)


def _walk(value: Any, key: str | None, out: MessageParts, depth: int = 0) -> None:
    if depth > 12:
        return
    if isinstance(value, dict):
        items = value.items()
        for k, v in items:
            if k in _SKIP_KEYS:
                continue
            _walk(v, k, out, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _walk(item, key, out, depth + 1)
    elif isinstance(value, str):
        if not value:
            return
        if key == "refusal":
            out.refusal = value
        elif value.startswith("data:image/") or value.startswith("data:application/octet-stream;base64,"):
            out.images.append(_image_from_data_url(value))
        elif key in _URL_KEYS and value.startswith(("http://", "https://")):
            out.images.append(ImageRef(url=value))
        elif key in _STRICT_IMAGE_KEYS:
            out.images.append(ImageRef(data=decode_base64(value)))
        elif key in _IMAGE_KEYS:
            ref = _maybe_b64_image(value)
            if ref is not None:
                out.images.append(ref)
        elif key in _TEXT_KEYS:
            text_images(value, out)


def walk_message(message: Any) -> MessageParts:
    """Images and text in a message or delta, in document order."""
    out = MessageParts()
    if isinstance(message, dict):
        # content first, then the images list and any other field: the order gateways use.
        ordered = sorted(message.items(), key=lambda kv: 0 if kv[0] == "content" else 1)
        for k, v in ordered:
            if k in _SKIP_KEYS:
                continue
            _walk(v, k, out)
    else:
        _walk(message, "content", out)
    return out


def error_body(body: Any) -> dict | None:
    """The error object of an answer or stream chunk in any known shape, or None."""
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, dict):
        return err
    if isinstance(err, str) and err:
        return {"message": err}
    if body.get("object") == "error":
        return body
    return None


_BY_STATUS: dict[int, type[errors.APIError]] = {
    400: errors.BadRequestError, 401: errors.AuthenticationError, 402: errors.InsufficientCreditsError,
    403: errors.PermissionDeniedError, 404: errors.NotFoundError, 408: errors.ServerError,
    409: errors.ServerError, 413: errors.PayloadTooLargeError, 422: errors.BadRequestError,
    429: errors.RateLimitError,
}
_BY_CODE: dict[str, type[errors.APIError]] = {
    "invalid_api_key": errors.AuthenticationError, "authentication_error": errors.AuthenticationError,
    "insufficient_quota": errors.InsufficientCreditsError, "rate_limit_exceeded": errors.RateLimitError,
    "rate_limit_error": errors.RateLimitError, "model_not_found": errors.NotFoundError,
    "content_filter": errors.ContentFilterError, "content_policy_violation": errors.ContentFilterError,
    "moderation_blocked": errors.ContentFilterError, "invalid_request_error": errors.BadRequestError,
    "invalid_image": errors.BadRequestError, "server_error": errors.ServerError,
    "permission_error": errors.PermissionDeniedError,
}
_ADVICE: dict[type[errors.APIError], str] = {
    errors.AuthenticationError: "Check the API key (GPT_IMAGE_API_KEY or the config file).",
    errors.PermissionDeniedError: "This key may not use this model; check the account or the model name.",
    errors.NotFoundError: "Check the base URL and the model name for this gateway.",
    errors.BadRequestError: "Change the request (size, quality, n, prompt or image) and try again.",
    errors.PayloadTooLargeError: "Send smaller or fewer images.",
    errors.InsufficientCreditsError: "Top up the account, then try again.",
    errors.RateLimitError: "Wait a little, lower the number of parallel requests, then try again.",
    errors.ServerError: "The service failed; try again in a minute.",
    errors.ContentFilterError: "Rephrase the prompt or use another image; retrying the same request will not help.",
}


def error_class(status: int | None, code: Any, error_type: Any) -> type[errors.APIError]:
    """Specific error codes first, then the HTTP status, then a numeric code, then the type."""
    if isinstance(code, str) and code in _BY_CODE:
        cls = _BY_CODE[code]
        # A 5xx with a generic "invalid request" code is still a server failure.
        if status is not None and status >= 500 and cls is errors.BadRequestError:
            return errors.ServerError
        return cls
    if status is not None and status in _BY_STATUS:
        return _BY_STATUS[status]
    if isinstance(code, int) and code in _BY_STATUS:
        return _BY_STATUS[code]
    if isinstance(code, int) and code >= 500:
        return errors.ServerError
    if status is not None and status >= 500:
        return errors.ServerError
    if isinstance(error_type, str) and error_type in _BY_CODE:
        return _BY_CODE[error_type]
    if status is not None and 400 <= status < 500:
        return errors.BadRequestError
    return errors.ServerError


def make_api_error(
    status: int | None, body: Any, *, request_id: str | None = None, secret: str | None = None,
    what: str = "The service",
) -> errors.APIError:
    """A typed error for an error body (any of the OpenAI, OpenRouter or vLLM shapes)."""
    err = error_body(body) or {}
    code = err.get("code")
    error_type = err.get("type")
    server_message = scrub(err.get("message") or "", secret) if err else ""
    cls = error_class(status, code, error_type)
    where = f"HTTP {status}" if status else "an error"
    head = f"{what} answered {where}"
    detail = f": {server_message}" if server_message else "."
    tag = f" ({code or error_type})" if (code or error_type) else ""
    message = f"{head}{tag}{detail} {_ADVICE.get(cls, '')}".strip()
    return cls(message, status=status, code=code, error_type=error_type,
               request_id=request_id, server_message=server_message or None)


@dataclass
class ParsedAnswer:
    images: list[ImageRef]
    text: str
    usage: Usage | None
    request_id: str | None
    model: str | None
    finish_reasons: list[str]
    refusal: str | None = None


def _choices_in_order(choices: list) -> Iterator[dict]:
    valid = [c for c in choices if isinstance(c, dict)]
    indexes = [c.get("index") for c in valid]
    if all(isinstance(i, int) for i in indexes) and len(set(indexes)) == len(indexes):
        valid.sort(key=lambda c: c["index"])
    return iter(valid)


def parse_answer(body: Any, secret: str | None = None) -> ParsedAnswer:
    """Read a non-streaming answer body (already JSON-decoded)."""
    if error_body(body) is not None:
        raise make_api_error(200, body, secret=secret)
    if not isinstance(body, dict):
        raise errors.MalformedAnswerError(
            "The answer is JSON but not an object; this gateway does not speak the "
            "chat-completions protocol. Check the base URL."
        )
    parts = MessageParts()
    finish: list[str] = []
    choices = body.get("choices")
    if isinstance(choices, list):
        for choice in _choices_in_order(choices):
            message = choice.get("message", choice.get("delta"))
            found = walk_message(message)
            parts.images += found.images
            parts.text += found.text
            parts.refusal = parts.refusal or found.refusal
            if isinstance(choice.get("finish_reason"), str):
                finish.append(choice["finish_reason"])
    elif isinstance(body.get("data"), list):  # an images-API shape behind a chat endpoint
        found = walk_message({"content": body["data"]})
        parts.images += found.images
    else:
        raise errors.MalformedAnswerError(
            "The answer has no 'choices'; this gateway does not speak the chat-completions "
            "protocol. Check the base URL."
        )
    return ParsedAnswer(
        images=parts.images,
        text="".join(parts.text).strip(),
        usage=Usage.from_json(body.get("usage")),
        request_id=body.get("id") if isinstance(body.get("id"), str) else None,
        model=body.get("model") if isinstance(body.get("model"), str) else None,
        finish_reasons=finish,
        refusal=parts.refusal,
    )
