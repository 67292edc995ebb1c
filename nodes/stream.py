"""Reading an answer stream: progress, images as they arrive, and judging the outcome.

Used by the client for SSE answers and for SSE bodies sent with the wrong content type.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import errors
from .answers import BARE_DATA_URL, ImageRef, MessageParts, Usage, error_body, make_api_error, text_images, walk_message
from .protocol import ImageRequest
from .sse import DONE, SSEDecoder

__all__ = ["ProgressEvent", "ProgressCallback", "Answer", "Emitter", "StreamState", "feed_stream", "finish_stream", "check_outcome"]

log = logging.getLogger("gpt_image_nodes.client")


@dataclass(frozen=True)
class ProgressEvent:
    """What a running request reports. ``kind``: request (one per HTTP attempt), status, text,
    image or retry."""

    kind: str
    text: str = ""
    index: int | None = None
    data: bytes | None = field(default=None, repr=False)
    elapsed: float = 0.0
    #: (request number from 1, requests in all) when a node sends a batch as several requests.
    batch: tuple[int, int] | None = None

    @property
    def display_text(self) -> str:
        """The text as a progress line shows it, with the batch position in front."""
        return f"[{self.batch[0]}/{self.batch[1]}] {self.text}" if self.batch else self.text


ProgressCallback = Callable[[ProgressEvent], Any]


@dataclass
class Answer:
    """A successful answer, images already fetched as bytes (format not yet trusted)."""

    images: list[bytes]
    text: str
    usage: Usage | None
    request_id: str | None
    model: str | None
    finish_reasons: list[str]
    attempts: int
    elapsed: float
    streamed: bool
    refs: list[ImageRef] = field(default_factory=list, repr=False)


class Emitter:
    def __init__(self, callback: ProgressCallback | None, start: float) -> None:
        self.callback, self.start = callback, start

    def __call__(self, kind: str, text: str = "", index: int | None = None, data: bytes | None = None) -> None:
        if self.callback is None:
            return
        try:
            self.callback(ProgressEvent(kind, text, index, data, time.monotonic() - self.start))
        except Exception:  # a broken progress display must not fail a paid request
            log.exception("progress callback failed")


#: After an unfinished image: a ")" closes a markdown image, any non-base64 character a data URL.
_CLOSES_MARKDOWN = re.compile(r"\)")
_CLOSES_DATA_URL = re.compile(r"[^A-Za-z0-9+/=_\-]")


def _unfinished_image(text: str) -> int:
    """Where an image that may still be arriving starts in ``text`` (``len(text)`` if none):
    a markdown image not yet closed, or a data URL running to the very end."""
    start = text.rfind("![")
    if start >= 0 and ")" not in text[start:]:
        return start
    start = text.rfind("data:image/")
    if start >= 0:
        match = BARE_DATA_URL.match(text, start)
        if match is None or match.end() == len(text):
            return start
    # The very start of one may be cut off: "…!" or "…data:im".
    for marker in ("![", "data:image/"):
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                return len(text) - size
    return len(text)


class StreamState:
    def __init__(self, emit: Emitter) -> None:
        self.emit = emit
        self.images: list[ImageRef] = []
        self._text: list[str] = []  # the model's words, images taken out
        self._pending: list[str] = []  # text that may hold an image still arriving
        self._waiting: re.Pattern | None = None  # what must arrive before _pending is worth a look
        self.usage: Usage | None = None
        self.request_id: str | None = None
        self.model: str | None = None
        self.finish: list[str] = []
        self.refusal: str | None = None
        self.done = False

    def add_image(self, ref: ImageRef) -> None:
        self.images.append(ref)
        self.emit("image", f"image {len(self.images)} received", len(self.images) - 1, ref.data)

    def add_text(self, delta: str) -> None:
        """Content text, images inside it included (markdown or bare data URLs, possibly split
        across chunks). Only the new chunk is searched while an image is still arriving, so a
        multi-megabyte image in many chunks costs linear time, and none of it is shown as text."""
        self._pending.append(delta)
        if self._waiting is not None and not self._waiting.search(delta):
            return
        tail = "".join(self._pending)
        cut = _unfinished_image(tail)
        self._pending = [tail[cut:]] if cut < len(tail) else []
        self._waiting = None if not self._pending else _CLOSES_MARKDOWN if tail.startswith("![", cut) else _CLOSES_DATA_URL
        if cut:
            self._take(tail[:cut])

    def _take(self, text: str) -> None:
        found = MessageParts()
        text_images(text, found)
        for ref in found.images:
            self.add_image(ref)
        words = "".join(found.text)
        self._text.append(words)
        if words.strip():
            self.emit("text", words)

    def final_text(self) -> str:
        if self._pending:  # the stream ended: whatever was held back is complete now
            tail, self._pending, self._waiting = "".join(self._pending), [], None
            self._take(tail)
        return "".join(self._text).strip()

    def apply(self, chunk: Any, secret: str | None) -> None:
        if not isinstance(chunk, dict):
            return
        if error_body(chunk) is not None:
            raise _mid_stream_error(chunk, secret, self.request_id)
        if isinstance(chunk.get("id"), str):
            self.request_id = self.request_id or chunk["id"]
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        usage = Usage.from_json(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta", choice.get("message"))
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str):
                    self.add_text(content)
                    delta = {k: v for k, v in delta.items() if k != "content"}
                found = walk_message(delta)
                for ref in found.images:
                    self.add_image(ref)
                if found.text:
                    self.add_text("".join(found.text))
                self.refusal = self.refusal or found.refusal
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                self.finish.append(reason)
                if reason == "error":
                    raise _mid_stream_error(chunk, secret, self.request_id)


def _mid_stream_error(chunk: dict, secret: str | None, request_id: str | None) -> errors.APIError:
    body = chunk if error_body(chunk) is not None else {"error": {"message": "finish_reason error", "type": "server_error"}}
    err = make_api_error(None, body, request_id=request_id, secret=secret, what="The stream")
    err.message = (err.message + " It failed after the stream had started, so it was not retried.").strip()
    err.args = (err.message,)
    return err


def feed_stream(state: StreamState, decoder: SSEDecoder, chunk: bytes, key: str | None, final: bool = False) -> bool:
    """Feed bytes; returns True once ``[DONE]`` was read."""
    events = decoder.feed(chunk) if chunk else []
    if final:
        events += decoder.close()
    for event in events:
        for value in event.parsed():
            if value is DONE:
                state.done = True
                return True
            state.apply(value, key)
    return False


def finish_stream(state: StreamState, request: ImageRequest, cut: bool, key: str | None) -> Answer:
    text = state.final_text()
    if request.mode.wants_image and not state.images and not state.done and "content_filter" not in state.finish:
        why = "the connection was cut" if cut else "it ended without [DONE]"
        raise errors.MalformedAnswerError(
            f"The stream stopped before any image arrived ({why}). It was not retried because "
            "the stream had started; run it again."
        )
    check_outcome(request, state.images, text, state.finish, state.refusal, state.request_id, key)
    return Answer([], text, state.usage, state.request_id, state.model, state.finish, 0, 0.0, True, refs=state.images)


def _quoted(text: str, key: str | None) -> str:
    """The model's words for an error message: scrubbed, on one line, quoted."""
    return repr(" ".join(errors.scrub(text, key).split()))


def check_outcome(request: ImageRequest, images: list, text: str, finish: list[str], refusal: str | None, request_id: str | None, key: str | None) -> None:
    if "content_filter" in finish and not images:
        said = f" It said: {_quoted(refusal or text, key)}." if (refusal or text) else ""
        raise errors.ContentFilterError(
            f"The model refused this request (content filter).{said} Rephrase the prompt or use another image; "
            "retrying the same request will not help.", code="content_filter", request_id=request_id)
    if refusal and not images and request.mode.wants_image:
        raise errors.ContentFilterError(
            f"The model refused: {_quoted(refusal, key)}. Rephrase the prompt or use another image; "
            "retrying the same request will not help.", code="refusal", request_id=request_id)
    if request.mode.wants_image and not images:
        said = f" The model said: {_quoted(text, key)}." if text else " The answer held no text either."
        raise errors.NoImageError(
            f"An image was asked for but the answer held none.{said} Change the prompt or try again.",
            request_id=request_id, server_message=errors.scrub(text, key) or None)
    if not request.mode.wants_image and not text:
        raise errors.NoImageError("A description was asked for but the answer held no text. Try again.", request_id=request_id)


