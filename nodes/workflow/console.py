"""Terminal output for the headless runner: a progress bar per node, and the summaries.

On a terminal, running nodes are a block of bar lines redrawn in place and finished nodes
scroll above it; elsewhere (logs, CI, pipes) plain lines: a node's start, retries, outcome, and
its streamed text a whole line at a time (not one line per fragment). No dependency: the
runner must work wherever the core does.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any, TextIO

from .executor import NodeEvent, RunReport
from .graph import Workflow

__all__ = ["Progress", "run_summary", "failure_text", "batch_summary", "files_text", "usage_text"]

_PERCENT = re.compile(r"(\d{1,3})\s*%")
_BAR = 16
_SUB_STREAM = re.compile(r"\[\d+/\d+\] ")  # what a node's batch puts before each image's events
_NEWLINE = re.compile(r"\r\n|\r|\n")


class _Line:
    def __init__(self, label: str) -> None:
        self.label, self.fraction, self.text, self.start = label, 0.0, "waiting", time.monotonic()


class Progress:
    """Receives NodeEvents (``prefix`` names a batch item) and draws them on ``stream``."""

    def __init__(self, wf: Workflow, stream: TextIO, quiet: bool = False) -> None:
        self.wf, self.stream, self.quiet = wf, stream, quiet
        self.live = not quiet and bool(getattr(stream, "isatty", lambda: False)())
        self.lines: dict[str, _Line] = {}
        #: Without a terminal: streamed text not yet ended by a newline, per node, per image.
        self.pending: dict[str, dict[str, str]] = {}
        self.drawn = 0

    def label(self, node_id: str, class_type: str, prefix: str = "") -> str:
        title = self.wf.title(node_id) if node_id in self.wf.nodes else class_type
        short = class_type.replace("GPTImage2", "")
        name = f"node {node_id} {short}" + (f' "{title}"' if title not in (class_type, short) else "")
        return f"[{prefix}] {name}" if prefix else name

    def __call__(self, event: NodeEvent, prefix: str = "") -> None:
        if self.quiet:
            return
        key = f"{prefix}/{event.node_id}"
        label = self.label(event.node_id, event.class_type, prefix)
        if event.kind in ("start", "progress"):
            line = self.lines.setdefault(key, _Line(label))
            self._advance(line, event)
            if not self.live:
                if event.kind == "start":
                    self._print(f"{label}: started")
                elif event.progress_kind == "text":
                    self._buffer(key, label, event.text)
                elif event.progress_kind == "retry":
                    self._flush(key, label)  # the failed attempt's last words, then the retry
                    self._print(f"{label}: {event.text.strip()}")
            self._draw()
            return
        self.lines.pop(key, None)
        self._flush(key, label)
        text = {
            "done": f"done in {event.elapsed:.1f} s" + (f" ({event.text})" if event.text else ""),
            "cached": "cached, no request",
            "error": f"FAILED: {event.text}",
            "skipped": f"skipped ({event.text})",
        }.get(event.kind, event.text)
        self._print(f"{label}: {text}")
        self._draw()

    def _buffer(self, key: str, label: str, text: str) -> None:
        """Streamed text arrives in fragments (a token, half a line): a log gets whole lines.
        Each image of a node's batch ("[2/3] ...") streams on its own, so each has a buffer."""
        match = _SUB_STREAM.match(text)
        sub = match.group(0) if match else ""
        pending = self.pending.setdefault(key, {})
        *done, pending[sub] = _NEWLINE.split(pending.get(sub, "") + text[len(sub):])
        for row in done:
            if row.strip():
                self._print(f"{label}: {sub}{row.strip()}")

    def _flush(self, key: str, label: str) -> None:
        for sub, rest in self.pending.pop(key, {}).items():
            if rest.strip():
                self._print(f"{label}: {sub}{rest.strip()}")

    @staticmethod
    def _advance(line: _Line, event: NodeEvent) -> None:
        text = event.text.strip()
        if event.kind == "start":
            line.fraction, line.text, line.start = 0.05, "starting", time.monotonic()
        elif event.progress_kind in ("status", "request"):
            line.fraction = max(line.fraction, 0.15)
            line.text = text
        elif event.progress_kind == "text":
            match = _PERCENT.search(text)
            line.fraction = max(line.fraction, min(0.95, int(match.group(1)) / 100) if match else min(0.9, line.fraction + 0.05))
            line.text = text
        elif event.progress_kind == "image":
            line.fraction, line.text = 1.0, text
        elif event.progress_kind == "retry":
            line.text = text

    def _print(self, text: str) -> None:
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self.live and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _draw(self) -> None:
        if not self.live:
            return
        self._clear()
        width = shutil.get_terminal_size((100, 20)).columns - 1
        for line in self.lines.values():
            filled = round(line.fraction * _BAR)
            row = f"{line.label} ▕{'█' * filled}{'░' * (_BAR - filled)}▏ {time.monotonic() - line.start:5.1f}s {line.text}"
            self.stream.write(row[:width] + "\n")
        self.drawn = len(self.lines)
        self.stream.flush()


def usage_text(usage: dict) -> str:
    if not usage:
        return "not reported by the service"
    flat = [f"{k}={v}" for k, v in usage.items() if not isinstance(v, dict)]
    return ", ".join(flat) or "not reported by the service"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def files_text(saved: list[Path], out: Path) -> list[str]:
    if not saved:
        return ["No files written."]
    lines = [f"Wrote {_plural(len(saved), 'file')} to {out}:"]
    lines += [f"  {p}" for p in saved[:20]]
    if len(saved) > 20:
        lines.append(f"  ... and {len(saved) - 20} more")
    return lines


def run_summary(wf: Workflow, report: RunReport, out: Path) -> str:
    """What happened, what it cost and where the files are; then failures and what to do."""
    lines = [
        f"Finished in {report.elapsed:.1f} s: {_plural(len(report.executed), 'node')} run, "
        f"{_plural(report.requests, 'request')} sent, {_plural(report.cache_hits, 'cache hit')} (no request).",
        f"Usage: {usage_text(report.usage)}",
        *files_text(report.saved, out),
    ]
    for nid, outputs in report.outputs.items():
        if wf.nodes[nid]["class_type"] == "GPTImage2Describe" and outputs and not wf.consumers(nid):
            lines.append(f"{wf.label(nid)} says: {outputs[0]}")
    return "\n".join(lines)


def failure_text(wf: Workflow, report: RunReport) -> str:
    lines = [f"error: {wf.label(nid)} failed: {message}" for nid, message in report.errors.items()]
    blocked = [nid for nid, why in report.skipped.items() if why.startswith("not run")]
    if blocked:
        lines.append("Not run because of it: " + ", ".join(wf.label(n) for n in blocked) + ".")
    kept = len(report.executed) + len(report.cached)
    lines.append(f"Kept: {_plural(kept, 'finished node')} (cached: running the same command again does not pay for them again) "
                 f"and {_plural(len(report.saved), 'file')} written.")
    return "\n".join(lines)


def batch_summary(report: Any, out: Path) -> str:
    lines = [
        f"Batch finished in {report.elapsed:.1f} s: {len(report.done)} item(s) done now, "
        f"{len(report.already_done)} already done (skipped, no request), {len(report.failed)} failed"
        + (f", {len(report.interrupted)} not finished" if report.interrupted else "") + ".",
        f"{_plural(report.requests, 'request')} sent, {_plural(report.cache_hits, 'cache hit')}. Usage: {usage_text(report.usage)}",
        f"Outputs are in {out}/<item>/ ({_plural(len(report.saved), 'file')} written this run).",
    ]
    lines += [f"error: item {key}: {message}" for key, message in report.failed.items()]
    return "\n".join(lines)
