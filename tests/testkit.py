"""Helpers several test files share (a plain module, not a conftest: imported as
``from testkit import ...`` through pytest's ``pythonpath = ["tests"]``)."""

from __future__ import annotations

import socket
import struct
import zlib


def png_header_only(w: int, h: int) -> bytes:
    """A tiny PNG file that declares w x h RGB pixels (a decompression bomb's signature if
    anyone decodes it): a valid IHDR, then a few bytes of pixel data."""
    chunk = lambda t, p: struct.pack(">I", len(p)) + t + p + struct.pack(">I", zlib.crc32(t + p))  # noqa: E731
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def free_port() -> int:
    """A loopback port nothing listens on right now (for a server about to start there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_port() -> int:
    """A loopback port that was just bound and closed: nothing listens there, so connecting
    is refused."""
    return free_port()


def three_step_chain(draw: str = "a kite over a beach", edit: str = "make it stormy") -> list[dict]:
    """A fresh canvas chain: TextToImage -> EditImage -> Describe, each fed by the one before."""
    from gpt_image_nodes.ui import chain as C

    chain = C.add_step(C.add_step(C.add_step([], "TextToImage"), "EditImage"), "Describe")
    chain[0]["prompt"], chain[1]["prompt"] = draw, edit
    return chain
