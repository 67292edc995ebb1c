"""Input images of every mode Pillow reads become lossless data URLs; answers decode strictly."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from gpt_image_nodes.nodes import codecs
from gpt_image_nodes.nodes.errors import InvalidInputError, MalformedAnswerError
from testkit import png_header_only


def file_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def roundtrip(data: bytes) -> Image.Image:
    img = codecs.prepare_input_image(codecs.load_input_image(data))
    url = codecs.encode_data_url(img)
    assert url.startswith(b"data:image/png;base64,")
    back = Image.open(io.BytesIO(base64.b64decode(url.split(b",", 1)[1])))
    back.load()
    assert back.format == "PNG"
    return back


def gradient(mode: str = "RGB", size=(64, 48)) -> Image.Image:
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w)[None, :]
    arr[..., 1] = np.linspace(0, 255, h)[:, None]
    arr[..., 2] = 90
    return Image.fromarray(arr, "RGB").convert(mode) if mode != "RGB" else Image.fromarray(arr, "RGB")


def test_rgb_png_is_lossless():
    src = gradient()
    back = roundtrip(file_bytes(src, "PNG"))
    assert np.array_equal(np.asarray(back), np.asarray(src))


def test_fast_png_matches_pixels_for_rgba_and_l():
    rng = np.random.default_rng(1)
    for shape, mode in (((33, 17, 4), "RGBA"), ((33, 17), "L"), ((5, 9, 3), "RGB")):
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        img = Image.open(io.BytesIO(codecs._fast_png(arr)))
        assert img.mode == mode and np.array_equal(np.asarray(img), arr)


def test_rgba_keeps_alpha_and_opaque_rgba_drops_it():
    img = gradient("RGBA")
    a = np.asarray(img).copy()
    a[:10, :10, 3] = 0
    back = roundtrip(file_bytes(Image.fromarray(a, "RGBA"), "PNG"))
    assert back.mode == "RGBA" and np.asarray(back)[0, 0, 3] == 0
    assert roundtrip(file_bytes(gradient("RGBA"), "PNG")).mode == "RGB"


def test_palette_with_transparency():
    p = gradient().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    p.info["transparency"] = 0
    assert roundtrip(file_bytes(p, "PNG", transparency=0)).mode == "RGBA"


def test_16bit_grayscale_keeps_tonal_range():
    arr = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    img = Image.fromarray(arr)
    back = roundtrip(file_bytes(img, "PNG"))
    out = np.asarray(back)
    assert out.min() == 0 and out.max() == 255


def test_cmyk_jpeg_becomes_rgb():
    back = roundtrip(file_bytes(gradient().convert("CMYK"), "JPEG", quality=95))
    assert back.mode == "RGB"


def test_exif_rotation_is_applied():
    img = gradient(size=(60, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    back = roundtrip(file_bytes(img, "JPEG", exif=exif))
    assert back.size == (20, 60)


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "blue")]
    data = file_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    back = roundtrip(data)
    r, g, b = back.convert("RGB").getpixel((5, 5))
    assert r > 200 and b < 50


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF", "JPEG"])
def test_other_formats_are_read(fmt):
    assert roundtrip(file_bytes(gradient(), fmt)).size == (64, 48)


def test_large_input_is_scaled_to_cap():
    big = Image.new("RGB", (4096, 1024), "green")
    out = codecs.prepare_input_image(big)
    assert out.size == (codecs.MAX_INPUT_SIDE, 512)


@pytest.mark.parametrize("data,needle", [
    (b"", "empty"),
    (b"hello, I am text", "not a supported image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "could not be read"),
])
def test_bad_inputs_are_refused_clearly(data, needle):
    with pytest.raises(InvalidInputError, match=needle):
        codecs.load_input_image(data)


def test_truncated_png_is_refused():
    data = file_bytes(gradient(size=(300, 300)), "PNG")
    with pytest.raises(InvalidInputError, match="damaged or truncated|could not be read"):
        codecs.load_input_image(data[: len(data) // 2])


def test_decompression_bomb_refused_before_decoding():
    # A 30000x30000 PNG header: refused from the header alone.
    with pytest.raises(InvalidInputError, match="megapixels"):
        codecs.load_input_image(png_header_only(30000, 30000))


def test_byte_cap():
    with pytest.raises(InvalidInputError, match="MiB"):
        codecs.load_input_image(b"\x89PNG" + b"\x00" * (codecs.MAX_INPUT_BYTES + 1))


def test_answer_decode_sniffs_real_format():
    jpeg = file_bytes(gradient(), "JPEG")
    img = codecs.decode_answer_image(jpeg)
    assert img.size == (64, 48) and img.mode == "RGB"
    with pytest.raises(MalformedAnswerError):
        codecs.decode_answer_image(file_bytes(gradient(), "BMP"))  # not a format the API sends


def test_strict_base64():
    raw = b"\x89PNG\r\n\x1a\nhello"
    enc = base64.b64encode(raw).decode()
    assert codecs.decode_base64(enc) == raw
    assert codecs.decode_base64(enc.rstrip("=")) == raw  # unpadded
    assert codecs.decode_base64(enc[:10] + "\n " + enc[10:]) == raw  # whitespace
    assert codecs.decode_base64(base64.urlsafe_b64encode(b"\xfb\xff" * 10).decode()) == b"\xfb\xff" * 10
    with pytest.raises(MalformedAnswerError) as err:
        codecs.decode_base64("!!!notbase64***")
    assert "notbase64" not in str(err.value)
