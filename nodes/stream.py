"""Reading an answer stream: progress, images as they arrive, and judging the outcome.

Used by the client for SSE answers and for SSE bodies sent with the wrong content type.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import errors
from .answers import BARE_DATA_URL, MARKDOWN_IMAGE, ImageRef, Usage, make_api_error, walk_message
from .codecs import decode_base64
from .protocol import ImageRequest
from .sse import DONE, SSEDecoder, parse_event_data

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


def _printable(text: str) -> str:
    return BARE_DATA_URL.sub("[image]", MARKDOWN_IMAGE.sub("[image]", text))


class StreamState:
    def __init__(self, emit: Emitter) -> None:
        self.emit = emit
        self.images: list[ImageRef] = []
        self.text = ""
        self._cursor = 0
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
        self.text += delta
        # Markdown images may arrive split across chunks: scan only complete ones past the cursor.
        for match in MARKDOWN_IMAGE.finditer(self.text, self._cursor):
            url = match.group(1).strip()
            self.add_image(ImageRef(data=decode_base64(url.partition(",")[2])) if url.startswith("data:") else ImageRef(url=url))
            self._cursor = match.end()
        shown = _printable(delta)
        if shown.strip() and "data:image/" not in shown:
            self.emit("text", shown)

    def apply(self, chunk: Any, secret: str | None) -> None:
        if not isinstance(chunk, dict):
            return
        err = chunk.get("error")
        if err or chunk.get("object") == "error":
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

    def final_text(self) -> str:
        return MARKDOWN_IMAGE.sub("", BARE_DATA_URL.sub("", self.text)).strip()


def _mid_stream_error(chunk: dict, secret: str | None, request_id: str | None) -> errors.APIError:
    body = chunk if chunk.get("error") or chunk.get("object") == "error" else {"error": {"message": "finish_reason error", "type": "server_error"}}
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
        for value in parse_event_data(event.data):
            if value is DONE:
                state.done = True
                return True
            state.apply(value, key)
    return False


def finish_stream(state: StreamState, request: ImageRequest, cut: bool) -> Answer:
    text = state.final_text()
    if request.mode.wants_image and not state.images and not state.done and "content_filter" not in state.finish:
        why = "the connection was cut" if cut else "it ended without [DONE]"
        raise errors.MalformedAnswerError(
            f"The stream stopped before any image arrived ({why}). It was not retried because "
            "the stream had started; run it again."
        )
    check_outcome(request, state.images, text, state.finish, state.refusal, state.request_id, None)
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


