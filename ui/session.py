"""Per-browser-session resources: a private folder for uploads and results, a result cache and
the clients its connection settings call for. Everything is dropped when the tab closes.

The result cache: on a local canvas (one person at the keyboard) it is the user's own disk cache,
shared with the CLI and surviving restarts, so nothing is paid for twice. When hosted (SPACE_ID
set) each session gets its own: a shared cache would hand one visitor the image another visitor
paid for whenever their inputs match (and let them probe what others asked for).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..nodes.client import AsyncImageClient
from ..nodes.codecs import load_input_image, png_bytes, prepare_input_image
from ..nodes.config import Settings
from ..nodes.node_types import ClientPool
from ..nodes.workflow.files import atomic_write

__all__ = ["CanvasSession", "SessionStore", "SessionClients", "save_png", "import_upload"]


def save_png(img: Any, folder: Path, prefix: str) -> Path:
    """Write a PIL image as lossless PNG named by its content (same pixels, same file).

    Atomically, through a temporary file of its own: two threads saving the same pixels at
    once never write into one temporary file."""
    data = png_bytes(img)
    path = folder / f"{prefix}-{hashlib.sha256(data).hexdigest()[:16]}.png"
    if not path.exists():
        atomic_write(path, data)
    return path


def import_upload(src: str | Path, folder: Path) -> Path:
    """An uploaded image (any format Pillow reads, size-capped) as a PNG in the input folder.

    Decoded with the core's safe loader and written losslessly; PNG is what ComfyUI's LoadImage
    and the executor read, and the name is content-addressed so the cache sees the same input."""
    img = load_input_image(Path(src).read_bytes(), name="uploaded image")
    return save_png(prepare_input_image(img, max_side=1 << 14), folder, "upload")


class SessionClients:
    """The executor's ``client_pool``: offline steps share the process pool; remote ones use the
    session's own settings (its typed key), never another session's."""

    def __init__(self, shared: ClientPool, settings: Settings) -> None:
        self.shared = shared
        self.settings = settings
        self._remote: AsyncImageClient | None = None

    def __call__(self, backend: str, base_url: str, model: str) -> AsyncImageClient:
        if backend == "offline" or self.settings.offline:
            return self.shared("offline", "", "")
        if self._remote is None:
            self._remote = AsyncImageClient(self.settings)
        return self._remote


@dataclass
class CanvasSession:
    root: Path
    shared: ClientPool = field(default_factory=ClientPool)
    cache: Any = None
    clients: dict[tuple, SessionClients] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def inputs(self) -> Path:
        return self.root / "input"

    @property
    def outputs(self) -> Path:
        return self.root / "output"

    def client_pool(self, settings: Settings) -> SessionClients:
        key = (settings.backend, settings.base_url, settings.model, settings.api_key)
        with self.lock:
            if key not in self.clients:
                self.clients[key] = SessionClients(self.shared, settings)
            return self.clients[key]

    def result_cache(self) -> Any:
        with self.lock:
            if self.cache is None:
                from ..nodes.workflow import ResultCache
                from .connection import hosted

                if hosted():
                    # On disk inside the session folder (deleted with it), not in memory: many
                    # visitors' chains of large images would otherwise all sit in RAM.
                    self.cache = ResultCache(directory=self.root / "cache", memory=False)
                else:
                    self.cache = _local_cache()
            return self.cache


_local_lock = threading.Lock()
_local: dict[Path, Any] = {}


def _local_cache() -> Any:
    """The user's own result cache (the CLI's default folder), one per folder per process."""
    from ..nodes.workflow import ResultCache, default_cache_dir

    folder = Path(default_cache_dir())
    with _local_lock:
        if folder not in _local:
            _local[folder] = ResultCache(directory=folder)
        return _local[folder]


class SessionStore:
    """Session folders under one temp root (inside the system temp dir, which Gradio may serve)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="gpt-image-canvas-"))
        self.root.mkdir(parents=True, exist_ok=True)
        # Whatever happens to the server, its session folders go with the process.
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.root), True)
        self.shared_clients = ClientPool()
        self._sessions: dict[str, CanvasSession] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str | None) -> CanvasSession:
        sid = hashlib.sha256((session_id or "anonymous").encode()).hexdigest()[:20]
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                session = self._sessions[sid] = CanvasSession(self.root / sid, self.shared_clients)
                session.inputs.mkdir(parents=True, exist_ok=True)
                session.outputs.mkdir(parents=True, exist_ok=True)
            return session

    def close(self, session_id: str | None) -> None:
        sid = hashlib.sha256((session_id or "anonymous").encode()).hexdigest()[:20]
        with self._lock:
            session = self._sessions.pop(sid, None)
        if session is not None:
            shutil.rmtree(session.root, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._sessions)

    def close_all(self) -> None:
        with self._lock:
            self._sessions.clear()
        shutil.rmtree(self.root, ignore_errors=True)

