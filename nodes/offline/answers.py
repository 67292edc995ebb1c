"""Answer bodies in every shape the offline server can speak (see SPEC-variants.md).

Pure functions: they get the request, the encoded images (or the description) and the shape
names, and return a JSON-able dict or SSE bytes. Pacing and sockets are :mod:`.chat`'s job.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Callable, Iterator

from .wire import ChatRequest

__all__ = [
    "ANSWER_SHAPES", "STREAM_SHAPES", "USAGE_SHAPES", "PROGRESS", "make_id", "usage_for",
    "image_answer", "text_answer", "refusal_answer", "SseFormat",
    "stream_items",
]

ANSWER_SHAPES: tuple[str, ...] = (
    "seed", "choices", "image_url", "images", "markdown_data", "markdown_link", "jpeg", "webp")
STREAM_SHAPES: tuple[str, ...] = (
    "seed", "seed_multiline", "images_delta", "markdown_delta", "noisy", "json")
USAGE_SHAPES: tuple[str, ...] = ("standard", "extended", "none")

# The first text is the seed's, verbatim; the rest are spread across the latency.
# Each later note starts on its own line (as real gateways' "> 进度 **2%**" notes do), so the
# concatenated text of a stream stays readable.
PROGRESS: tuple[str, ...] = (
    "正在生成图片...", "\n生成中 25%", "\n生成中 50%", "\n生成中 75%", "\n生成中 100%")
_ID_PREFIX = {"text_to_image": "chatcmpl_img_", "edit_image": "chatcmpl_img_edit_",
              "multi_merge": "chatcmpl_img_edit_", "describe": "chatcmpl_vision_"}
_TOKENS_PER_IMAGE_OUT = 1560
_TOKENS_PER_IMAGE_IN = 85


def make_id(mode: str) -> str:
    return _ID_PREFIX.get(mode, "chatcmpl_") + uuid.uuid4().hex[:24]


def usage_for(req: ChatRequest, shape: str, images_out: int = 0, text: str | None = None
              ) -> dict | None:
    """Token counts the way the seed reports them; ``None`` for usage shape "none"."""
    if shape == "none":
        return None
    prompt_tokens = len(req.prompt) // 4 + _TOKENS_PER_IMAGE_IN * len(req.image_urls)
    completion = max(1, len(text) // 4) if text is not None else _TOKENS_PER_IMAGE_OUT * images_out
    usage: dict = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                   "total_tokens": prompt_tokens + completion}
    if shape == "extended":
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        usage["completion_tokens_details"] = {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}
    return usage


def _envelope(req: ChatRequest, model: str, choices: list, usage: dict | None) -> dict:
    doc = {"id": make_id(req.mode), "object": "chat.completion", "created": int(time.time()),
           "model": model, "choices": choices}
    if usage is not None:
        doc["usage"] = usage
    return doc


def _choice(content: object, index: int = 0, finish: str = "stop", **extra: object) -> dict:
    message = {"role": "assistant", "content": content, **extra}
    return {"index": index, "message": message, "finish_reason": finish}


def b64_of(images: list[bytes], bad: str | None = None) -> list[str]:
    """Base64 text per image, or the injected bad value for every image."""
    return [bad if bad is not None else base64.b64encode(b).decode("ascii") for b in images]


def image_answer(req: ChatRequest, images: list[bytes], shape: str, usage_shape: str, model: str,
                 link_for: Callable[[bytes], tuple[str, str]], bad_b64: str | None = None
                 ) -> dict:
    """A chat.completion carrying ``images`` in answer shape ``shape``.

    ``link_for(png)`` stores the bytes and returns (image URL, download URL) for markdown_link.
    """
    b64s = b64_of(images, bad_b64)
    urls = [f"data:image/png;base64,{b}" for b in b64s]
    usage = usage_for(req, usage_shape, images_out=len(images))
    if shape in ("seed", "jpeg", "webp"):
        parts = [{"type": "image_base64", "image_base64": b} for b in b64s]
        return _envelope(req, model, [_choice(parts)], usage)
    if shape == "choices":
        choices = [_choice([{"type": "image_base64", "image_base64": b}], i)
                   for i, b in enumerate(b64s)]
        return _envelope(req, model, choices, usage)
    if shape == "image_url":
        parts = [{"type": "text", "text": "Here is your image."}] + [
            {"type": "image_url", "image_url": {"url": u}} for u in urls]
        return _envelope(req, model, [_choice(parts)], usage)
    if shape == "images":
        entries = [{"type": "image_url", "image_url": {"url": u}, "index": i}
                   for i, u in enumerate(urls)]
        return _envelope(req, model, [_choice("I've generated the image.", images=entries)], usage)
    if shape == "markdown_data":
        text = "Here it is:\n" + "\n".join(f"![image]({u})" for u in urls)
        return _envelope(req, model, [_choice(text)], usage)
    if shape == "markdown_link":
        if bad_b64 is not None:  # nothing sensible to host: a broken data URL instead
            text = "\n".join(f"![file_{i}]({u})" for i, u in enumerate(urls))
        else:
            lines = ["> 进度 **2%**", "> 进度 **100%**"]
            for i, png in enumerate(images):
                view, download = link_for(png)
                lines += [f"![file_{i}]({view})", f"[下载]({download})"]
            text = "\n".join(lines)
        return _envelope(req, model, [_choice(text)], usage)
    raise ValueError(f"unknown answer shape {shape!r}")


def text_answer(req: ChatRequest, text: str, usage_shape: str, model: str) -> dict:
    return _envelope(req, model, [_choice(text)], usage_for(req, usage_shape, text=text))


def refusal_answer(req: ChatRequest, text: str | None, usage_shape: str, model: str) -> dict:
    usage = usage_for(req, usage_shape, text=text or "")
    return _envelope(req, model, [_choice(text, finish="content_filter")], usage)


class SseFormat:
    """Serialises SSE events in one stream shape (framing only, not content)."""

    def __init__(self, shape: str, req: ChatRequest, model: str) -> None:
        self.shape = shape
        self.minimal = shape in ("seed", "seed_multiline")  # the seed's chunks: choices only
        self.nl = "\r\n" if shape == "noisy" else "\n"
        self.id = make_id(req.mode)
        self.created = int(time.time())
        self.model = model
        self.count = 0

    def chunk(self, delta: dict, finish: str | None = None, **extra: object) -> dict:
        if self.minimal and finish is None:
            return {"choices": [{"delta": delta}], **extra}
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        if self.minimal:
            return {"choices": [choice], **extra}
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [choice], **extra}

    def event(self, obj: dict, last: bool = False) -> bytes:
        if self.shape == "seed_multiline":  # the seed prints JSON over lines after one "data:"
            text = json.dumps(obj, ensure_ascii=False, indent=0, separators=(",", ":"))
        else:
            text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        head = ""
        if self.shape == "noisy":
            self.count += 1
            head = f"event: message{self.nl}id: {self.count}{self.nl}"
        tail = self.nl if last else self.nl * 2
        return f"{head}data: {text}{tail}".encode()

    def comment(self, text: str) -> bytes:
        return f": {text}{self.nl}{self.nl}".encode()

    def done(self) -> bytes:
        return f"data: [DONE]{self.nl}{self.nl}".encode()

    def image_delta(self, b64: str, index: int) -> dict:
        url = f"data:image/png;base64,{b64}"
        if self.shape == "images_delta":
            return {"images": [{"type": "image_url", "image_url": {"url": url}, "index": index}]}
        if self.shape == "markdown_delta":
            return {"content": f"![image]({url})"}
        return {"image_base64": b64}


# One stream step: (when, as a fraction of the latency; bytes to send, or None = cut the socket).
Step = tuple[float, "bytes | None"]


def stream_items(req: ChatRequest, shape: str, usage_shape: str, model: str,
                 render: Callable[[], list[bytes] | str], fault: object | None = None
                 ) -> Iterator[Step]:
    """The SSE steps for ``req``. ``render()`` is called after the first progress event so a
    client sees progress before the (slow) painting; ``fault`` is a stream fault or None."""
    fmt = SseFormat(shape, req, model)
    kind = getattr(fault, "kind", None)
    params = getattr(fault, "params", {})
    noisy = shape == "noisy"
    if noisy:
        yield 0.0, fmt.comment("PROCESSING")

    if req.mode == "describe" and kind is None:
        # No image progress for a description: its content deltas ARE the answer.
        text = render()
        assert isinstance(text, str)
        words = text.split(" ")
        pieces = [" ".join(words[i:i + 6]) + " " for i in range(0, len(words), 6)]
        pieces[-1] = pieces[-1].rstrip(" ")
        for i, piece in enumerate(pieces):
            yield i / max(1, len(pieces)), fmt.event(fmt.chunk({"content": piece}))
        usage = usage_for(req, usage_shape, text=text)
        yield from _finish(fmt, req, usage, noisy)
        return

    steps = PROGRESS[: params.get("progress", len(PROGRESS))] if kind == "stream_cut" else PROGRESS
    if kind in ("mid_stream_error", "garbage_stream", "refusal"):
        steps = PROGRESS[:2]
    outputs: list[bytes] | str = []
    for i, text in enumerate(steps):
        yield i / len(PROGRESS), fmt.event(fmt.chunk({"content": text}))
        if noisy and i:
            yield i / len(PROGRESS), fmt.comment("PROCESSING")
        if i == 0 and kind not in ("stream_cut", "mid_stream_error", "garbage_stream",
                                   "refusal", "no_image"):
            outputs = render()
    if kind == "stream_cut":
        yield 1.0, None
        return
    if kind == "mid_stream_error":
        err: dict = {"error": {"message": params.get("message") or "Upstream model failed.",
                               "type": "server_error"}}
        if params.get("with_finish_reason"):
            err = fmt.chunk({}, "error", **err)
        yield 1.0, fmt.event(err)
        return
    if kind == "garbage_stream":
        import random

        rng = random.Random(req.prompt)
        for _ in range(int(params.get("lines", 5))):
            junk = "".join(rng.choice("abcdef{}[]<>:;,.#@!~ 0123456789") for _ in range(40))
            yield 1.0, f"data: ~{junk}\n\n".encode()  # the "~" makes sure it is never JSON
        return
    if kind == "refusal":
        delta = {"content": params["text"]} if params.get("text") else {}
        yield 1.0, fmt.event(fmt.chunk(delta, "content_filter"))
        yield from _finish(fmt, req, usage_for(req, usage_shape, text=""), noisy, finish=False)
        return
    if kind == "no_image":
        yield 1.0, fmt.event(fmt.chunk({"content": params["text"]}))
        yield from _finish(fmt, req, usage_for(req, usage_shape, text=params["text"]), noisy)
        return
    assert isinstance(outputs, list)
    b64s = b64_of(outputs, params.get("value") if kind == "bad_base64" else None)
    for i, b64 in enumerate(b64s):
        yield 1.0, fmt.event(fmt.chunk(fmt.image_delta(b64, i)))
    yield from _finish(fmt, req, usage_for(req, usage_shape, images_out=len(b64s)), noisy)


def _finish(fmt: SseFormat, req: ChatRequest, usage: dict | None, noisy: bool,
            finish: bool = True) -> Iterator[Step]:
    """Closing events: finish chunk (not in the seed's shapes), usage, [DONE] (not in noisy)."""
    events: list[dict] = []
    if finish and not fmt.minimal:
        events.append(fmt.chunk({}, "stop"))
    # Usage rides on a last chunk, as most gateways send it (OpenAI only with stream_options).
    if usage is not None:
        events.append({**fmt.chunk({}), "choices": [], "usage": usage})
    for i, obj in enumerate(events):
        yield 1.0, fmt.event(obj, last=noisy and i == len(events) - 1)
    if not noisy:
        yield 1.0, fmt.done()
