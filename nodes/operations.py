"""The four operations on PIL images: TextToImage, EditImage, MultiMerge, Describe.

Each validates its inputs before anything is sent, encodes images losslessly, sends one request
and decodes the answer strictly. They know nothing of ComfyUI, torch or Gradio.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from PIL import Image

from .answers import Usage
from .client import Answer, AsyncImageClient, ProgressCallback
from .codecs import decode_answer_image, encode_data_url, prepare_input_image
from .errors import InvalidInputError
from .protocol import DEFAULT_DESCRIBE_QUESTION, ImageRequest, Mode
from .retry import CancelCheck

__all__ = [
    "ImageResult",
    "TextResult",
    "text_to_image",
    "edit_image",
    "multi_merge",
    "describe",
    "encode_inputs",
    "run_request",
    "validate_request_args",
]


@dataclass
class _ResultBase:
    usage: Usage | None
    request_id: str | None
    model: str | None
    attempts: int
    elapsed: float
    offline: bool


@dataclass
class ImageResult(_ResultBase):
    """Images in answer order, the model's text (may be empty) and the request's bookkeeping.

    ``data`` holds the bytes exactly as received, for callers that want to keep the original
    file (the runtimes work on the decoded images and write their own lossless PNGs).
    """

    images: list[Image.Image] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list, repr=False)
    text: str = ""


@dataclass
class TextResult(_ResultBase):
    text: str = ""


def validate_request_args(prompt: str, size: str | None, quality: str | None, n: int | None) -> None:
    """Refuse a bad prompt, size, quality or n before any image is encoded or sent."""
    ImageRequest.build(Mode.TEXT_TO_IMAGE, prompt, size=size, quality=quality, n=n)


def _as_image(value: object, name: str) -> Image.Image:
    if not isinstance(value, Image.Image):
        raise InvalidInputError(f"The {name} must be an image, not {type(value).__name__}.")
    return value


def encode_inputs(images: Sequence[Image.Image], fmt: str = "PNG") -> list[bytes]:
    """Data URLs for input images: first frame, upright, 8-bit, at most the documented size."""
    return [encode_data_url(prepare_input_image(img), fmt) for img in images]


#: PNG encoding and decoding (zlib, Pillow) release the GIL: done here, they run on all cores
#: while the event loop keeps uploading and reading other requests of a batch. One worker per
#: core, so the first image of a batch is ready (and sent) first, not all of them at the end.
_CODEC_POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="gpt-image-codec")


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_CODEC_POOL, fn, *args)


async def run_request(
    client: AsyncImageClient,
    request: ImageRequest,
    *,
    on_progress: ProgressCallback | None = None,
    cancel_check: CancelCheck | None = None,
) -> ImageResult | TextResult:
    """Send a built request and decode its answer into a result."""
    answer: Answer = await client.send(request, on_progress=on_progress, cancel_check=cancel_check)
    common = dict(usage=answer.usage, request_id=answer.request_id, model=answer.model,
                  attempts=answer.attempts, elapsed=answer.elapsed, offline=client.offline)
    if not request.mode.wants_image:
        return TextResult(text=answer.text, **common)
    # One task per image: with n > 1 they decode on all cores at once (Pillow releases the GIL).
    images = list(await asyncio.gather(*[_off_loop(decode_answer_image, data) for data in answer.images]))
    return ImageResult(images=images, data=list(answer.images), text=answer.text, **common)


async def text_to_image(
    client: AsyncImageClient, prompt: str, *, size: str | None = "auto", quality: str | None = "auto",
    n: int | None = 1, stream: bool = False, on_progress: ProgressCallback | None = None,
    cancel_check: CancelCheck | None = None,
) -> ImageResult:
    request = ImageRequest.build(Mode.TEXT_TO_IMAGE, prompt, size=size, quality=quality, n=n, stream=stream)
    return await run_request(client, request, on_progress=on_progress, cancel_check=cancel_check)  # type: ignore[return-value]


async def edit_image(
    client: AsyncImageClient, image: Image.Image, prompt: str, *, size: str | None = "auto",
    quality: str | None = "auto", n: int | None = 1, stream: bool = False,
    on_progress: ProgressCallback | None = None, cancel_check: CancelCheck | None = None,
    input_format: str = "PNG",
) -> ImageResult:
    urls = await _off_loop(encode_inputs, [_as_image(image, "image to edit")], input_format)
    request = ImageRequest.build(Mode.EDIT_IMAGE, prompt, urls, size=size, quality=quality, n=n, stream=stream)
    return await run_request(client, request, on_progress=on_progress, cancel_check=cancel_check)  # type: ignore[return-value]


async def multi_merge(
    client: AsyncImageClient, images: Sequence[Image.Image], prompt: str, *, size: str | None = "auto",
    quality: str | None = "auto", n: int | None = 1, stream: bool = False,
    on_progress: ProgressCallback | None = None, cancel_check: CancelCheck | None = None,
    input_format: str = "PNG",
) -> ImageResult:
    images = list(images)
    if len(images) < 2:
        raise InvalidInputError(f"MultiMerge needs at least 2 images, got {len(images)}.")
    urls = await _off_loop(encode_inputs, [_as_image(img, f"image {i + 1}") for i, img in enumerate(images)], input_format)
    request = ImageRequest.build(Mode.MULTI_MERGE, prompt, urls, size=size, quality=quality, n=n, stream=stream)
    return await run_request(client, request, on_progress=on_progress, cancel_check=cancel_check)  # type: ignore[return-value]


async def describe(
    client: AsyncImageClient, image: Image.Image, question: str = DEFAULT_DESCRIBE_QUESTION, *,
    stream: bool = False, on_progress: ProgressCallback | None = None,
    cancel_check: CancelCheck | None = None, input_format: str = "PNG",
) -> TextResult:
    urls = await _off_loop(encode_inputs, [_as_image(image, "image to describe")], input_format)
    request = ImageRequest.build(Mode.DESCRIBE, question or DEFAULT_DESCRIBE_QUESTION, urls, stream=stream)
    return await run_request(client, request, on_progress=on_progress, cancel_check=cancel_check)  # type: ignore[return-value]
