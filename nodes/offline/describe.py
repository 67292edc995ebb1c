"""The offline Describe answer: measure the pixels and say what was measured.

Colours are named by classifying every pixel of a small thumbnail in HSV space (hue bands,
plus black/white/gray for unsaturated pixels and brown for dark oranges), so a red image is
called "red" and a photo of a beach "blue and yellow". Nothing here guesses content.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["COLOUR_FAMILIES", "measure", "describe_image"]

COLOUR_FAMILIES = (
    "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown",
    "black", "white", "gray",
)
# Hue band upper bounds in degrees, in order; the last band wraps back to red.
_HUE_BANDS = ((15, "red"), (42, "orange"), (70, "yellow"), (160, "green"), (200, "cyan"),
              (255, "blue"), (290, "purple"), (340, "pink"), (361, "red"))


def _classify(hsv: np.ndarray) -> np.ndarray:
    """Per-pixel index into COLOUR_FAMILIES for an (N, 3) uint8 HSV array."""
    hue = hsv[:, 0].astype(np.float32) * (360.0 / 256.0)
    sat = hsv[:, 1].astype(np.float32) / 255.0
    val = hsv[:, 2].astype(np.float32) / 255.0
    names = np.empty(len(hsv), dtype=np.int16)
    lower = 0.0
    for upper, name in _HUE_BANDS:
        names[(hue >= lower) & (hue < upper)] = COLOUR_FAMILIES.index(name)
        lower = upper
    redish = (hue < 15) | (hue >= 340)
    names[redish & (sat < 0.45) & (val > 0.7)] = COLOUR_FAMILIES.index("pink")
    names[(hue >= 15) & (hue < 50) & (val < 0.65)] = COLOUR_FAMILIES.index("brown")
    grey = sat < 0.18
    names[grey] = COLOUR_FAMILIES.index("gray")
    names[grey & (val > 0.85)] = COLOUR_FAMILIES.index("white")
    names[val < 0.18] = COLOUR_FAMILIES.index("black")
    return names


def measure(image: Image.Image) -> dict:
    """Size, colour shares (largest first), mean luminance %, contrast (std of 0..255 luma),
    and the luminance of the top/bottom and left/right halves."""
    w, h = image.size
    small = image.convert("RGB")
    small.thumbnail((128, 128), Image.Resampling.BILINEAR)
    hsv = np.asarray(small.convert("HSV"), dtype=np.uint8).reshape(-1, 3)
    counts = np.bincount(_classify(hsv), minlength=len(COLOUR_FAMILIES))
    shares = sorted(
        ((COLOUR_FAMILIES[i], float(c) / counts.sum()) for i, c in enumerate(counts) if c),
        key=lambda item: -item[1],
    )
    luma = np.asarray(small.convert("L"), dtype=np.float32)
    half_h, half_w = luma.shape[0] // 2, luma.shape[1] // 2
    return {
        "width": w,
        "height": h,
        "colours": shares,
        "luminance": float(luma.mean()) / 255.0 * 100.0,
        "contrast": float(luma.std()),
        "top": float(luma[:half_h].mean()) if half_h else float(luma.mean()),
        "bottom": float(luma[half_h:].mean()),
        "left": float(luma[:, :half_w].mean()) if half_w else float(luma.mean()),
        "right": float(luma[:, half_w:].mean()),
    }


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe_image(image: Image.Image, question: str = "") -> str:
    """One or three sentences about what the pixels measure (the question is not interpreted)."""
    m = measure(image)
    main = [name for name, share in m["colours"] if share >= 0.12][:3] or [m["colours"][0][0]]
    if m["colours"][0][1] >= 0.25:
        colours = f"dominated by {_join(main)}"
    else:
        colours = f"with a mix of colours, mostly {_join(main)}"
    lum = m["luminance"]
    bright = ("very dark" if lum < 20 else "fairly dark" if lum < 40 else
              "of medium brightness" if lum < 55 else
              "fairly bright" if lum < 72 else "very bright")
    std = m["contrast"]
    contrast = "low" if std < 25 else "moderate" if std < 55 else "strong"
    sentences = [
        f"A {m['width']}×{m['height']} image {colours}, {bright} "
        f"(mean luminance {lum:.0f}%) with {contrast} contrast."
    ]
    if std < 4:
        sentences.append("It is almost a flat colour.")
    else:
        for a, b in (("top", "bottom"), ("left", "right")):
            if abs(m[a] - m[b]) > 25:
                lighter, darker = (a, b) if m[a] > m[b] else (b, a)
                sentences.append(f"The {lighter} is brighter than the {darker}.")
    shares = ", ".join(f"{name} {share * 100:.0f}%" for name, share in m["colours"][:4])
    sentences.append(f"Colour shares: {shares}. (Offline answer measured from the pixels.)")
    return " ".join(sentences)
