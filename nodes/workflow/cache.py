"""The result cache: a node's outputs keyed by what it was asked, in memory and on disk.

Users pay per image, so an answer once received is kept and never bought again. The key is a
SHA-256 of the node type, its literal inputs (seed included), the resolved backend, base URL
and model (never the API key), and the pixels of its input images (mode, size and raw bytes),
so changing a node, or an image upstream of it, is a miss and everything else is a hit.

On disk each entry is one file ``<dir>/<key[:2]>/<key>.entry``: a header, the outputs (images
as PNG) and a SHA-256 of everything before it. Entries are written atomically; a file that is
truncated, corrupt or for another key is ignored and removed, never served.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

from PIL import Image

from ..codecs import png_bytes
from .files import atomic_write

__all__ = ["ResultCache", "default_cache_dir", "cache_key", "image_digest"]

log = logging.getLogger("gpt_image_nodes.workflow.cache")

_MAGIC = b"GPTIMGNODES-CACHE\x01"
_KEY_VERSION = 1
_DEFAULT: Any = object()


def default_cache_dir() -> Path:
    """Where results are kept by default: ``$GPT_IMAGE_CACHE_DIR`` if set, else ``results`` in
    the user cache folder (Linux ``~/.cache/gpt-image-nodes/results``, macOS
    ``~/Library/Caches/gpt-image-nodes/results``, Windows
    ``%LOCALAPPDATA%\\gpt-image-nodes\\Cache\\results``)."""
    explicit = os.environ.get("GPT_IMAGE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("gpt-image-nodes", appauthor=False)) / "results"


def image_digest(img: Image.Image) -> str:
    """Content hash of an image's pixels (mode, size, raw bytes), not of any file format."""
    h = hashlib.sha256(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, Image.Image):
        return {"image": image_digest(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"can't key a cache entry on a {type(value).__name__}")


def cache_key(class_type: str, inputs: Mapping[str, Any], endpoint: Mapping[str, Any]) -> str:
    """The key of a node run: type, inputs (images by content) and the resolved endpoint."""
    doc = {"v": _KEY_VERSION, "type": class_type, "endpoint": dict(endpoint),
           "inputs": {k: _canonical(v) for k, v in sorted(inputs.items())}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def _size(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        return sum(_size(v) for v in value)
    if isinstance(value, Image.Image):
        return value.width * value.height * len(value.getbands())
    return len(str(value))


def _encode(key: str, outputs: tuple, meta: Mapping[str, Any]) -> bytes:
    parts: list[dict] = []
    blobs: list[bytes] = []
    for value in outputs:
        if isinstance(value, (list, tuple)) and all(isinstance(v, Image.Image) for v in value):
            data = [png_bytes(v) for v in value]
            parts.append({"t": "images", "n": [len(d) for d in data]})
            blobs += data
        elif isinstance(value, (str, int, float, bool)) or value is None:
            parts.append({"t": "value", "v": value})
        else:
            raise TypeError(f"can't cache an output of type {type(value).__name__}")
    header = json.dumps({"key": key, "outputs": parts, "meta": dict(meta)}).encode()
    body = b"".join([_MAGIC, len(header).to_bytes(4, "big"), header, *blobs])
    return body + hashlib.sha256(body).digest()


def _decode(key: str, data: bytes) -> tuple:
    body, digest = data[:-32], data[-32:]
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 36 or hashlib.sha256(body).digest() != digest:
        raise ValueError("bad magic or checksum")
    pos = len(_MAGIC)
    size = int.from_bytes(body[pos:pos + 4], "big")
    header = json.loads(body[pos + 4:pos + 4 + size])
    if header.get("key") != key:
        raise ValueError("entry is for another key")
    pos += 4 + size
    outputs: list[Any] = []
    for part in header["outputs"]:
        if part["t"] == "images":
            images = []
            for n in part["n"]:
                img = Image.open(io.BytesIO(body[pos:pos + n]), formats=["PNG"])
                img.load()
                images.append(img)
                pos += n
            outputs.append(images)
        else:
            outputs.append(part["v"])
    if pos != len(body):
        raise ValueError("trailing bytes")
    return tuple(outputs)


class ResultCache:
    """Outputs by cache key. ``directory=None`` keeps results in memory only; the default is
    :func:`default_cache_dir`. The memory layer keeps the most recently used results up to
    ``max_memory_bytes`` of pixels (the disk layer has no limit). Thread-safe."""

    def __init__(self, directory: "Path | str | None" = _DEFAULT, memory: bool = True, max_memory_bytes: int = 512 * 2**20) -> None:
        self.directory: Path | None = default_cache_dir() if directory is _DEFAULT else (Path(directory) if directory is not None else None)
        self.memory = memory
        self.max_memory_bytes = max_memory_bytes
        self._items: "OrderedDict[str, tuple[tuple, int]]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ResultCache(directory={self.directory!r}, memory={self.memory})"

    def path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / key[:2] / f"{key}.entry"

    def get(self, key: str) -> tuple | None:
        """The outputs stored for ``key``, or None. A damaged disk entry is deleted."""
        if self.memory:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key][0]
        path = self.path(key)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            outputs = _decode(key, data)
        except Exception as exc:  # any damage at all: recompute rather than serve it
            log.warning("ignoring damaged cache entry %s (%s)", path, exc)
            path.unlink(missing_ok=True)
            return None
        self._remember(key, outputs)
        return outputs

    def put(self, key: str, outputs: tuple, meta: Mapping[str, Any] | None = None) -> str | None:
        """Store outputs; returns None, or why the disk copy could not be written (the run
        goes on: the result is in hand, only a later re-run would pay again)."""
        self._remember(key, tuple(outputs))
        path = self.path(key)
        if path is None:
            return None
        try:
            atomic_write(path, _encode(key, tuple(outputs), meta or {}))
        except (OSError, TypeError) as exc:
            log.warning("could not write cache entry %s: %s", path, exc)
            return f"could not save the result to the cache ({exc})"
        return None

    def _remember(self, key: str, outputs: tuple) -> None:
        if not self.memory:
            return
        size = sum(_size(v) for v in outputs)
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            self._items[key] = (outputs, size)
            self._bytes += size
            while self._bytes > self.max_memory_bytes and len(self._items) > 1:
                self._bytes -= self._items.popitem(last=False)[1][1]

    def clear(self, disk: bool = False) -> None:
        """Forget the memory layer (and, with ``disk``, delete every entry on disk)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0
        if disk and self.directory is not None and self.directory.is_dir():
            for entry in self.directory.glob("*/*.entry"):
                entry.unlink(missing_ok=True)
