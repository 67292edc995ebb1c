"""The public API endpoints: the four operations and a whole workflow, for gradio_client.

They use the server's own connection (environment, config file or Space secret; offline when no
key), never a key typed in someone's page. Images come back as PIL images that Gradio writes as
PNG (lossless); inputs are read with the core's safe loader.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from ..nodes.codecs import load_input_image
from ..nodes.config import Settings, normalize_base_url
from ..nodes.errors import ConfigurationError
from ..nodes.node_types import NODE_TYPES, ClientPool, RunContext
from ..nodes.protocol import DEFAULT_DESCRIBE_QUESTION

__all__ = ["Endpoints"]


def _open(path: Any, what: str) -> Image.Image:
    if not path:
        from ..nodes.errors import InvalidInputError

        raise InvalidInputError(f"The {what} is missing: upload an image.")
    return load_input_image(Path(_path(path)).read_bytes(), name=what)


def _path(item: Any) -> str:
    """A file path from what Gradio passes for File/Gallery items (str, dict or tuple)."""
    if isinstance(item, (tuple, list)):
        item = item[0]
    if isinstance(item, dict):
        item = item.get("path") or item.get("name")
    return str(item)


class Endpoints:
    """Bound to one process-wide client pool (connections are reused across calls)."""

    def __init__(self, pool: ClientPool | None = None, concurrency: int = 4) -> None:
        self.pool = pool or ClientPool()
        self.concurrency = concurrency

    def _server_connection(self, backend: str, base_url: str, model: str) -> Any:
        """The client pool /run_workflow's executor gets: a workflow node's ``base_url`` must not
        send the server's key (a Space secret) to a host the visitor chose."""
        if (base_url or "").strip():
            try:
                same = normalize_base_url(base_url) == Settings.resolve().base_url
            except ConfigurationError:
                same = False
            if not same:
                raise ConfigurationError(
                    "The public API uses this server's own connection, so a workflow may not set base_url: "
                    "clear it in the node (or run the workflow with your own key on your machine).")
        return self.pool(backend, "", model)

    async def _run(self, name: str, **inputs: Any) -> tuple:
        ctx = RunContext(client_for=self.pool, batch_concurrency=self.concurrency)
        return await NODE_TYPES[name].run(ctx, **inputs)

    async def text_to_image(self, prompt: str, size: str = "auto", quality: str = "auto", n: int = 1, seed: int = 0) -> tuple[list[Image.Image], str, str]:
        """Generate images from a text prompt. Returns (images, model's text, usage JSON)."""
        return await self._run("GPTImage2TextToImage", prompt=prompt, size=size, quality=quality, n=int(n), seed=int(seed))

    async def edit_image(self, image: str, prompt: str, size: str = "auto", quality: str = "auto", n: int = 1, seed: int = 0) -> tuple[list[Image.Image], str, str]:
        """Edit one image following a prompt. Returns (images, model's text, usage JSON)."""
        return await self._run("GPTImage2EditImage", image=[_open(image, "image to edit")], prompt=prompt, size=size, quality=quality, n=int(n), seed=int(seed))

    async def multi_merge(self, images: Sequence[Any], prompt: str, size: str = "auto", quality: str = "auto", n: int = 1, seed: int = 0) -> tuple[list[Image.Image], str, str]:
        """Merge two or more images, in order, following a prompt."""
        opened = [_open(item, f"image {i + 1}") for i, item in enumerate(images or [])]
        inputs = {f"image_{i + 1}": [img] for i, img in enumerate(opened)}
        return await self._run("GPTImage2MultiMerge", prompt=prompt, size=size, quality=quality, n=int(n), seed=int(seed), **inputs)

    async def describe(self, image: str, question: str = DEFAULT_DESCRIBE_QUESTION) -> tuple[str, str]:
        """Describe an image or answer a question about it. Returns (description, usage JSON)."""
        return await self._run("GPTImage2Describe", image=[_open(image, "image to describe")], question=question or DEFAULT_DESCRIBE_QUESTION)

    async def run_workflow(self, workflow: str, images: Sequence[Any] | None = None) -> tuple[dict, list[Image.Image]]:
        """Run a ComfyUI workflow (API or UI format, as JSON text). ``images`` are the files its
        LoadImage nodes name (matched by file name). Returns (summary, images of its output nodes)."""
        from ..nodes.workflow import Executor, load_workflow

        wf = load_workflow(workflow)
        folder = Path(tempfile.mkdtemp(prefix="gpt-image-api-"))
        try:
            for item in images or []:
                src = Path(_path(item))
                shutil.copyfile(src, folder / src.name)
            executor = Executor(client_pool=self._server_connection, cache=None, concurrency=self.concurrency, input_dir=folder, output_dir=None)
            report = await executor.run(wf)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        ours = [nid for nid, node in wf.nodes.items() if node["class_type"] in NODE_TYPES and nid in report.outputs]
        texts = {nid: t for nid in ours if (t := _texts(wf.nodes[nid]["class_type"], report.outputs[nid]))}
        shown = _image_nodes(wf)
        summary = {
            "text": texts,
            "errors": dict(report.errors), "requests": report.requests, "cache_hits": report.cache_hits,
            "executed": list(report.executed), "usage": report.usage, "elapsed": report.elapsed,
            "images": {nid: len(report.images[nid]) for nid in shown if report.images.get(nid)},
        }
        return summary, [img for nid in shown for img in report.images.get(nid, [])]


def _image_nodes(wf: Any) -> list[str]:
    """Whose images a caller gets back: the Save/Preview nodes if the workflow has any, else
    every image our nodes made. Never the LoadImage inputs the caller sent."""
    saved = [nid for nid, node in wf.nodes.items() if node["class_type"] in ("SaveImage", "PreviewImage")]
    return saved or [nid for nid, node in wf.nodes.items() if node["class_type"] in NODE_TYPES]


def _texts(class_type: str, outputs: Sequence[Any]) -> list[str]:
    """The model's words from a node's outputs (description / text); usage is summed apart."""
    spec = NODE_TYPES.get(class_type)
    if spec is None:
        return []
    return [v for o, v in zip(spec.outputs, outputs) if o.kind == "STRING" and o.name != "usage" and v]
