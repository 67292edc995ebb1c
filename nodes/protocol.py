"""The wire contract: allowed values, validation and request bodies, exactly as the seed shows.

Nothing here does I/O. The request body is assembled as bytes with the (large) data URLs spliced
in, so a multi-megabyte base64 string is never re-escaped by ``json.dumps``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

from .errors import InvalidInputError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "CHAT_COMPLETIONS_PATH",
    "SIZES",
    "QUALITIES",
    "MAX_N",
    "MAX_PROMPT_CHARS",
    "DEFAULT_DESCRIBE_QUESTION",
    "Mode",
    "ImageRequest",
    "validate_size",
    "validate_quality",
    "validate_n",
    "validate_prompt",
]

DEFAULT_BASE_URL = "https://api.yisu.com"
DEFAULT_MODEL = "gpt-5.4-image-2"
CHAT_COMPLETIONS_PATH = "/v1/chat/completions"

SIZES: tuple[str, ...] = ("1024x1024", "1024x1536", "1536x1024", "auto")
QUALITIES: tuple[str, ...] = ("low", "medium", "high", "auto")
# The seed sets no upper bound; OpenAI's image endpoints cap n at 10, and more is a costly typo.
MAX_N = 10
# OpenAI's gpt-image prompt limit is 32,000 characters; longer is refused here, not billed.
MAX_PROMPT_CHARS = 32_000
DEFAULT_DESCRIBE_QUESTION = "Describe this image in detail."


class Mode(str, Enum):
    TEXT_TO_IMAGE = "text_to_image"
    EDIT_IMAGE = "edit_image"
    MULTI_MERGE = "multi_merge"
    DESCRIBE = "describe"

    @property
    def wants_image(self) -> bool:
        return self is not Mode.DESCRIBE

    @property
    def image_count(self) -> tuple[int, int | None]:
        """(minimum, maximum) input images for this mode."""
        return {
            Mode.TEXT_TO_IMAGE: (0, 0),
            Mode.EDIT_IMAGE: (1, 1),
            Mode.MULTI_MERGE: (2, None),
            Mode.DESCRIBE: (1, 1),
        }[self]


def _choices(values: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in values)


def validate_size(size: str) -> str:
    value = str(size).strip().lower()
    if value not in SIZES:
        raise InvalidInputError(
            f"size {size!r} is not supported. Use one of {_choices(SIZES)}."
        )
    return value


def validate_quality(quality: str) -> str:
    value = str(quality).strip().lower()
    if value not in QUALITIES:
        raise InvalidInputError(
            f"quality {quality!r} is not supported. Use one of {_choices(QUALITIES)}."
        )
    return value


def validate_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, float, str)):
        raise InvalidInputError(f"n must be a whole number from 1 to {MAX_N}, not {n!r}.")
    try:
        value = int(str(n).strip()) if not isinstance(n, float) else int(n)
    except ValueError:
        raise InvalidInputError(f"n must be a whole number from 1 to {MAX_N}, not {n!r}.") from None
    if isinstance(n, float) and n != value:
        raise InvalidInputError(f"n must be a whole number from 1 to {MAX_N}, not {n!r}.")
    if not 1 <= value <= MAX_N:
        raise InvalidInputError(f"n must be from 1 to {MAX_N} images per request, not {value}.")
    return value


def validate_prompt(prompt: object, what: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise InvalidInputError(f"The {what} must be text, not {type(prompt).__name__}.")
    text = prompt.strip()
    if not text:
        raise InvalidInputError(f"The {what} is empty. Write what you want the model to do.")
    if "\x00" in text:
        raise InvalidInputError(f"The {what} contains a NUL character; remove it.")
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidInputError(
            f"The {what} has {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}. "
            "Shorten it."
        )
    return text


@dataclass(frozen=True)
class ImageRequest:
    """One validated chat-completions request for one of the four modes.

    ``image_urls`` are data URLs (``data:image/png;base64,...``) already encoded by
    :mod:`.codecs`; they are kept as ASCII bytes so the body can be spliced without copies.
    """

    mode: Mode
    prompt: str
    image_urls: tuple[bytes, ...] = ()
    size: str | None = None
    quality: str | None = None
    n: int | None = None
    stream: bool = False
    extra_body: dict = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        mode: Mode | str,
        prompt: str,
        image_urls: Sequence[bytes | str] = (),
        *,
        size: str | None = None,
        quality: str | None = None,
        n: int | None = None,
        stream: bool = False,
        extra_body: dict | None = None,
    ) -> "ImageRequest":
        mode = Mode(mode)
        what = "question" if mode is Mode.DESCRIBE else "prompt"
        text = validate_prompt(prompt, what)
        low, high = mode.image_count
        urls = tuple(u.encode("ascii") if isinstance(u, str) else bytes(u) for u in image_urls)
        if len(urls) < low or (high is not None and len(urls) > high):
            want = f"exactly {low}" if low == high else f"at least {low}"
            raise InvalidInputError(
                f"{mode.value} takes {want} input image(s), got {len(urls)}."
            )
        for url in urls:
            if not url.startswith(b"data:image/") or b";base64," not in url[:64]:
                raise InvalidInputError("Input images must be sent as base64 data URLs.")
        if mode.wants_image:
            size = validate_size(size) if size is not None else None
            quality = validate_quality(quality) if quality is not None else None
            n = validate_n(n) if n is not None else None
        else:
            size = quality = n = None
        extra = dict(extra_body or {})
        reserved = {"model", "messages", "stream", "size", "quality", "n"} & extra.keys()
        if reserved:
            raise InvalidInputError(
                f"extra_body may not set {sorted(reserved)}; use the named arguments."
            )
        return cls(mode, text, urls, size, quality, n, bool(stream), extra)

    def body(self, model: str) -> bytes:
        """The JSON body, as bytes. Field order follows the seed examples."""
        placeholders = [f"\x00IMG{i}\x00" for i in range(len(self.image_urls))]
        if self.mode is Mode.TEXT_TO_IMAGE:
            content: object = self.prompt
        else:
            content = [{"type": "text", "text": self.prompt}] + [
                {"type": "image", "image": ph} for ph in placeholders
            ]
        doc: dict = {"model": model, "messages": [{"role": "user", "content": content}]}
        if self.stream:
            doc["stream"] = True
        for key in ("size", "quality", "n"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value
        doc.update(self.extra_body)
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        if not placeholders:
            return text.encode("utf-8")
        # json.dumps escapes NUL as \u0000, so the placeholder can't collide with user text.
        parts: list[bytes] = []
        rest = text
        for ph, url in zip(placeholders, self.image_urls):
            escaped = json.dumps(ph)[1:-1]
            before, rest = rest.split(escaped, 1)
            parts.append(before.encode("utf-8"))
            parts.append(url)
        parts.append(rest.encode("utf-8"))
        return b"".join(parts)

    def describe_for_log(self) -> str:
        """A one-line summary that is safe to log: no prompt text, no image data."""
        sizes = ",".join(str(len(u)) for u in self.image_urls)
        return (
            f"{self.mode.value} size={self.size} quality={self.quality} n={self.n} "
            f"stream={self.stream} prompt_chars={len(self.prompt)} image_bytes=[{sizes}]"
        )
