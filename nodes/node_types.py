"""The four node types as data plus one async function each, shared by every runtime.

ComfyUI glue, the headless executor and the canvas all read these specs (inputs, defaults,
choices, tooltips, outputs) and call :meth:`NodeType.run`, so one workflow sends the same
requests everywhere. Values here are runtime-neutral: IMAGE is a list of PIL images (a batch),
MASK a list of mode-"L" PIL images, STRING a str, INT an int.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

import numpy as np
from PIL import Image

from . import operations
from .answers import Usage
from .client import AsyncImageClient, ProgressCallback, ProgressEvent
from .config import BACKENDS, Settings, allowed_hosts, host_allowed, host_of
from .errors import ConfigurationError
from .errors import InvalidInputError
from .protocol import DEFAULT_DESCRIBE_QUESTION, MAX_N, QUALITIES, SIZES
from .retry import CancelCheck

__all__ = ["InputSpec", "OutputSpec", "NodeType", "RunContext", "ClientPool", "NODE_TYPES", "MAX_MERGE_INPUTS", "fit_to_size", "check_mask_size", "apply_mask"]

#: MultiMerge takes image_1 .. image_8 (the first two required).
MAX_MERGE_INPUTS = 8
CATEGORY = "GPT Image 2"
def _seed_tooltip(what: str) -> str:
    return (
        "Not sent to the API (it takes no seed). Changing it makes a new request instead of reusing "
        f"the cached result; the {what} will differ, but not reproducibly."
    )


@dataclass(frozen=True)
class InputSpec:
    name: str
    kind: str  # STRING, INT, BOOLEAN, IMAGE, MASK, or "CHOICE"
    tooltip: str
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    multiline: bool = False
    optional: bool = False
    #: Part of the request (a change means a new request) vs. only how it is sent.
    advanced: bool = False


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str
    tooltip: str


@dataclass
class RunContext:
    """What a node run needs from its runtime."""

    client_for: Callable[[str, str, str], AsyncImageClient]
    on_progress: ProgressCallback | None = None
    cancel_check: CancelCheck | None = None
    #: Requests one node sends at once (an IMAGE batch of B is B requests); the client's own
    #: max_concurrency (8) still caps what is in flight per client.
    batch_concurrency: int = 8


@dataclass(frozen=True)
class NodeType:
    name: str
    display_name: str
    description: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    run: Callable[..., Awaitable[tuple]] = field(repr=False)

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {s.name: s.default for s in self.inputs if s.default is not None}


def _prompt(tooltip: str = "What to draw or change. Plain language; the model reads any language.") -> InputSpec:
    return InputSpec("prompt", "STRING", tooltip, default="", multiline=True)


_SIZE = InputSpec("size", "CHOICE", "Output size in pixels. 'auto' lets the model choose (the result's size is read from the answer).", default="auto", choices=SIZES)
_QUALITY = InputSpec("quality", "CHOICE", "Rendering quality; higher costs more and takes longer.", default="auto", choices=QUALITIES)
_N = InputSpec("n", "INT", f"Images per request (1-{MAX_N}). With an IMAGE batch of B, each of the B requests asks for n.", default=1, minimum=1, maximum=MAX_N)
_SEED = InputSpec("seed", "INT", _seed_tooltip("image"), default=0, minimum=0, maximum=2**53)
_CONNECTION = (
    InputSpec("backend", "CHOICE", "auto: the real API when a key is configured, else the built-in offline backend (procedural images, no cost). offline: always the offline backend. remote: always the API.", default="auto", choices=BACKENDS, optional=True, advanced=True),
    InputSpec("base_url", "STRING", "Gateway base URL; empty = the configured default (GPT_IMAGE_BASE_URL or https://api.yisu.com). The key is never a widget: it comes from GPT_IMAGE_API_KEY or the config file.", default="", optional=True, advanced=True),
    InputSpec("model", "STRING", "Model name; empty = the configured default (gpt-5.4-image-2). Gateways sometimes rename models.", default="", optional=True, advanced=True),
    InputSpec("stream", "BOOLEAN", "Stream the answer, so progress text shows while the image is made.", default=True, optional=True, advanced=True),
)
_IMAGES_OUT = OutputSpec("images", "IMAGE", "The generated images, in order: for an input batch of B and n per request, B*n images.")
_TEXT_OUT = OutputSpec("text", "STRING", "The model's text, if it sent any (progress notes, remarks).")
_USAGE_OUT = OutputSpec("usage", "STRING", "Token usage summed over this node's requests, as JSON (fields the service did not send are absent).")


def usage_json(usages: Sequence[Usage | None]) -> str:
    total: Usage | None = None
    for usage in usages:
        if usage is not None:
            total = usage if total is None else total + usage
    return json.dumps(total.as_dict() if total else {}, sort_keys=True)


def fit_to_size(images: list[Image.Image], size: tuple[int, int]) -> list[Image.Image]:
    """Bring images to one size: each is scaled to fit inside ``size`` (aspect kept, Lanczos)
    and centred on black. Images already that size are untouched."""
    out = []
    for img in images:
        if img.size == size:
            out.append(img)
            continue
        scale = min(size[0] / img.width, size[1] / img.height)
        new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        canvas = Image.new(img.mode, size)
        canvas.paste(img.resize(new, Image.Resampling.LANCZOS), ((size[0] - new[0]) // 2, (size[1] - new[1]) // 2))
        out.append(canvas)
    return out


def check_mask_size(image: Image.Image, mask: Image.Image) -> None:
    if mask.size != image.size:
        raise InvalidInputError(
            f"The mask is {mask.width}x{mask.height} but the image is {image.width}x{image.height}. "
            "Use a mask of the image's size (e.g. scale it with an Upscale Mask node)."
        )


def apply_mask(original: Image.Image, edited: Image.Image, mask: Image.Image) -> Image.Image:
    """Keep the edit where the mask is 1 and the original pixels, exactly, where it is 0.

    The edit is brought to the original's size first (the model may answer in another size)."""
    check_mask_size(original, mask)
    if edited.size != original.size:
        edited = edited.resize(original.size, Image.Resampling.LANCZOS)
    mode = "RGBA" if "A" in original.mode else "RGB"
    a = np.asarray(original.convert(mode), dtype=np.float32)
    b = np.asarray(edited.convert(mode), dtype=np.float32)
    m = np.asarray(mask.convert("L"), dtype=np.float32)[..., None] / 255.0
    out = np.rint(a + (b - a) * m).astype(np.uint8)
    return Image.fromarray(out, mode)


async def _gather_limited(coros: list[Awaitable[Any]], limit: int) -> list[Any]:
    """Run coroutines at most ``limit`` at a time; results in order; first error cancels the rest."""
    slots = asyncio.Semaphore(max(1, limit))

    async def one(coro: Awaitable[Any]) -> Any:
        async with slots:
            return await coro

    tasks = [asyncio.ensure_future(one(c)) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _batch_progress(ctx: RunContext, index: int, total: int) -> ProgressCallback | None:
    if ctx.on_progress is None:
        return None
    if total == 1:
        return ctx.on_progress

    def forward(event: ProgressEvent) -> None:
        ctx.on_progress(dataclasses.replace(event, batch=(index + 1, total)))  # type: ignore[misc]

    return forward


def _images(value: Any, name: str) -> list[Image.Image]:
    if isinstance(value, Image.Image):
        return [value]
    if not value or not all(isinstance(v, Image.Image) for v in value):
        raise InvalidInputError(f"Input '{name}' needs an image; none is connected or it is empty.")
    return list(value)


def _client(ctx: RunContext, kw: dict[str, Any]) -> AsyncImageClient:
    return ctx.client_for(kw.get("backend") or "auto", kw.get("base_url") or "", kw.get("model") or "")


async def _run_images(ctx: RunContext, calls: list[Callable[[ProgressCallback | None], Awaitable[operations.ImageResult]]]) -> list[operations.ImageResult]:
    total = len(calls)
    return await _gather_limited([call(_batch_progress(ctx, i, total)) for i, call in enumerate(calls)], ctx.batch_concurrency)


def _image_outputs(results: list[operations.ImageResult]) -> tuple[list[Image.Image], str, str]:
    images = [img for r in results for img in r.images]
    if images:
        images = fit_to_size(images, images[0].size)
    texts = [r.text for r in results if r.text]
    return images, "\n\n".join(texts), usage_json([r.usage for r in results])


async def _text_to_image(ctx: RunContext, prompt: str, size: str = "auto", quality: str = "auto", n: int = 1, seed: int = 0, **kw: Any) -> tuple:
    client = _client(ctx, kw)
    result = await operations.text_to_image(client, prompt, size=size, quality=quality, n=n, stream=kw.get("stream", True), on_progress=ctx.on_progress, cancel_check=ctx.cancel_check)
    return _image_outputs([result])


async def _edit_image(ctx: RunContext, image: Any, prompt: str, size: str = "auto", quality: str = "auto", n: int = 1, seed: int = 0, mask: Any = None, **kw: Any) -> tuple:
    images = _images(image, "image")
    masks = None if mask is None else _images(mask, "mask")
    if masks is not None:
        if len(masks) not in (1, len(images)):
            raise InvalidInputError(f"The mask batch has {len(masks)} masks for {len(images)} images; use 1 mask or one per image.")
        masks = masks * len(images) if len(masks) == 1 else masks  # one mask per image from here on
        for img, m in zip(images, masks):
            check_mask_size(img, m)  # before anything is sent
    client = _client(ctx, kw)
    operations.validate_request_args(prompt, size, quality, n)
    calls = [
        (lambda cb, img=img: operations.edit_image(client, img, prompt, size=size, quality=quality, n=n, stream=kw.get("stream", True), on_progress=cb, cancel_check=ctx.cancel_check))
        for img in images
    ]
    results = await _run_images(ctx, calls)
    if masks is not None:
        for img, m, result in zip(images, masks, results):
            result.images = [apply_mask(img, edited, m) for edited in result.images]
    return _image_outputs(results)


async def _multi_merge(ctx: RunContext, prompt: str, size: str = "auto", quality: str = "auto", n: int = 1, seed: int = 0, **kw: Any) -> tuple:
    images: list[Image.Image] = []
    for i in range(1, MAX_MERGE_INPUTS + 1):
        value = kw.get(f"image_{i}")
        if value is None:
            if i <= 2:
                raise InvalidInputError(f"MultiMerge needs image_{i}; connect an image to it.")
            continue
        images += _images(value, f"image_{i}")
    client = _client(ctx, kw)
    result = await operations.multi_merge(client, images, prompt, size=size, quality=quality, n=n, stream=kw.get("stream", True), on_progress=ctx.on_progress, cancel_check=ctx.cancel_check)
    return _image_outputs([result])


async def _describe(ctx: RunContext, image: Any, question: str = DEFAULT_DESCRIBE_QUESTION, seed: int = 0, **kw: Any) -> tuple:
    images = _images(image, "image")
    client = _client(ctx, kw)
    calls = [
        (lambda cb, img=img: operations.describe(client, img, question or DEFAULT_DESCRIBE_QUESTION, stream=kw.get("stream", True), on_progress=cb, cancel_check=ctx.cancel_check))
        for img in images
    ]
    results = await _run_images(ctx, calls)
    if len(results) == 1:
        text = results[0].text
    else:
        text = "\n\n".join(f"[{i + 1}] {r.text}" for i, r in enumerate(results))
    return text, usage_json([r.usage for r in results])


_MERGE_INPUTS = tuple(
    InputSpec(f"image_{i}", "IMAGE", f"Image {i} of the merge, in this order" + (" (required)." if i <= 2 else " (optional)."), optional=i > 2)
    for i in range(1, MAX_MERGE_INPUTS + 1)
)

NODE_TYPES: dict[str, NodeType] = {
    t.name: t
    for t in (
        NodeType(
            "GPTImage2TextToImage", "GPT Image 2 · Text to Image",
            "Generate images from a text prompt with GPT-5.4-Image-2. Retries rate limits and server errors, streams progress, and never sends the same unchanged request twice.",
            (_prompt(), _SIZE, _QUALITY, _N, _SEED, *_CONNECTION),
            (_IMAGES_OUT, _TEXT_OUT, _USAGE_OUT),
            _text_to_image,
        ),
        NodeType(
            "GPTImage2EditImage", "GPT Image 2 · Edit Image",
            "Edit an image following a prompt. With a mask, only the masked area changes and every other pixel is kept exactly. An IMAGE batch is sent as concurrent requests.",
            (InputSpec("image", "IMAGE", "The image (or batch) to edit; each image in a batch is its own request."), _prompt("What to change in the image."), _SIZE, _QUALITY, _N, _SEED,
             InputSpec("mask", "MASK", "Optional: where the edit may change pixels (1 = edit, 0 = keep the original exactly). Must match the image size.", optional=True), *_CONNECTION),
            (_IMAGES_OUT, _TEXT_OUT, _USAGE_OUT),
            _edit_image,
        ),
        NodeType(
            "GPTImage2MultiMerge", "GPT Image 2 · Multi Merge",
            "Combine two or more images into one following a prompt. Images are sent in input order (image_1 first); a batch on an input contributes all its images.",
            (*_MERGE_INPUTS[:2], _prompt("How to combine the images, e.g. 'put the person from image 1 into the scene of image 2'."), _SIZE, _QUALITY, _N, _SEED, *_MERGE_INPUTS[2:], *_CONNECTION),
            (_IMAGES_OUT, _TEXT_OUT, _USAGE_OUT),
            _multi_merge,
        ),
        NodeType(
            "GPTImage2Describe", "GPT Image 2 · Describe",
            "Describe an image, or answer a question about it, in text.",
            (InputSpec("image", "IMAGE", "The image (or batch) to describe; a batch gives one numbered paragraph per image."),
             InputSpec("question", "STRING", "What to ask about the image.", default=DEFAULT_DESCRIBE_QUESTION, multiline=True),
             InputSpec("seed", "INT", _seed_tooltip("answer"), default=0, minimum=0, maximum=2**53), *_CONNECTION),
            (OutputSpec("description", "STRING", "The model's description or answer."), _USAGE_OUT),
            _describe,
        ),
    )
}


class ClientPool:
    """One client per (backend, base URL, model), so connections are reused across runs.

    ``api_key``, ``base_url``, ``model`` and ``backend`` given here are the pool's defaults: a
    node's non-empty override wins over them, and they win over environment and config file.
    Other keyword arguments go to every :class:`AsyncImageClient` (timeouts, retry, ...).
    """

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, model: str | None = None,
                 backend: str | None = None, **client_kwargs: Any) -> None:
        self._defaults = (api_key, base_url, model, backend)
        self._kwargs = client_kwargs
        self._clients: dict[tuple[str, str, str], AsyncImageClient] = {}

    def __call__(self, backend: str, base_url: str, model: str) -> AsyncImageClient:
        key = (backend or "auto", base_url or "", model or "")
        client = self._clients.get(key)
        if client is None:
            api_key, default_url, default_model, default_backend = self._defaults
            settings = Settings.resolve(
                api_key=api_key,
                base_url=base_url or default_url or None,
                model=model or default_model or None,
                backend=backend if backend not in ("", "auto") else default_backend,
            )
            if api_key is None and base_url:
                self._check_key_destination(settings, default_url, default_backend)
            client = self._clients[key] = AsyncImageClient(settings, **self._kwargs)
        return client

    @staticmethod
    def _check_key_destination(settings: Settings, default_url: str | None, default_backend: str | None) -> None:
        """A workflow's node may name a base URL; the user's configured key goes there only if
        it is the configured gateway or an allowed host. Otherwise a shared workflow file could
        send the key anywhere."""
        if settings.offline or not settings.api_key:
            return  # nothing to leak; a missing key is reported when sending
        target = host_of(settings.base_url)
        if host_allowed(target, allowed_hosts()):
            return
        configured = Settings.resolve(base_url=default_url, backend=default_backend)
        if target == host_of(configured.base_url):
            return
        raise ConfigurationError(
            f"This node asks to send your API key to {target}, which is not your configured gateway "
            f"({host_of(configured.base_url)}). If you trust it, add it to GPT_IMAGE_ALLOWED_HOSTS "
            "(comma-separated) or the config file's \"allowed_hosts\"; otherwise clear the node's base_url."
        )
