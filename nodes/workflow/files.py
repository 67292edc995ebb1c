"""Files in and out: ComfyUI's LoadImage and SaveImage, and atomic writes.

A file is written to a temporary name in the same folder, flushed to disk and then renamed,
so a reader (or a crash) never sees half a file. Saved images are numbered like ComfyUI's
(``<prefix>_00001_.png``) and never overwrite an existing file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..codecs import MAX_INPUT_BYTES, load_input_image, png_bytes, png_chunk, prepare_input_image

__all__ = ["atomic_write", "resolve_inside", "load_image_file", "save_numbered", "png_with_metadata"]

_counter_lock = threading.Lock()
# ComfyUI's file pickers may append the folder they list, e.g. "cat.png [input]".
_ANNOTATION = re.compile(r"\s*\[(input|output|temp)\]$")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it is either absent or complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_tmp(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_tmp(directory: Path, stem: str, data: bytes) -> Path:
    """``data`` in a hidden temporary file of ``directory``, flushed to disk."""
    tmp = directory / f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def resolve_inside(folder: Path, name: str, what: str) -> Path:
    """``folder/name``, refusing anything that ends up outside ``folder`` (absolute paths
    elsewhere, ``..``, symlinks out). Raises ValueError with a message for the user."""
    name = _ANNOTATION.sub("", str(name)).strip()
    if not name:
        raise ValueError(f"the {what} name is empty")
    if "\x00" in name:
        raise ValueError(f"the {what} name {name!r} holds a NUL character; use a plain file name")
    base = folder.resolve()
    candidate = Path(name)
    target = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if target != base and base not in target.parents:
        raise ValueError(f"the {what} {name!r} is outside the folder {base}; only files inside it can be used (set another folder with --input-dir)")
    return target


def load_image_file(path: Path) -> tuple[list[Image.Image], list[Image.Image]]:
    """ComfyUI LoadImage's outputs for a file: ([RGB image], [mask]); the mask is 255 where
    the image is transparent (all 0 when it has no alpha), at the image's size."""
    size = path.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise ValueError(f"{path.name} is {size / 2**20:.1f} MiB; the limit is {MAX_INPUT_BYTES / 2**20:.0f} MiB")
    # First frame, EXIF rotation, 8-bit; no downscaling (that happens when it is sent).
    img = prepare_input_image(load_input_image(path.read_bytes(), name=f"image {path.name}"), max_side=1 << 30)
    if img.mode == "RGBA":
        alpha = np.asarray(img.getchannel("A"))
        mask = Image.fromarray(255 - alpha, "L")
    else:
        mask = Image.new("L", img.size, 0)
    return [img.convert("RGB")], [mask]


def _text_chunk(key: str, value: str) -> bytes:
    """A tEXt chunk, or an iTXt one (UTF-8) for text Latin-1 can't hold: as Pillow's add_text."""
    name = key.encode("latin-1")
    if not 1 <= len(name) <= 79 or b"\0" in name:
        raise ValueError(f"PNG text keys are 1 to 79 Latin-1 characters, not {key!r}")
    try:
        return png_chunk(b"tEXt", name + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:
        return png_chunk(b"iTXt", name + b"\0\0\0" + b"\0" + b"\0" + value.encode("utf-8"))


def png_with_metadata(img: Image.Image, text: dict[str, Any] | None = None) -> bytes:
    """PNG bytes with tEXt chunks (ComfyUI reads "prompt" and "workflow" to reopen a graph).

    The fast encoder's PNG with the text chunks spliced in right after IHDR, where readers
    find them before the image data."""
    data = png_bytes(img)
    if not text:
        return data
    length = int.from_bytes(data[8:12], "big")
    if data[12:16] != b"IHDR":  # the signature is 8 bytes; IHDR must come first
        raise ValueError("the PNG encoder did not start with IHDR")
    end = 8 + 12 + length  # length, tag, payload, CRC
    extra = [_text_chunk(str(key), value if isinstance(value, str) else json.dumps(value)) for key, value in text.items()]
    return b"".join([data[:end], *extra, data[end:]])


def _publish(tmp: Path, final: Path) -> bool:
    """Move tmp to final unless final exists (hard link: atomic and never overwrites)."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system: check, then rename
        if final.exists():
            return False
        os.replace(tmp, final)
        return True
    tmp.unlink(missing_ok=True)
    return True


def save_numbered(folder: Path, prefix: str, ext: str, payloads: list[bytes]) -> list[Path]:
    """Write each payload as ``<prefix>_NNNNN_.<ext>`` in ``folder`` with the next free numbers."""
    target = resolve_inside(folder, prefix or "ComfyUI", "filename prefix")
    directory, stem = target.parent, target.name
    directory.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"^{re.escape(stem)}_(\d{{5,}})_\.{re.escape(ext)}$")
    saved = []
    with _counter_lock:
        counter = 1 + max((int(m.group(1)) for p in directory.iterdir() if (m := pattern.match(p.name))), default=0)
        for data in payloads:
            tmp = _write_tmp(directory, stem, data)
            try:
                while not _publish(tmp, directory / f"{stem}_{counter:05d}_.{ext}"):
                    counter += 1  # another process took this number
            finally:
                tmp.unlink(missing_ok=True)
            saved.append(directory / f"{stem}_{counter:05d}_.{ext}")
            counter += 1
    return saved
