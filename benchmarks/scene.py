"""A deterministic photo-like test picture (numpy only): what the codec benchmarks encode.

Neither pure noise (incompressible, flatters nothing) nor a flat colour (compresses to nothing):
a landscape with a sky gradient, a soft sun glow, fractal-noise hills and clouds, textured grass
and mild Gaussian sensor noise (sigma 2 levels), so it compresses roughly like a photograph.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache

import numpy as np

NAME = "photo-like procedural landscape"
DESCRIPTION = ("procedural photo-like landscape (sky gradient, sun glow, fractal-noise hills and "
               "clouds, textured grass, Gaussian sensor noise sigma=2)")


def _fractal(rng: np.random.Generator, h: int, w: int, octaves: int = 6, base: int = 4) -> np.ndarray:
    """Sum of bilinearly upsampled random grids (value noise), 0..1."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base * 2 ** o
        grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
        ys = np.linspace(0, cells, h, dtype=np.float32)
        xs = np.linspace(0, cells, w, dtype=np.float32)
        y0 = np.minimum(ys.astype(np.int32), cells - 1)
        x0 = np.minimum(xs.astype(np.int32), cells - 1)
        fy = (ys - y0)[:, None]
        fx = (xs - x0)[None, :]
        fy = fy * fy * (3 - 2 * fy)
        fx = fx * fx * (3 - 2 * fx)
        a = grid[y0][:, x0]
        b = grid[y0][:, x0 + 1]
        c = grid[y0 + 1][:, x0]
        d = grid[y0 + 1][:, x0 + 1]
        out += amp * ((a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy)
        total += amp
        amp *= 0.55
    return out / total


@lru_cache(maxsize=4)
def scene_uint8(height: int = 1024, width: int = 1024, seed: int = 7) -> np.ndarray:
    """uint8 [H, W, 3]; cached (read-only; also on disk for the benchmark's subprocesses)."""
    path = os.path.join(tempfile.gettempdir(), f"gpt-image-nodes-bench-scene-{height}x{width}-{seed}-v1.npy")
    try:
        out = np.load(path)
    except (OSError, ValueError):
        out = _paint(height, width, seed)
        tmp = f"{path}.{os.getpid()}.npy"
        np.save(tmp, out)
        os.replace(tmp, path)
    out.setflags(write=False)
    return out


def _paint(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    sky_top, sky_low = np.array([40, 90, 180], np.float32), np.array([200, 215, 235], np.float32)
    img = sky_top + (sky_low - sky_top) * yy[..., None] ** 0.8 + 0 * xx[..., None]
    # sun glow
    d2 = (xx - 0.72) ** 2 + (yy - 0.22) ** 2
    glow = np.exp(-d2 / 0.004)[..., None] + 0.35 * np.exp(-d2 / 0.05)[..., None]
    img = img + glow * np.array([255, 230, 170], np.float32) * 0.6
    # clouds
    clouds = np.clip(_fractal(rng, height, width, 6, 3) * 1.8 - 0.9, 0, 1)[..., None] * (yy < 0.55)[..., None]
    img = img * (1 - clouds * 0.7) + 245 * clouds * 0.7
    # two ranges of hills
    for level, tone, rough in ((0.50, (70, 95, 120), 0.16), (0.64, (60, 110, 50), 0.12)):
        ridge = level + rough * (_fractal(rng, 1, width, 7, 2)[0] - 0.5)
        mask = (yy >= ridge[None, :]).astype(np.float32)[..., None]
        tex = _fractal(rng, height, width, 7, 8)[..., None]
        shade = np.array(tone, np.float32) * (0.75 + 0.5 * tex) * (1.1 - 0.4 * (yy[..., None] - level))
        img = img * (1 - mask) + shade * mask
    # grass texture in the foreground: fine noise, stronger near the bottom
    grass = rng.normal(0, 1, (height, width)).astype(np.float32)
    grass = (grass + np.roll(grass, 1, 0) + np.roll(grass, 2, 0)) / 3  # vertical blades
    fg = np.clip((yy - 0.7) / 0.3, 0, 1)[..., None]
    img = img + fg * grass[..., None] * np.array([10, 16, 8], np.float32)
    # sensor noise
    img = img + rng.normal(0, 2.0, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def scene_tensor(height: int = 1024, width: int = 1024, batch: int = 1, seed: int = 7):
    """A ComfyUI IMAGE tensor [B, H, W, 3] float32 0..1 holding the scene (exactly u8/255)."""
    import torch

    u8 = scene_uint8(height, width, seed)
    t = torch.from_numpy(np.array(u8)).to(torch.float32).div_(255.0).unsqueeze(0)
    return t.repeat(batch, 1, 1, 1).contiguous() if batch > 1 else t
