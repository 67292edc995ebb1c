"""The graph executor: validate, then run nodes as soon as their inputs are ready.

Our four node types go through ``NODE_TYPES[...].run`` (the same core call ComfyUI makes, so
a workflow sends the same requests in both), with their results cached; LoadImage, SaveImage
and PreviewImage are done here. A failed node's dependents are skipped, independent branches
go on, and everything that finished stays in the report, the cache and the output folder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from PIL import Image

from ..answers import Usage
from ..client import AsyncImageClient, ProgressEvent
from ..errors import CancelledError, GPTImageError
from ..node_types import NODE_TYPES, ClientPool, RunContext
from .cache import ResultCache, cache_key
from .catalog import is_ours
from .files import load_image_file, png_with_metadata, resolve_inside, save_numbered
from .graph import Workflow, WorkflowError, as_link, load_workflow

__all__ = ["Executor", "RunReport", "NodeEvent", "check_flag"]

log = logging.getLogger("gpt_image_nodes.workflow")

_DEFAULT: Any = object()


@dataclass
class NodeEvent:
    """What happens to a node. ``kind``: start, progress, cached, done, error or skipped.

    For ``progress``, ``progress_kind`` is the client's event kind (status, text, image, retry)
    and ``text`` its text: streamed model text arrives as ``text`` pieces."""

    node_id: str
    class_type: str
    kind: str
    text: str = ""
    elapsed: float = 0.0
    outputs: tuple | None = None
    progress_kind: str = ""


@dataclass
class RunReport:
    """The outcome of one run. ``requests`` counts HTTP attempts this run sent (one per image
    in a node's IMAGE batch, plus retries); cached nodes send none. ``usage`` sums the token
    usage of the requests sent (cached results cost nothing and add nothing)."""

    outputs: dict[str, tuple] = field(default_factory=dict)
    images: dict[str, list[Image.Image]] = field(default_factory=dict)
    requests: int = 0
    cache_hits: int = 0
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    usage: dict = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    saved: list[Path] = field(default_factory=list)
    elapsed: float = 0.0
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors and not self.cancelled and not self.skipped


@dataclass
class Prepared:
    """A workflow checked and ready to run: overrides applied, validated, its nodes in order,
    what our nodes' literal backend/base URL/model resolve to (node id -> :meth:`Executor.endpoint`)
    and the file each LoadImage node with a literal name reads (node id -> path)."""

    workflow: Workflow
    order: list[str]
    endpoints: dict[str, dict[str, str]]
    files: dict[str, Path]


def check_flag(fn: Callable[[], bool] | None) -> bool:
    if fn is None:
        return False
    try:
        return bool(fn())
    except BaseException:  # ComfyUI-style checks raise to say "stop"
        return True


class Executor:
    """Runs workflows. One executor can run many workflows, concurrently too; ``concurrency``
    caps the API nodes running at once across all of them."""

    def __init__(self, client_pool: ClientPool | None = None, cache: "ResultCache | None" = _DEFAULT,
                 concurrency: int = 4, input_dir: Path | str | None = None,
                 output_dir: Path | str | None = None, batch_concurrency: int = 4) -> None:
        self.pool = client_pool or ClientPool()
        self.cache = ResultCache() if cache is _DEFAULT else cache
        self.concurrency = max(1, int(concurrency))
        self.input_dir = Path(input_dir) if input_dir is not None else Path.cwd()
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.batch_concurrency = max(1, int(batch_concurrency))
        self._slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()
        self._clients: set[AsyncImageClient] = set()
        self._lock = threading.Lock()

    def client_for(self, backend: str, base_url: str, model: str) -> AsyncImageClient:
        client = self.pool(backend, base_url, model)
        with self._lock:
            self._clients.add(client)
        return client

    def slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            sem = self._slots.get(loop)
            if sem is None:
                sem = self._slots[loop] = asyncio.Semaphore(self.concurrency)
        return sem

    def endpoint(self, inputs: Mapping[str, Any]) -> dict[str, str]:
        """Backend, base URL and model after resolution: part of the cache key (the key is not)."""
        settings = self.client_for(inputs.get("backend") or "auto", inputs.get("base_url") or "", inputs.get("model") or "").settings
        return {"backend": settings.backend, "base_url": "" if settings.offline else settings.base_url, "model": settings.model}

    def prepare(self, workflow: Any, overrides: Mapping[str, Any] | None = None, targets: list[str] | None = None) -> tuple[Workflow, list[str]]:
        """The workflow with overrides applied and the nodes to run, in order; raises
        WorkflowError (naming the node) for anything that would fail before a request."""
        prepared = self._prepare(workflow, overrides, targets)
        return prepared.workflow, prepared.order

    def _prepare(self, workflow: Any, overrides: Mapping[str, Any] | None = None, targets: list[str] | None = None) -> "Prepared":
        wf = load_workflow(workflow)
        wf.apply_overrides(overrides)
        order = wf.validate(wf.needed(targets))
        endpoints: dict[str, dict[str, str]] = {}
        files: dict[str, Path] = {}
        for nid in order:
            node = wf.nodes[nid]
            if node["class_type"] == "LoadImage" and as_link(node["inputs"].get("image")) is None:
                files[nid] = self.input_path(wf, nid, node["inputs"].get("image"))
            elif is_ours(node["class_type"]):
                literal = {k: v for k, v in node["inputs"].items() if as_link(v) is None}
                try:
                    endpoints[nid] = self.endpoint(literal)
                except GPTImageError as exc:
                    raise WorkflowError(f"{wf.label(nid)}: {exc}", nid) from None
        return Prepared(wf, order, endpoints, files)

    def input_path(self, wf: Workflow, nid: str, name: Any) -> Path:
        """The file a LoadImage node reads, which must be inside ``input_dir``."""
        try:
            path = resolve_inside(self.input_dir, str(name), "image")
        except ValueError as exc:
            raise WorkflowError(f"{wf.label(nid)}: {exc}.", nid) from None
        if not path.is_file():
            raise WorkflowError(f"{wf.label(nid)}: the image {name!r} is not in {self.input_dir.resolve()} (set the folder with --input-dir).", nid)
        return path

    async def run(self, workflow: Any, overrides: Mapping[str, Any] | None = None,
                  on_event: Callable[[NodeEvent], Any] | None = None,
                  cancel_check: Callable[[], bool] | None = None, targets: list[str] | None = None,
                  *, stop_check: Callable[[], bool] | None = None,
                  output_dir: Path | str | None = None) -> RunReport:
        """Run ``workflow`` (a Workflow, dict, JSON text or path). ``cancel_check`` stops at
        once, requests in flight included; ``stop_check`` only stops new nodes from starting,
        so answers already being paid for are received and cached."""
        prepared = self._prepare(workflow, overrides, targets)
        return await self._execute(prepared, on_event, cancel_check, stop_check, output_dir)

    async def _execute(self, prepared: "Prepared", on_event: Callable[[NodeEvent], Any] | None = None,
                       cancel_check: Callable[[], bool] | None = None, stop_check: Callable[[], bool] | None = None,
                       output_dir: Path | str | None = None) -> RunReport:
        """Run a workflow :meth:`_prepare` checked (each run prepares once; see run_batch)."""
        out = Path(output_dir) if output_dir is not None else self.output_dir
        run = _Run(self, prepared.workflow, on_event, cancel_check, stop_check, out)
        await run.execute(prepared.order)
        return run.report

    def run_sync(self, *args: Any, **kwargs: Any) -> RunReport:
        """:meth:`run`, blocking. Works with or without an event loop running in this thread."""
        async def main() -> RunReport:
            try:
                return await self.run(*args, **kwargs)
            finally:
                await self.aclose()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(main())
        with ThreadPoolExecutor(1, thread_name_prefix="gpt-image-workflow") as pool:
            return pool.submit(asyncio.run, main()).result()

    async def aclose(self) -> None:
        """Close the connections this executor opened in the running event loop."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            await client.aclose()


class _Run:
    def __init__(self, ex: Executor, wf: Workflow, on_event: Callable[[NodeEvent], Any] | None,
                 cancel_check: Callable[[], bool] | None, stop_check: Callable[[], bool] | None,
                 output_dir: Path | None) -> None:
        self.ex, self.wf, self.on_event, self.output_dir = ex, wf, on_event, output_dir
        self.cancel_check, self.stop_check = cancel_check, stop_check
        self.report = RunReport()
        self.tasks: dict[str, asyncio.Task] = {}
        self.usage: Usage | None = None
        self.start = time.monotonic()
        self._metadata: dict[str, Any] | None = None

    def emit(self, nid: str, kind: str, text: str = "", started: float | None = None, outputs: tuple | None = None, progress_kind: str = "") -> None:
        if self.on_event is None:
            return
        elapsed = time.monotonic() - (started if started is not None else self.start)
        try:
            self.on_event(NodeEvent(nid, self.wf.nodes[nid]["class_type"], kind, text, elapsed, outputs, progress_kind))
        except Exception:  # a broken display must not lose a paid result
            log.exception("on_event callback failed")

    async def execute(self, order: list[str]) -> None:
        for nid in order:
            self.tasks[nid] = asyncio.ensure_future(self.node(nid))
        try:
            await asyncio.gather(*self.tasks.values())
        finally:
            for task in self.tasks.values():
                task.cancel()
            self.report.elapsed = time.monotonic() - self.start
            self.report.usage = self.usage.as_dict() if self.usage else {}
            self.report.cancelled = self.report.cancelled or check_flag(self.cancel_check)

    def skip(self, nid: str, why: str) -> None:
        self.report.skipped[nid] = why
        self.emit(nid, "skipped", why)

    def halted(self, paid: bool = False) -> str | None:
        """Why a node must not start. A stop only holds back new requests: free work (files,
        cache hits) on results already paid for still completes."""
        if check_flag(self.cancel_check):
            self.report.cancelled = True
            return "not started: the run was cancelled"
        if paid and check_flag(self.stop_check):
            self.report.cancelled = True
            return "not started: the run was stopped"
        return None

    async def node(self, nid: str) -> None:
        links = self.wf.links(nid)
        for _, src, _ in links:
            await asyncio.shield(self.tasks[src])
        failed = [src for _, src, _ in links if src not in self.report.outputs]
        if failed:
            why = "failed" if failed[0] in self.report.errors else "was not run"
            return self.skip(nid, f"not run: {self.wf.label(failed[0])} {why}")
        if (why := self.halted()) is not None:
            return self.skip(nid, why)
        node = self.wf.nodes[nid]
        inputs = {name: (self.report.outputs[v[0]][v[1]] if (v := as_link(value)) else value) for name, value in node["inputs"].items()}
        started = time.monotonic()
        try:
            outputs = await self.run_node(nid, node["class_type"], inputs, started)
        except asyncio.CancelledError:
            self.report.cancelled = True
            raise
        except CancelledError:
            self.report.cancelled = True
            self.report.errors[nid] = "cancelled"
            self.emit(nid, "error", "cancelled", started)
            return
        except GPTImageError as exc:
            # Kept per node and shown after the node's label: a WorkflowError's own "node N (...): "
            # prefix would say it twice ("node 1 (LoadImage) failed: node 1 (LoadImage): ...").
            self.report.errors[nid] = exc.message.removeprefix(f"{self.wf.label(nid)}: ")
            self.emit(nid, "error", self.report.errors[nid], started)
            return
        except Exception as exc:  # noqa: BLE001 - report it on the node, keep the other branches
            log.exception("%s failed", self.wf.label(nid))
            self.report.errors[nid] = f"unexpected {type(exc).__name__}: {exc}"
            self.emit(nid, "error", self.report.errors[nid], started)
            return
        if outputs is None:
            return  # skipped while waiting for a slot
        self.report.outputs[nid] = outputs
        if node["class_type"] in ("SaveImage", "PreviewImage"):
            self.report.images[nid] = list(inputs.get("images") or [])
        elif (images := next((v for v in outputs if isinstance(v, list) and v and isinstance(v[0], Image.Image)), None)) is not None:
            self.report.images[nid] = images

    async def run_node(self, nid: str, ctype: str, inputs: dict[str, Any], started: float) -> tuple | None:
        if ctype == "LoadImage":
            path = self.ex.input_path(self.wf, nid, inputs.get("image"))
            try:
                outputs = tuple(await asyncio.to_thread(load_image_file, path))
            except (OSError, ValueError) as exc:
                raise WorkflowError(f"{self.wf.label(nid)}: could not read {path.name}: {exc}", nid) from None
            self.emit(nid, "done", path.name, started, outputs)
            return outputs
        if ctype in ("SaveImage", "PreviewImage"):
            return await self.save(nid, ctype, inputs, started)
        if ctype == "ImageFromBatch":
            return self.pick(nid, inputs, started)
        return await self.run_ours(nid, ctype, inputs, started)

    async def run_ours(self, nid: str, ctype: str, inputs: dict[str, Any], started: float) -> tuple | None:
        spec = NODE_TYPES[ctype]
        full = {**spec.defaults(), **inputs}
        cache = self.ex.cache
        key = None
        if cache is not None:
            keyed = {k: v for k, v in full.items() if not spec.input(k).advanced}
            key = await asyncio.to_thread(cache_key, ctype, keyed, self.ex.endpoint(full))
            hit = await asyncio.to_thread(cache.get, key)
            if hit is not None:
                self.report.cache_hits += 1
                self.report.cached.append(nid)
                self.emit(nid, "cached", "from cache, no request", started, hit)
                await self.write_text(nid, ctype, hit)
                return hit
        async with self.ex.slots():
            if (why := self.halted(paid=True)) is not None:
                self.skip(nid, why)
                return None
            started = time.monotonic()
            self.emit(nid, "start", "", started)
            sent = 0

            def progress(event: ProgressEvent) -> None:
                nonlocal sent
                if event.kind == "request":
                    sent += 1
                    self.report.requests += 1
                self.emit(nid, "progress", event.display_text, started, progress_kind=event.kind)

            ctx = RunContext(client_for=self.ex.client_for, on_progress=progress, cancel_check=self.cancel_check,
                             batch_concurrency=self.ex.batch_concurrency)
            outputs = tuple(await spec.run(ctx, **full))
        self.report.executed.append(nid)
        names = [o.name for o in spec.outputs]
        if "usage" in names:
            usage = Usage.from_json(json.loads(outputs[names.index("usage")] or "{}"))
            if usage is not None:
                self.usage = usage if self.usage is None else self.usage + usage
        if cache is not None and key is not None:
            problem = await asyncio.to_thread(cache.put, key, outputs, {"type": ctype, "created": time.time()})
            if problem:
                self.emit(nid, "progress", problem, started, progress_kind="status")
        self.emit(nid, "done", f"{sent} request{'s' if sent != 1 else ''}", started, outputs)
        await self.write_text(nid, ctype, outputs)
        return outputs

    def pick(self, nid: str, inputs: dict[str, Any], started: float) -> tuple:
        """ComfyUI's ImageFromBatch: the index and length are clamped to the batch."""
        images = list(inputs["image"] or [])
        if not images:
            raise WorkflowError(f"{self.wf.label(nid)}: the batch is empty.", nid)
        first = min(len(images) - 1, int(inputs.get("batch_index", 0)))
        outputs = (images[first:first + max(1, int(inputs.get("length", 1)))],)
        self.emit(nid, "done", f"{len(outputs[0])} of {len(images)} image(s)", started, outputs)
        return outputs

    def metadata(self) -> dict[str, Any]:
        """What ComfyUI embeds in saved PNGs so dropping one on the canvas reopens the graph."""
        if self._metadata is None:
            self._metadata = {"prompt": self.wf.to_api(), "workflow": self.wf.to_ui()}
        return self._metadata

    async def save(self, nid: str, ctype: str, inputs: dict[str, Any], started: float) -> tuple:
        images = list(inputs.get("images") or [])
        saved: list[Path] = []
        if ctype == "SaveImage" and self.output_dir is not None and images:
            meta = self.metadata()
            payloads = await asyncio.to_thread(lambda: [png_with_metadata(img, meta) for img in images])
            try:
                saved = await asyncio.to_thread(save_numbered, self.output_dir, str(inputs.get("filename_prefix") or "ComfyUI"), "png", payloads)
            except (OSError, ValueError) as exc:
                raise WorkflowError(f"{self.wf.label(nid)}: could not save the images: {exc}", nid) from None
            self.report.saved += saved
        self.emit(nid, "done", ", ".join(p.name for p in saved) or f"{len(images)} image(s)", started, ())
        return ()

    async def write_text(self, nid: str, ctype: str, outputs: tuple) -> None:
        """A Describe at the end of a chain has no file node: keep its text next to the images."""
        if self.output_dir is None or not outputs or not isinstance(outputs[0], str) or self.wf.consumers(nid):
            return
        self.report.saved += await asyncio.to_thread(save_numbered, self.output_dir, f"{ctype}_{nid}", "txt", [outputs[0].encode("utf-8")])
