"""Batch mode: one workflow over many items, each a set of overrides, resumable.

Items come from a CSV (a header of ``NODE.INPUT`` columns, optional ``id``) or JSONL (one
object per line, same keys). Item ``k`` writes into ``OUT/<k>/`` and, once all its outputs are
written, a done-marker ``OUT/<k>/.done.json``, atomically. A second run skips every item whose
marker matches the item's fingerprint (its graph, resolved endpoints and input files' content),
without any request; the cache covers the rest.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..answers import Usage
from .executor import Executor, NodeEvent, Prepared, RunReport, check_flag
from .files import atomic_write
from .graph import WorkflowError, load_workflow

__all__ = ["BatchItem", "BatchReport", "load_batch_items", "run_batch", "DONE_MARKER"]

DONE_MARKER = ".done.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class BatchItem:
    key: str
    overrides: dict[str, Any]


@dataclass
class BatchReport:
    done: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: list[str] = field(default_factory=list)
    requests: int = 0
    cache_hits: int = 0
    usage: dict = field(default_factory=dict)
    saved: list[Path] = field(default_factory=list)
    elapsed: float = 0.0
    cancelled: bool = False
    reports: dict[str, RunReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted and not self.cancelled


def _rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise WorkflowError(f"The batch file {path} could not be read ({exc.strerror}).") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise WorkflowError(f"{path.name} line {number} is not valid JSON ({exc}).") from None
            if not isinstance(row, dict):
                raise WorkflowError(f"{path.name} line {number} must be a JSON object like {{\"3.prompt\": \"...\"}}.")
            rows.append(row)
        return rows
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise WorkflowError(f"The batch file {path} has no header row (columns NODE.INPUT, optional id).")
    # Empty cells mean "no override": a sparse table keeps the workflow's value.
    return [{k.strip(): v for k, v in row.items() if k and v not in (None, "")} for row in reader]


def load_batch_items(path: Path | str) -> list[BatchItem]:
    """Items from a CSV or JSONL file; item keys are the ``id`` column or 0001, 0002, ..."""
    path = Path(path)
    rows = _rows(path)
    width = max(4, len(str(len(rows))))
    items, seen = [], set()
    for index, row in enumerate(rows):
        raw = row.pop("id", None)
        key = _UNSAFE.sub("_", str(raw)).strip("._") if raw not in (None, "") else f"{index + 1:0{width}d}"
        if not key:
            raise WorkflowError(f"{path.name} item {index + 1}: id {raw!r} can't be a folder name.")
        if key in seen:
            raise WorkflowError(f"{path.name} item {index + 1}: id {key!r} is used twice; ids must be unique.")
        seen.add(key)
        items.append(BatchItem(key, row))
    return items


_FINGERPRINT_VERSION = 2


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes; an unreadable file gets a marker of its own (its item then
    runs, and LoadImage reports the problem)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError as exc:
        return f"unreadable:{exc.errno}"
    return h.hexdigest()


def fingerprint(prepared: Prepared, digests: Mapping[Path, str] | None = None) -> str:
    """What an item's results depend on, as the result cache key sees it: the graph, what each
    of our nodes' backend/base URL/model resolve to (auto is offline without a key, remote with
    one) and the content of every file LoadImage reads."""
    digests = digests if digests is not None else {}
    doc = {
        "v": _FINGERPRINT_VERSION,
        "graph": prepared.workflow.nodes,
        "endpoints": prepared.endpoints,
        "files": {nid: digests.get(path) or file_digest(path) for nid, path in prepared.files.items()},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def _is_done(folder: Path, print_: str) -> bool:
    try:
        marker = json.loads((folder / DONE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("fingerprint") == print_


async def run_batch(executor: Executor, workflow: Any, items: list[BatchItem], out_dir: Path | str, *,
                    on_event: Callable[[str, NodeEvent], Any] | None = None,
                    on_item: Callable[[str, str, RunReport | None], Any] | None = None,
                    cancel_check: Callable[[], bool] | None = None,
                    stop_check: Callable[[], bool] | None = None) -> BatchReport:
    """Run every item not yet done. Every item is validated before the first request.

    ``on_item(key, status, report)`` is told "skipped" (already done), "done" or "failed"."""
    base = load_workflow(workflow)
    out = Path(out_dir)
    plans: list[tuple[BatchItem, Prepared]] = []
    for item in items:
        try:
            plans.append((item, executor._prepare(base, item.overrides)))
        except WorkflowError as exc:
            raise WorkflowError(f"item {item.key}: {exc}", exc.node_id) from None
    # Each input file is read once however many items use it (off the event loop: files can be big).
    paths = {path for _, plan in plans for path in plan.files.values()}
    digests = await asyncio.to_thread(lambda: {path: file_digest(path) for path in paths})
    prepared = [(item, plan, fingerprint(plan, digests)) for item, plan in plans]
    report = BatchReport()
    start = time.monotonic()
    usage: Usage | None = None
    gate = asyncio.Semaphore(executor.concurrency)

    async def one(item: BatchItem, plan: Prepared, print_: str) -> None:
        nonlocal usage
        wf = plan.workflow
        folder = out / item.key
        if _is_done(folder, print_):
            report.already_done.append(item.key)
            if on_item:
                on_item(item.key, "skipped", None)
            return
        async with gate:
            if check_flag(cancel_check) or check_flag(stop_check):
                report.interrupted.append(item.key)
                report.cancelled = True
                return
            result = await executor._execute(plan, (lambda ev: on_event(item.key, ev)) if on_event else None,
                                             cancel_check=cancel_check, stop_check=stop_check, output_dir=folder)
        report.reports[item.key] = result
        report.requests += result.requests
        report.cache_hits += result.cache_hits
        report.saved += result.saved
        if result.usage:
            u = Usage.from_json(result.usage)
            usage = u if usage is None else usage + u
        if result.ok:
            # Saved paths are resolved (absolute): compare them with the resolved folder.
            root = folder.resolve()
            marker = {"fingerprint": print_, "finished": time.time(), "requests": result.requests,
                      "files": [p.relative_to(root).as_posix() for p in result.saved if root in p.parents]}
            await asyncio.to_thread(atomic_write, folder / DONE_MARKER, json.dumps(marker, indent=1).encode())
            report.done.append(item.key)
        elif result.errors:
            first, message = next(iter(result.errors.items()))
            report.failed[item.key] = f"{wf.label(first)}: {message}"
        else:
            report.interrupted.append(item.key)
        report.cancelled = report.cancelled or result.cancelled
        if on_item:
            on_item(item.key, "done" if result.ok else "failed" if result.errors else "interrupted", result)

    await asyncio.gather(*(one(*p) for p in prepared))
    report.usage = usage.as_dict() if usage else {}
    report.elapsed = time.monotonic() - start
    return report
