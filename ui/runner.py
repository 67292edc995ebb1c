"""Running a chain (all of it, one step, or from a step on) through the workflow executor.

:func:`run_chain` is an async generator of :class:`Snapshot`s: the executor's NodeEvents arrive
on an asyncio.Queue and each batch of them becomes one snapshot, so the page can stream progress
text into the running block. Results land in each step's ``result``; steps outside the run keep
theirs, so a failed step never wipes an earlier result.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from ..nodes.answers import Usage
from ..nodes.config import Settings
from ..nodes.errors import GPTImageError
from .chain import ChainError, chain_to_api, dependencies, step_node_id
from .connection import connection_inputs
from .session import CanvasSession, save_png

__all__ = ["Snapshot", "run_chain", "scope", "chain_usage"]

_PROGRESS_LINES = 6


@dataclass
class Snapshot:
    chain: list[dict]
    changed: set[int] = field(default_factory=set)
    done: int = 0
    total: int = 0
    message: str = ""
    finished: bool = False
    requests: int = 0
    cache_hits: int = 0


def scope(chain: list[dict], mode: str, k: int | None = None) -> list[int]:
    """The steps a run targets: 'all', 'step' k, or 'from' k on."""
    if mode == "step" and k is not None:
        return [k]
    if mode == "from" and k is not None:
        return list(range(k, len(chain)))
    return list(range(len(chain)))


def chain_usage(chain: list[dict]) -> dict:
    """The steps' usage summed field by field (details too); fields no step reported stay absent."""
    total = Usage()
    for step in chain:
        total = total + Usage.from_json((step.get("result") or {}).get("usage"))
    return total.as_dict()


def _usage(value: Any) -> dict:
    """A node's usage output (JSON text) as the dict a step's result keeps."""
    try:
        usage = Usage.from_json(json.loads(value) if isinstance(value, str) else value)
    except ValueError:
        return {}
    return usage.as_dict() if usage else {}


def _finish(step: dict, outputs: tuple, session: CanvasSession, cached: bool, elapsed: float) -> None:
    result = step.setdefault("result", {}) or {}
    if step["type"] == "Describe":
        text, usage = (outputs + ("", ""))[:2]
        images: list[str] = []
    else:
        imgs, text, usage = (tuple(outputs) + ([], "", ""))[:3]
        images = [str(save_png(img, session.outputs, "result")) for img in imgs or []]
    result.update(status="cached" if cached else "done", images=images, text=str(text or ""),
                  usage=_usage(usage), error=None, elapsed=result.get("elapsed", 0.0) if cached else elapsed,
                  cached=cached)
    step["result"] = result


def _event_kind(event: Any) -> str:
    return str(getattr(event, "kind", ""))


def _with_notes(message: str, notes: list[str], sep: str = " ") -> str:
    """A run's message with what failed outside the steps (a LoadImage, say): a step skipped
    because of it only says "not run: node 2 (LoadImage) failed"; this says why."""
    return sep.join([message, *notes])


async def run_chain(
    chain: list[dict],
    session: CanvasSession,
    settings: Settings,
    mode: str = "all",
    k: int | None = None,
    *,
    concurrency: int = 4,
) -> AsyncIterator[Snapshot]:
    """Run part of the chain; yield a snapshot after every batch of executor events."""
    from ..nodes.workflow import Executor, load_workflow

    chain = copy.deepcopy(chain)
    targets = scope(chain, mode, k)
    involved = sorted(set().union(*(dependencies(chain, t) for t in targets))) if targets else []
    snap = Snapshot(chain, total=len(involved))
    try:
        # Only the steps this run needs: a later, unfinished step must not stop "Run step 1".
        workflow = load_workflow(chain_to_api(chain, connection_inputs(settings), only=set(involved)))
        workflow.validate()  # what the executor will check: a problem says "Not run" and touches no step
    except (ChainError, GPTImageError) as exc:
        snap.message, snap.finished = f"Not run: {exc}", True
        yield snap
        return
    index = {step_node_id(i): i for i in range(len(chain))}
    for i in involved:
        prev = chain[i].get("result") or {}
        chain[i]["result"] = {**prev, "status": "queued", "progress": [], "error": None}
    snap = Snapshot(copy.deepcopy(chain), changed=set(involved), total=len(involved), message=f"Running {len(involved)} step(s)…")
    yield snap

    queue: asyncio.Queue = asyncio.Queue()
    stop = False
    executor = Executor(client_pool=session.client_pool(settings), cache=session.result_cache(),
                        concurrency=concurrency, input_dir=session.inputs, output_dir=None)
    task = asyncio.ensure_future(executor.run(workflow, on_event=queue.put_nowait, cancel_check=lambda: stop,
                                              targets=[step_node_id(t) for t in targets]))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    started = time.monotonic()
    settled: set[int] = set()
    notes: list[str] = []  # errors of nodes that are not steps (LoadImage, ImageFromBatch)
    try:
        finished = False
        while not finished:
            events = [await queue.get()]
            while not queue.empty():
                events.append(queue.get_nowait())
            snap = Snapshot(chain, total=len(involved))
            for event in events:
                if event is None:
                    finished = True
                    continue
                i = index.get(str(getattr(event, "node_id", "")))
                if i is None:
                    if _event_kind(event) == "error":
                        notes.append(f"node {getattr(event, 'node_id', '?')} ({getattr(event, 'class_type', 'node')}): "
                                     f"{getattr(event, 'text', '') or 'failed'}")
                    continue
                if _event_kind(event) in ("done", "cached"):  # PNG encoding: off the event loop
                    await asyncio.to_thread(_apply, chain[i], event, session)
                else:
                    _apply(chain[i], event, session)
                snap.changed.add(i)
                if _event_kind(event) in ("done", "cached", "error", "skipped"):
                    settled.add(i)
            snap.done = len(settled & set(involved))
            if not finished:
                snap.message = _with_notes(f"{snap.done}/{len(involved)} steps · {time.monotonic() - started:.1f} s", notes, " · ")
                snap.chain = copy.deepcopy(chain)  # each snapshot is what the page showed then
                yield snap
        report = task.result() if not task.cancelled() and task.exception() is None else None
        final = Snapshot(chain, changed=set(involved), done=len(involved), total=len(involved), finished=True)
        if report is None:
            exc = None if task.cancelled() else task.exception()
            final.message = f"The run failed: {exc}" if exc else "The run was cancelled."
            for i in involved:
                if (chain[i].get("result") or {}).get("status") in ("queued", "running"):
                    chain[i]["result"].update(status="error", error=str(exc or "cancelled"))
        else:
            await asyncio.to_thread(_reconcile, chain, involved, report, session)
            final.requests, final.cache_hits = int(getattr(report, "requests", 0)), int(getattr(report, "cache_hits", 0))
            errors = getattr(report, "errors", {}) or {}
            final.message = (f"{'Failed' if errors else 'Done'}: {len(involved)} step(s), {final.requests} request(s), "
                             f"{final.cache_hits} from cache, {getattr(report, 'elapsed', time.monotonic() - started):.1f} s.")
        final.message = _with_notes(final.message, notes)
        yield final
    finally:
        stop = True
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _apply(step: dict, event: Any, session: CanvasSession) -> None:
    kind = _event_kind(event)
    result = step["result"]
    text = str(getattr(event, "text", "") or "")
    elapsed = float(getattr(event, "elapsed", 0.0) or 0.0)
    if kind == "start":
        result.update(status="running", progress=[], started=time.monotonic())
    elif kind == "progress":
        if text:
            result["progress"] = (result.get("progress") or [])[-(_PROGRESS_LINES - 1):] + [text]
        result["elapsed"] = elapsed
    elif kind in ("done", "cached"):
        outputs = getattr(event, "outputs", None)
        if outputs is not None:
            _finish(step, tuple(outputs), session, kind == "cached", elapsed)
        else:
            result.update(status=kind, cached=kind == "cached")
    elif kind == "error":  # this step's old images no longer match it: only the message shows
        result.update(status="error", error=text or "failed", elapsed=elapsed, images=[], text="")
    elif kind == "skipped":
        result.update(status="skipped", error=text or "not run: an earlier step failed", images=[], text="")


def _reconcile(chain: list[dict], involved: list[int], report: Any, session: CanvasSession) -> None:
    """Fill in anything the events did not carry (outputs, errors) from the final report."""
    outputs = getattr(report, "outputs", {}) or {}
    errors = getattr(report, "errors", {}) or {}
    for i in involved:
        node = step_node_id(i)
        result = chain[i]["result"]
        if node in errors and result.get("status") != "error":
            result.update(status="error", error=str(errors[node]), images=[], text="")
        elif node in outputs and (result.get("status") not in ("done", "cached") or "images" not in result):
            cached = result.get("status") == "cached"
            _finish(chain[i], tuple(outputs[node]), session, cached, float(result.get("elapsed") or 0.0))
        elif result.get("status") in ("queued", "running"):
            result.update(status="skipped", error="not run: an earlier step failed", images=[], text="")

