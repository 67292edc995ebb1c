"""A corpus of bad (and awkward but valid) inputs: each accepted correctly or refused clearly.

Refusals happen before anything is sent (the server sees no request), with a message that names
the problem; nothing crashes, hangs or writes a file.
"""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

from gpt_image_nodes.nodes import codecs, errors
from gpt_image_nodes.nodes.node_types import NODE_TYPES, ClientPool, RunContext
from testkit import png_header_only


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(size=(120, 80), mode="RGB") -> Image.Image:
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    return img if mode == "RGB" else img.convert(mode)


def gif_animated() -> bytes:
    frames = [Image.new("RGB", (30, 30), c) for c in ("red", "green", "blue")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def palette_transparent() -> bytes:
    p = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    return encode(p, "PNG", transparency=0)


_png = encode(photo(), "PNG")
_jpeg = encode(photo(), "JPEG")

# (id, file bytes, expected: "ok" or a substring of the refusal)
FILES = [
    ("zero-bytes", b"", "empty"),
    ("truncated-png", _png[: len(_png) // 2], "truncated|could not be read"),
    # A cut JPEG is refused: half an image the user did not notice is never sent.
    ("truncated-jpeg", _jpeg[: len(_jpeg) // 3], "truncated|damaged|could not be read"),
    ("text-named-png", b"hello, this is a text file\n", "not a supported image"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>', "not a supported image"),
    ("html", b"<!doctype html><html></html>", "not a supported image"),
    ("pdf", b"%PDF-1.4\n%...", "not a supported image"),
    ("tiff", encode(photo(), "TIFF"), "ok"),
    ("bmp", encode(photo(), "BMP"), "ok"),
    ("webp", encode(photo(), "WEBP"), "ok"),
    ("gif-animated", gif_animated(), "ok"),
    ("png-16bit", encode(Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)), "PNG"), "ok"),
    ("jpeg-cmyk", encode(photo(mode="CMYK"), "JPEG"), "ok"),
    ("palette-transparency", palette_transparent(), "ok"),
    ("la-mode", encode(photo(mode="LA"), "PNG"), "ok"),
    ("one-bit", encode(photo(mode="1"), "PNG"), "ok"),
    ("1x1", encode(Image.new("RGB", (1, 1), "red"), "PNG"), "ok"),
    ("1x4000-strip", encode(Image.new("RGB", (1, 4000), "red"), "PNG"), "ok"),
    ("bomb-30000x30000", png_header_only(30000, 30000), "megapixels"),
    ("bomb-100000x1", png_header_only(100000, 700), "megapixels"),
    ("over-byte-cap", b"\x89PNG\r\n\x1a\n" + b"\0" * (codecs.MAX_INPUT_BYTES + 1), "MiB"),
    ("png-bad-crc", _png[:30] + b"\xff\xff" + _png[32:], "damaged|could not be read|truncated"),
]


@pytest.mark.parametrize("case", FILES, ids=[c[0] for c in FILES])
def test_input_files(srv, make_client, case):
    _, data, expected = case
    client = make_client(sync=True)
    start = time.monotonic()
    if expected == "ok":
        img = codecs.load_input_image(data)
        result = client.edit_image(img, "make it grayscale", size="1024x1024")
        assert len(result.images) == 1
        assert srv.stats["requests"] == 1
        assert srv.requests[-1]["image_formats"] == ["png"]
    else:
        with pytest.raises(errors.InvalidInputError, match=expected) as info:
            client.edit_image(codecs.load_input_image(data), "make it grayscale")
        assert "Traceback" not in str(info.value) and len(str(info.value)) < 300
        assert srv.stats["requests"] == 0
    assert time.monotonic() - start < 10


PROMPTS = [
    ("empty", "", "empty"),
    ("whitespace", " \n\t ", "empty"),
    ("100k-chars", "x" * 100_000, "limit"),
    ("nul", "a\x00b", "NUL"),
    ("not-text", 42, "must be text"),
]


@pytest.mark.parametrize("case", PROMPTS, ids=[c[0] for c in PROMPTS])
def test_prompts(srv, make_client, case):
    _, prompt, needle = case
    with pytest.raises(errors.InvalidInputError, match=needle):
        make_client(sync=True).text_to_image(prompt)
    assert srv.stats["requests"] == 0


def test_long_but_allowed_prompt_and_emoji(srv, make_client):
    result = make_client(sync=True).text_to_image("🦊 " * 5000 + "a fox in orange", size="1024x1024")
    assert len(result.images) == 1


@pytest.mark.parametrize("kwargs,needle", [
    (dict(size="4096x4096"), "size"), (dict(size=""), "size"), (dict(quality="best"), "quality"),
    (dict(n=-1), "from 1"), (dict(n=11), "from 1"), (dict(n="three"), "whole number"), (dict(n=True), "whole number"),
])
def test_request_options(srv, make_client, kwargs, needle):
    with pytest.raises(errors.InvalidInputError, match=needle):
        make_client(sync=True).text_to_image("a cat", **kwargs)
    assert srv.stats["requests"] == 0


def _run_node(srv, canary_key, name, **inputs):
    pool = ClientPool(api_key=canary_key)
    ctx = RunContext(client_for=lambda b, u, m: pool("remote", srv.url, m))
    return asyncio.run(NODE_TYPES[name].run(ctx, **inputs))


def test_mask_of_wrong_size_refused_before_sending(srv, canary_key):
    with pytest.raises(errors.InvalidInputError, match="mask is 10x10 but the image is 120x80"):
        _run_node(srv, canary_key, "GPTImage2EditImage", image=[photo()], prompt="invert", mask=[Image.new("L", (10, 10), 255)])
    assert srv.stats["requests"] == 0


def test_mask_batch_mismatch_refused(srv, canary_key):
    masks = [Image.new("L", (120, 80), 255)] * 2
    with pytest.raises(errors.InvalidInputError, match="2 masks for 3 images"):
        _run_node(srv, canary_key, "GPTImage2EditImage", image=[photo()] * 3, prompt="invert", mask=masks)
    assert srv.stats["requests"] == 0


def test_missing_image_input_refused(srv, canary_key):
    with pytest.raises(errors.InvalidInputError, match="image_2"):
        _run_node(srv, canary_key, "GPTImage2MultiMerge", image_1=[photo()], prompt="merge")
    with pytest.raises(errors.InvalidInputError, match="needs an image"):
        _run_node(srv, canary_key, "GPTImage2Describe", image=[], question="what?")
    assert srv.stats["requests"] == 0


def test_bad_option_in_a_batch_sends_nothing(srv, canary_key):
    with pytest.raises(errors.InvalidInputError, match="size"):
        _run_node(srv, canary_key, "GPTImage2EditImage", image=[photo()] * 4, prompt="invert", size="2x2")
    assert srv.stats["requests"] == 0
