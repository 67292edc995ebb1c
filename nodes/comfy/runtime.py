"""ComfyUI hooks for a running node: progress text, progress bar and Cancel.

ComfyUI's modules are looked up in ``sys.modules`` and never imported: inside ComfyUI they are
always loaded already, and outside it (tests, other hosts) every hook is a quiet no-op. A host
or a test can replace the hooks with :func:`set_hooks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import Any

from ..client import ProgressEvent

__all__ = ["Hooks", "ComfyHooks", "hooks", "set_hooks", "NodeProgress", "close_at_loop_end"]

log = logging.getLogger("gpt_image_nodes.comfy")

#: Text events arrive per streamed chunk; the node's text is refreshed at most this often.
TEXT_REFRESH_SECONDS = 0.1


class Hooks:
    """What the glue needs from its host. This base class is the no-host version."""

    def interrupted(self) -> bool:
        return False

    def reinterrupt(self) -> None:
        """Set the host's interrupt flag again (after a host call consumed it)."""

    def send_text(self, node_id: str | None, text: str) -> None:
        pass

    def progress_bar(self, node_id: str | None, total: int) -> Any:
        return None

    def interrupt_error(self) -> BaseException | None:
        """The exception the host expects for a cancelled node (None: raise our own)."""
        return None

    def is_interrupt(self, exc: BaseException) -> bool:
        return False


class ComfyHooks(Hooks):
    """ComfyUI's own: PromptServer progress text, comfy.utils.ProgressBar, the interrupt flag."""

    @staticmethod
    def _mm() -> Any:
        return sys.modules.get("comfy.model_management")

    def interrupted(self) -> bool:
        mm = self._mm()
        check = getattr(mm, "processing_interrupted", None)
        return bool(check()) if callable(check) else False

    def reinterrupt(self) -> None:
        setter = getattr(self._mm(), "interrupt_current_processing", None)
        if callable(setter):
            setter(True)

    def send_text(self, node_id: str | None, text: str) -> None:
        server = getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)
        if node_id is not None and server is not None and hasattr(server, "send_progress_text"):
            server.send_progress_text(text, node_id)

    def progress_bar(self, node_id: str | None, total: int) -> Any:
        bar = getattr(sys.modules.get("comfy.utils"), "ProgressBar", None)
        return bar(total, node_id=node_id) if bar is not None else None

    def interrupt_error(self) -> BaseException | None:
        cls = getattr(self._mm(), "InterruptProcessingException", None)
        return cls() if isinstance(cls, type) else None

    def is_interrupt(self, exc: BaseException) -> bool:
        cls = getattr(self._mm(), "InterruptProcessingException", None)
        return isinstance(cls, type) and isinstance(exc, cls)


_override: Hooks | None = None


def hooks() -> Hooks:
    return _override if _override is not None else ComfyHooks()


def set_hooks(new: Hooks | None) -> Hooks | None:
    """Replace the hooks (None restores ComfyUI's); returns the previous override."""
    global _override
    previous, _override = _override, new
    return previous


# loop -> (closer task, clients used in that loop); the task is held here because asyncio
# keeps only weak references to tasks.
_closers: dict[asyncio.AbstractEventLoop, tuple[asyncio.Task, set]] = {}


def close_at_loop_end(client: Any) -> None:
    """Close ``client``'s connections for the running loop when that loop is shut down.

    ComfyUI runs every prompt in its own ``asyncio.run()``; httpx connections belong to one
    loop, so without this each prompt would leak its loop, clients and open sockets. A parked
    task is cancelled by ``asyncio.run``'s cleanup and closes them then. (Connections are
    reused within a prompt; a host with one long-lived loop keeps them for good.)
    """
    loop = asyncio.get_running_loop()
    for old in [old for old in _closers if old.is_closed()]:  # a loop closed without cleanup
        _closers.pop(old, None)
    entry = _closers.get(loop)
    if entry is None:
        clients: set = set()
        entry = _closers[loop] = (loop.create_task(_close_when_cancelled(loop, clients), name="gpt-image-nodes closer"), clients)
    entry[1].add(client)


async def _close_when_cancelled(loop: asyncio.AbstractEventLoop, clients: set) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        _closers.pop(loop, None)
        for client in list(clients):
            with contextlib.suppress(Exception):
                await client.aclose()


class NodeProgress:
    """One node run's display: a ProgressEvent callback, a cancel check and the final word.

    Bar steps per request: sent, answer started, each image; plus one for done. Status and
    image events each advance it (retries may add steps: it is capped until done).
    """

    def __init__(self, host: Hooks, node_id: str | None, requests: int = 1, images_per_request: int = 1) -> None:
        self.host, self.node_id = host, node_id
        self.requests = max(1, requests)
        self.total = self.requests * (2 + max(0, images_per_request)) + 1
        self.value = 0
        self._entries: dict[int, list[str]] = {}  # request number -> [status, streamed text]
        self._last_sent = 0.0
        self._interrupted = False
        self.started = time.monotonic()
        self._bar = self._guard(lambda: host.progress_bar(node_id, self.total))
        self._update_bar()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # -- cancel --------------------------------------------------------------------------------
    def cancelled(self) -> bool:
        return self._interrupted or self.host.interrupted()

    # -- events --------------------------------------------------------------------------------
    def __call__(self, event: ProgressEvent) -> None:
        number, text = (event.batch[0] if event.batch else 1), event.text
        entry = self._entries.setdefault(number, ["", ""])
        if event.kind == "text":
            entry[1] = (entry[1] + text)[-(2000 if self.requests == 1 else 120):]
        else:
            entry[0] = text
            self.value = min(self.value + 1, self.total - 1)
            self._update_bar()
        self._send(self._render(), force=event.kind != "text")

    def finish(self, summary: str) -> None:
        self.value = self.total
        self._update_bar()
        self._send(summary, force=True)

    def fail(self, message: str) -> None:
        self._send(message, force=True)

    # -- internals -----------------------------------------------------------------------------
    def _render(self) -> str:
        if self.requests == 1 and len(self._entries) <= 1:
            status, text = self._entries.get(1, ["", ""])
            return f"{status}\n{text.strip()}".strip()
        lines = []
        for number in sorted(self._entries):
            status, text = self._entries[number]
            tail = " ".join(text.split())[-80:]
            lines.append(f"[{number}/{self.requests}] {status}" + (f": {tail}" if tail else ""))
        return "\n".join(lines)

    def _send(self, text: str, force: bool) -> None:
        now = time.monotonic()
        if not text or (not force and now - self._last_sent < TEXT_REFRESH_SECONDS):
            return
        self._last_sent = now
        self._guard(lambda: self.host.send_text(self.node_id, text))

    def _update_bar(self) -> None:
        # ComfyUI's bar hook raises on a pending interrupt *and clears the flag*: skip it then,
        # so the cancel check (and sibling nodes) still see the interrupt.
        if self._bar is None or self.cancelled():
            return
        self._guard(lambda: self._bar.update_absolute(self.value, self.total))

    def _guard(self, call: Any) -> Any:
        """Run a display call; a broken display never fails a paid request."""
        try:
            return call()
        except Exception as exc:  # noqa: BLE001
            if self.host.is_interrupt(exc):  # the flag was consumed: remember it, and put it back
                self._interrupted = True
                self.host.reinterrupt()
            else:
                log.debug("ComfyUI progress display failed: %s", type(exc).__name__)
            return None
