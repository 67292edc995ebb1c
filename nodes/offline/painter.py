"""Procedural images for the offline server: deterministic, fast, and obviously not a real model.

Every function here is pure (no I/O, no global state besides font caches). Randomness comes from
``numpy.random.default_rng`` seeded with a sha256 of the inputs, never Python's ``hash()``, so
the same request gives the same pixels in every process.

Edit operations live in :mod:`.edits` and the pixel analysis in :mod:`.describe`; both are
re-exported here so callers only need ``painter``.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

__all__ = [
    "COLOUR_NAMES",
    "named_colours",
    "parse_size",
    "seed_for",
    "paint_text_to_image",
    "merge_images",
    "apply_edit",
    "describe_image",
    "encode_image",
    "font",
    "draw_label",
]

RGB = tuple[int, int, int]

# (patterns, colour). English names need word boundaries ("reddish" is fine, "bored" is not);
# Chinese names are single characters or short words matched as substrings.
COLOUR_NAMES: tuple[tuple[str, tuple[str, ...], RGB], ...] = (
    ("red", (r"\bred(?:dish)?\b", r"\bcrimson\b", r"\bscarlet\b", "红"), (220, 40, 40)),
    ("orange", (r"\borange\b", "橙", "橘"), (245, 140, 30)),
    ("yellow", (r"\byellow\b", "黄"), (245, 215, 50)),
    ("green", (r"\bgreen\b", "绿"), (50, 170, 70)),
    ("cyan", (r"\bcyan\b", r"\bteal\b", r"\bturquoise\b", "青"), (40, 190, 200)),
    ("blue", (r"\bblue\b", r"\bnavy\b", "蓝"), (40, 90, 210)),
    ("purple", (r"\bpurple\b", r"\bviolet\b", "紫"), (140, 60, 190)),
    ("pink", (r"\bpink\b", r"\bmagenta\b", "粉"), (240, 130, 180)),
    ("brown", (r"\bbrown\b", "棕", "褐", "咖啡色"), (130, 80, 40)),
    ("gold", (r"\bgold(?:en)?\b", "金"), (212, 175, 55)),
    ("silver", (r"\bsilver\b", "银"), (192, 192, 200)),
    ("gray", (r"\bgr[ae]y\b", "灰"), (128, 128, 128)),
    ("black", (r"\bblack\b", "黑"), (20, 20, 24)),
    ("white", (r"\bwhite\b", "白"), (245, 245, 245)),
)
_COLOUR_RES = [(name, re.compile("|".join(p), re.IGNORECASE), rgb) for name, p, rgb in COLOUR_NAMES]

# Small themes make the preview relate to the prompt a little (the seed's example is a cat
# sitting on the moon); each is a regex over the prompt.
_THEMES = {
    "night": re.compile(r"\b(night|space|stars?|galaxy|cosmic)\b|夜|星|太空|宇宙", re.I),
    "moon": re.compile(r"\bmoon\b|月", re.I),
    "sun": re.compile(r"\b(sun|sunset|sunrise|dawn)\b|太阳|日落|日出", re.I),
    "sea": re.compile(r"\b(sea|ocean|lake|beach|water)\b|海|湖|水", re.I),
    "mountain": re.compile(r"\b(mountains?|hills?)\b|山", re.I),
    "cat": re.compile(r"\b(cats?|kitten)\b|猫", re.I),
}

_DETAIL = {"low": 5, "medium": 10, "high": 18}
_LABEL = "offline preview"
# Cached FreeType fonts are shared between the server's threads; FreeType faces are not
# thread-safe, so text is measured and drawn under this lock.
_TEXT_LOCK = threading.Lock()


def seed_for(*parts: object) -> int:
    """A 64-bit seed from a sha256 over length-prefixed parts (bytes used as-is, else str())."""
    digest = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, (bytes, bytearray, memoryview)) else str(part).encode()
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return int.from_bytes(digest.digest()[:8], "big")


def parse_size(size: str | None, default: tuple[int, int] = (1024, 1024)) -> tuple[int, int]:
    """``"WxH"`` -> (w, h); ``None``/``"auto"`` -> ``default``. Sides are clamped to 16..4096."""
    if size is None or str(size).strip().lower() in ("", "auto"):
        return default
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(size))
    if not match:
        raise ValueError(f"size {size!r} is not WIDTHxHEIGHT")
    w, h = (min(4096, max(16, int(v))) for v in match.groups())
    return w, h


def named_colours(prompt: str) -> list[RGB]:
    """Colours named in the prompt (English or Chinese), in order of first mention."""
    found: list[tuple[int, RGB]] = []
    for _name, regex, rgb in _COLOUR_RES:
        match = regex.search(prompt or "")
        if match:
            found.append((match.start(), rgb))
    return [rgb for _, rgb in sorted(found, key=lambda item: item[0])]


def _hsv_colour(rng: np.random.Generator) -> RGB:
    hue = float(rng.random())
    sat = 0.45 + 0.45 * float(rng.random())
    val = 0.55 + 0.4 * float(rng.random())
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    r, g, b = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _shade(rgb: RGB, factor: float) -> RGB:
    """factor < 1 darkens, > 1 lightens towards white."""
    if factor <= 1:
        return tuple(int(c * factor) for c in rgb)  # type: ignore[return-value]
    mix = min(1.0, factor - 1)
    return tuple(int(c + (255 - c) * mix) for c in rgb)  # type: ignore[return-value]


def _gradient(w: int, h: int, top: RGB, bottom: RGB) -> Image.Image:
    # One column computed in numpy, then widened with a zero-copy broadcast: ~2 ms at 1024².
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    column = (np.array(top, np.float32) * (1 - t) + np.array(bottom, np.float32) * t)
    column = column.astype(np.uint8)[:, None, :]
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(column, (h, w, 3))), "RGB")


@lru_cache(maxsize=16)
def _font_cached(size: int, cjk: bool) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    if cjk:
        for path in (
            "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
            "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
            "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
            "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
            "/System/Library/Fonts/PingFang.ttc",
            "C:/Windows/Fonts/msyh.ttc",
        ):
            try:
                return ImageFont.truetype(path, size)
            except OSError:
                continue
        raise OSError("no CJK font")
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: scalable built-in font
    except TypeError:  # pragma: no cover - Pillow 10.0
        return ImageFont.load_default()


def font(size: int, text: str = "") -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, str]:
    """A font for ``text`` and the text it can draw (non-ASCII becomes '?' without a CJK font)."""
    if text.isascii():
        return _font_cached(size, False), text
    try:
        return _font_cached(size, True), text
    except OSError:
        return _font_cached(size, False), "".join(c if c.isascii() else "?" for c in text)


def draw_label(img: Image.Image, text: str, *, band: bool = False) -> None:
    """A small label in the bottom-left corner, or a full-width caption band if ``band``."""
    w, h = img.size
    size = max(10, min(w, h) // (40 if band else 64))
    fnt, text = font(size, text)
    draw = ImageDraw.Draw(img, "RGBA")
    with _TEXT_LOCK:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=fnt)
        pad = max(3, size // 3)
        box_h = bottom - top + 2 * pad
        if band:
            draw.rectangle((0, h - box_h - pad, w, h), fill=(0, 0, 0, 150))
            draw.text((pad * 2, h - box_h - top), text, font=fnt, fill=(255, 255, 255, 255))
        else:
            x0, y0 = pad, h - box_h - pad
            draw.rectangle((x0, y0, x0 + right - left + 2 * pad, y0 + box_h), fill=(0, 0, 0, 110))
            draw.text((x0 + pad - left, y0 + pad - top), text, font=fnt,
                      fill=(255, 255, 255, 220))


def _palette(prompt: str, rng: np.random.Generator) -> list[RGB]:
    named = named_colours(prompt)
    extra = [_hsv_colour(rng) for _ in range(4)]
    return (named + extra) if named else extra


def _clouds(img: Image.Image, rng: np.random.Generator, colour: RGB, strength: int) -> Image.Image:
    # Low-frequency texture: a tiny random field upscaled smoothly, used as a blend mask.
    field = (rng.random((5, 7)) * strength).astype(np.uint8)
    mask = Image.fromarray(field, "L").resize(img.size, Image.Resampling.BICUBIC)
    return Image.composite(Image.new("RGB", img.size, colour), img, mask)


def _cat(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: tuple) -> None:
    """A simple sitting-cat silhouette (body, head, ears, tail), centred at the body."""
    draw.ellipse((cx - r, cy - r * 0.8, cx + r, cy + r * 0.9), fill=fill)
    hr = r * 0.55
    hx, hy = cx, cy - r * 1.15
    draw.ellipse((hx - hr, hy - hr, hx + hr, hy + hr), fill=fill)
    for side in (-1, 1):
        draw.polygon(
            [(hx + side * hr * 0.9, hy - hr * 0.2), (hx + side * hr * 0.75, hy - hr * 1.5),
             (hx + side * hr * 0.2, hy - hr * 0.8)],
            fill=fill,
        )
        ex = hx + side * hr * 0.4  # an eye
        draw.ellipse((ex - r * 0.07, hy - r * 0.12, ex + r * 0.07, hy + r * 0.02),
                     fill=(30, 30, 30, 255))
    tail = [(cx + r * 0.9, cy + r * 0.6), (cx + r * 1.5, cy + r * 0.2),
            (cx + r * 1.4, cy - r * 0.5)]
    draw.line(tail, fill=fill, width=max(3, int(r * 0.18)), joint="curve")


def paint_text_to_image(prompt: str, size: str | None = "1024x1024", quality: str | None = "auto",
                        index: int = 0) -> Image.Image:
    """A composition seeded by the prompt, in the colours it names. ``auto`` size = 1024x1024."""
    w, h = parse_size(size)
    rng = np.random.default_rng(seed_for("text_to_image", prompt, size, quality, index))
    palette = _palette(prompt, rng)
    themes = {name for name, regex in _THEMES.items() if regex.search(prompt or "")}
    detail = _DETAIL.get(str(quality).lower(), _DETAIL["medium"])
    base = palette[0]
    second = palette[1] if len(named_colours(prompt)) > 1 else _shade(base, 0.55)
    if "night" in themes:
        img = _gradient(w, h, (8, 10, 30), _shade(base, 0.45))
    else:
        img = _gradient(w, h, _shade(base, 1.25), second)
    img = _clouds(img, rng, _shade(base, 1.5), 70)
    draw = ImageDraw.Draw(img, "RGBA")
    unit = min(w, h)

    if "night" in themes:
        xs, ys = rng.integers(0, w, 60 + 4 * detail), rng.integers(0, int(h * 0.6), 60 + 4 * detail)
        for x, y in zip(xs.tolist(), ys.tolist()):
            s = 1 + int(rng.integers(0, 3))
            draw.ellipse((x - s, y - s, x + s, y + s), fill=(255, 255, 240, 220))
    horizon = int(h * (0.55 + 0.2 * rng.random()))
    if themes & {"sea", "mountain", "moon"} or rng.random() < 0.5:
        if "mountain" in themes:
            for k in range(3 + detail // 4):
                peak_x = rng.random() * w
                peak_h = horizon - (0.15 + 0.3 * rng.random()) * h
                half = (0.15 + 0.2 * rng.random()) * w
                draw.polygon([(peak_x - half, horizon), (peak_x, peak_h), (peak_x + half, horizon)],
                             fill=_shade(palette[k % len(palette)], 0.6) + (230,))
        ground = (200, 200, 195) if "moon" in themes else _shade(palette[-1], 0.7)
        if "sea" in themes:
            ground = _shade(palette[0], 0.5)
        draw.rectangle((0, horizon, w, h), fill=ground + (235,))
        for k in range(detail // 2):  # bands / ripples / craters on the ground
            y = horizon + (h - horizon) * (k + 1) / (detail // 2 + 1)
            draw.line([(0, y), (w, y + rng.normal(0, 8))], fill=_shade(ground, 1.2) + (120,),
                      width=max(1, unit // 200))
    if "sun" in themes:
        cx, cy, r = w * 0.3, horizon - unit * 0.12, unit * 0.12
        for glow in (2.2, 1.6, 1.0):
            draw.ellipse((cx - r * glow, cy - r * glow, cx + r * glow, cy + r * glow),
                         fill=(255, 200, 60, 255 if glow == 1.0 else 50))
    if "moon" in themes:
        cx, cy, r = w * 0.75, h * 0.2, unit * 0.1
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(245, 240, 215, 255))

    for k in range(detail):
        colour = palette[int(rng.integers(0, min(len(palette), 3)))] if k % 3 else palette[0]
        alpha = int(90 + 120 * rng.random())
        cx, cy = rng.random() * w, rng.random() * h
        r = unit * (0.03 + 0.12 * rng.random())
        kind = k % 4
        if kind == 0:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour + (alpha,))
        elif kind == 1:
            draw.rounded_rectangle((cx - r * 1.6, cy - r * 0.5, cx + r * 1.6, cy + r * 0.5),
                                   radius=int(r * 0.4), fill=colour + (alpha,))
        elif kind == 2:
            pts = [(cx + r * math.cos(a), cy + r * math.sin(a))
                   for a in (rng.random() * 6.283 + np.arange(3) * 2.094)]
            draw.polygon(pts, fill=colour + (alpha,))
        else:
            draw.arc((cx - r * 2, cy - r * 2, cx + r * 2, cy + r * 2), 0, 300,
                     fill=_shade(colour, 1.3) + (alpha,), width=max(2, unit // 120))
    if "cat" in themes:
        _cat(draw, w * (0.4 + 0.2 * rng.random()), horizon - unit * 0.08, unit * 0.13,
             palette[0] + (255,))
    draw_label(img, _LABEL)
    return img


def _fit(img: Image.Image, box: tuple[int, int]) -> np.ndarray:
    fitted = ImageOps.fit(img, box, Image.Resampling.BILINEAR)
    return np.asarray(fitted, dtype=np.float32)


def _ramp(length: int, lo_edge: int, hi_edge: int, fade: int) -> np.ndarray:
    """Weights over one axis of a cell: 1 inside, linear fades ``fade`` px wide at inner edges."""
    ramp = np.ones(length, np.float32)
    if fade > 0:
        if lo_edge:
            ramp[:fade] = np.linspace(0.02, 1.0, fade, dtype=np.float32)[: min(fade, length)]
        if hi_edge:
            ramp[-fade:] = np.linspace(1.0, 0.02, fade, dtype=np.float32)[-min(fade, length):]
    return ramp


def merge_images(images: list[Image.Image], prompt: str, size: str | None = "1024x1024",
                 index: int = 0) -> Image.Image:
    """Inputs in order as columns (index 0, 2, ...), rows (1, 3, ...) or a grid (4+ inputs),
    seams cross-faded; then the prompt's keyword edits. ``auto`` size = 1024x1024."""
    from .edits import apply_ops  # local import: edits imports this module

    if not images:
        raise ValueError("merge_images needs at least one image")
    w, h = parse_size(size)
    k = len(images)
    if k >= 4:
        cols = math.ceil(math.sqrt(k))
        rows = math.ceil(k / cols)
    elif index % 2:
        cols, rows = 1, k
    else:
        cols, rows = k, 1
    fade = max(8, min(w, h) // 24) * (1 + index % 3)
    num = np.zeros((h, w, 3), np.float32)
    den = np.zeros((h, w, 1), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        row_cols = min(cols, k - r * cols)  # a short last row spreads over the full width
        x0, x1 = c * w // row_cols, (c + 1) * w // row_cols
        y0, y1 = r * h // rows, (r + 1) * h // rows
        # Each cell is widened by half a fade on its inner edges so neighbours overlap.
        ex0, ex1 = max(0, x0 - fade // 2), min(w, x1 + fade // 2)
        ey0, ey1 = max(0, y0 - fade // 2), min(h, y1 + fade // 2)
        pixels = _fit(image.convert("RGB"), (ex1 - ex0, ey1 - ey0))
        wx = _ramp(ex1 - ex0, ex0 > 0, ex1 < w, fade)
        wy = _ramp(ey1 - ey0, ey0 > 0, ey1 < h, fade)
        weight = (wy[:, None] * wx[None, :])[:, :, None]
        num[ey0:ey1, ex0:ex1] += pixels * weight
        den[ey0:ey1, ex0:ex1] += weight
    mixed = np.clip(num / np.maximum(den, 1e-6) + 0.5, 0, 255).astype(np.uint8)
    out = Image.fromarray(mixed, "RGB")
    out, _ops = apply_ops(out, prompt, index)
    return out


def encode_image(img: Image.Image, fmt: str = "png") -> bytes:
    """PNG (compress_level=1: speed over size), JPEG or WEBP bytes."""
    import io

    buf = io.BytesIO()
    fmt = fmt.lower()
    if fmt == "png":
        img.save(buf, "PNG", compress_level=1)
    elif fmt in ("jpeg", "jpg"):
        img.convert("RGB").save(buf, "JPEG", quality=90)
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=80, method=0)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


def __getattr__(name: str):
    # Lazy re-exports (PEP 562): .edits and .describe import helpers from this module, so an
    # eager import here would be circular whichever module is imported first.
    if name == "apply_edit":
        from .edits import apply_edit

        return apply_edit
    if name == "describe_image":
        from .describe import describe_image

        return describe_image
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
