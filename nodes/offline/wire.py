"""Reading a chat-completions request the way the seed's server would: parse, validate, decode.

The wire can't tell EditImage from Describe by shape (both are one text part plus one image),
so the mode is decided from the content:

- string content, or a list without image parts -> ``text_to_image``;
- two or more image parts -> ``multi_merge``;
- one image part -> ``describe`` when the text reads like a question or a request for a
  description (describe, what, explain, caption, "?", 描述, 分析, 什么, ...) AND the body
  has no ``size``/``quality``/``n`` AND the text names no edit keyword (blur, 黑白, ...); else
  ``edit_image``. An explicit ``"modalities": ["text"]`` forces describe and a ``modalities``
  list containing ``"image"`` forces an image mode (OpenRouter-style hint).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from ..codecs import sniff_format
from ..protocol import MAX_N, QUALITIES, SIZES
from .edits import _to_rgb, find_ops

__all__ = ["RequestError", "ChatRequest", "load_doc", "summarize", "parse_chat", "decode_images"]

MAX_INPUT_PIXELS = 40_000_000
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
ALLOWED_MIMES = ("image/png", "image/jpeg", "image/jpg", "image/webp", "image/gif")

_QUESTION = re.compile(
    r"\b(describe|description|what|which|explain|caption|analy[sz]e|identify|tell me)\b"
    r"|[?？]|描述|分析|什么|解释|说明|识别|介绍",
    re.IGNORECASE,
)


class RequestError(Exception):
    """A request the server refuses: becomes ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, code: str | None,
                 etype: str = "invalid_request_error", param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.etype, self.param = (
            status, message, code, etype, param)

    def body(self) -> dict:
        # The seed's error bodies hold exactly message/type/code; param only when it says more.
        error = {"message": self.message, "type": self.etype, "code": self.code}
        if self.param:
            error["param"] = self.param
        return {"error": error}


@dataclass
class ChatRequest:
    mode: str
    model: str
    prompt: str
    image_urls: list[str]
    size: str | None = None  # as sent (None when absent)
    quality: str | None = None
    n: int = 1
    stream: bool = False
    images: list[Image.Image] = field(default_factory=list)
    image_bytes: list[bytes] = field(default_factory=list)


def load_doc(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "We could not parse the JSON body of your request.",
                           "invalid_json") from None
    if not isinstance(doc, dict):
        raise RequestError(400, "The request body must be a JSON object.", "invalid_json")
    return doc


def _last_user_content(doc: dict) -> object:
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty array.", "invalid_messages",
                           param="messages")
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message.get("content")
    raise RequestError(400, "'messages' has no user message.", "invalid_messages",
                       param="messages")


def _split_content(content: object) -> tuple[str, list[str]]:
    """(prompt text, image URLs) from a message content; unknown part types are skipped."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RequestError(400, "Message content must be a string or an array of parts.",
                           "invalid_content", param="messages")
    texts: list[str] = []
    urls: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("text", "input_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image":
            value = part.get("image")
            urls.append(value.get("url") if isinstance(value, dict) else value)
        elif kind == "image_url":
            value = part.get("image_url")
            urls.append(value.get("url") if isinstance(value, dict) else value)
    return "\n".join(texts), urls


def _detect_mode(doc: dict, prompt: str, n_images: int) -> str:
    if n_images == 0:
        return "text_to_image"
    if n_images >= 2:
        return "multi_merge"
    modalities = doc.get("modalities")
    if isinstance(modalities, list) and modalities:
        return "edit_image" if "image" in modalities else "describe"
    if any(key in doc for key in ("size", "quality", "n")):
        return "edit_image"
    if _QUESTION.search(prompt) and not find_ops(prompt):
        return "describe"
    return "edit_image"


def _sniff(url: object) -> str:
    """The real format of a data URL's bytes (lower case), whatever its MIME type says."""
    if not isinstance(url, str) or "," not in url[:200]:
        return "unknown"
    head = url.split(",", 1)[1][:24]
    try:
        raw = base64.b64decode(head[: len(head) // 4 * 4])
    except (binascii.Error, ValueError):
        return "unknown"
    return (sniff_format(raw) or "unknown").lower()


def summarize(doc: dict | None) -> dict:
    """Best-effort summary of a request for ``srv.requests`` (never raises, never base64)."""
    summary: dict = {"mode": None, "model": None, "size": None, "quality": None, "n": None,
                     "stream": False, "images": 0, "prompt": "", "image_mimes": [],
                     "image_formats": []}
    if not isinstance(doc, dict):
        return summary
    summary.update(model=doc.get("model"), size=doc.get("size"), quality=doc.get("quality"),
                   n=doc.get("n"), stream=bool(doc.get("stream")))
    try:
        prompt, urls = _split_content(_last_user_content(doc))
    except RequestError:
        return summary
    mimes = [u[5:].split(";", 1)[0].split(",", 1)[0] if isinstance(u, str) and
             u.startswith("data:") else None for u in urls]
    summary.update(mode=_detect_mode(doc, prompt, len(urls)), images=len(urls), prompt=prompt,
                   image_mimes=mimes, image_formats=[_sniff(u) for u in urls])
    return summary


def parse_chat(doc: dict, model: str) -> ChatRequest:
    """Validate a loaded body against the seed's contract (images are decoded separately)."""
    sent_model = doc.get("model")
    if not isinstance(sent_model, str) or not sent_model:
        raise RequestError(400, "You must provide a model parameter.", "missing_model",
                           param="model")
    if sent_model != model:
        raise RequestError(404, f"The model '{sent_model}' does not exist. Available: '{model}'.",
                           "model_not_found", param="model")
    prompt, urls = _split_content(_last_user_content(doc))
    size, quality, n = doc.get("size"), doc.get("quality"), doc.get("n", 1)
    if size is not None and size not in SIZES:
        raise RequestError(400, f"Invalid size '{size}'. Supported: {', '.join(SIZES)}.",
                           "invalid_size", param="size")
    if quality is not None and quality not in QUALITIES:
        raise RequestError(400, f"Invalid quality '{quality}'. Supported: {', '.join(QUALITIES)}.",
                           "invalid_quality", param="quality")
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise RequestError(400, f"Invalid n '{n}'. Must be an integer from 1 to {MAX_N}.",
                           "invalid_n", param="n")
    stream = doc.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestError(400, "'stream' must be a boolean.", "invalid_stream", param="stream")
    mode = _detect_mode(doc, prompt, len(urls))
    if mode == "text_to_image" and not prompt.strip():
        raise RequestError(400, "The prompt is empty.", "invalid_prompt", param="messages")
    return ChatRequest(mode, sent_model, prompt, urls, size, quality, n, bool(stream))


def _invalid_image(detail: str = "") -> RequestError:
    # The seed's exact body; the reason is kept on the exception for the server's own log.
    error = RequestError(400, "Invalid image format.", "invalid_image")
    error.detail = detail  # type: ignore[attr-defined]
    return error


def decode_data_url(url: object) -> tuple[bytes, Image.Image]:
    """Bytes and RGB image of one ``data:image/...;base64,`` URL; RequestError(invalid_image)."""
    if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
        raise _invalid_image("only base64 data URLs are accepted")
    header, payload = url.split(",", 1)
    mime = header[5:].split(";", 1)[0].strip().lower()
    if not header.lower().endswith(";base64") or mime not in ALLOWED_MIMES:
        raise _invalid_image(f"unsupported data URL type {mime or 'none'}")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        compact = "".join(payload.split())
        try:
            raw = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise _invalid_image("bad base64") from None
    try:
        img = Image.open(io.BytesIO(raw), formats=list(ALLOWED_FORMATS))
        w, h = img.size
        if w * h > MAX_INPUT_PIXELS:  # refuse before load(): no decompression bombs
            raise _invalid_image(f"{w}x{h} is over {MAX_INPUT_PIXELS // 1_000_000} megapixels")
        img.load()
        return raw, _to_rgb(img)
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError):
        raise _invalid_image("not a PNG, JPEG, WEBP or GIF image") from None


def decode_images(req: ChatRequest) -> None:
    """Fill ``req.images`` / ``req.image_bytes`` from its data URLs (in order)."""
    for url in req.image_urls:
        raw, img = decode_data_url(url)
        req.image_bytes.append(raw)
        req.images.append(img)
