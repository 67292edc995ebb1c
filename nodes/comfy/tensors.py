"""ComfyUI IMAGE / MASK tensors <-> PIL images (via uint8 numpy).

ComfyUI's IMAGE is a float32 tensor [B, H, W, C] in 0..1 (C = 3, sometimes 4); MASK is [B, H, W]
or [H, W] in 0..1. torch is imported inside the functions only: ComfyUI provides it, and the pack
must import without it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import InvalidInputError

__all__ = ["to_uint8", "image_to_pils", "mask_to_pils", "pils_to_image"]


def _as_numpy(value: Any, name: str) -> np.ndarray:
    """A float32 numpy copy of a torch tensor or array; refuses NaN/inf with the input's name."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().to("cpu")
        if value.dtype.is_floating_point:  # bf16/fp16 have no numpy twin
            value = value.float()
        value = value.numpy()
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInputError(f"Input '{name}' is a {type(value).__name__}, not an image tensor.") from None
    if array.size == 0:
        raise InvalidInputError(f"Input '{name}' is empty (shape {tuple(array.shape)}).")
    # One reduction finds any NaN/inf (the sum is then NaN/inf); only then (or on overflow of
    # huge finite values) is the exact, 4x costlier, element-wise check run.
    if not np.isfinite(array.sum()) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InvalidInputError(
            f"Input '{name}' holds {bad} NaN or infinite value(s), so it is not a valid image. "
            "The node that made it went wrong (e.g. a failed VAE decode); fix that node's output."
        )
    return array


def to_uint8(array: np.ndarray) -> np.ndarray:
    """0..1 floats to uint8 by round(clip(x, 0, 1) * 255) (round half to even, as numpy)."""
    scaled = np.clip(array, 0.0, 1.0)  # the one float temporary, then worked on in place
    scaled *= 255.0
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def image_to_pils(value: Any, name: str = "image") -> list[Image.Image]:
    """An IMAGE tensor [B,H,W,C] (or one [H,W,C]) to B PIL images (RGB, RGBA or L)."""
    array = _as_numpy(value, name)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise InvalidInputError(
            f"Input '{name}' has shape {tuple(array.shape)}; an IMAGE must be [batch, height, width, 3] "
            "(or 1/4 channels). Is a MASK or latent connected to an image input?"
        )
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[-1]]
    # Image by image: the float temporaries stay one image large (a batch of 8 at 1024x1024
    # converted at once makes 100 MB temporaries and runs 5x slower from page faults alone).
    images = []
    for frame in array:
        pixels = to_uint8(frame)
        images.append(Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode))
    return images


def mask_to_pils(value: Any, name: str = "mask") -> list[Image.Image]:
    """A MASK tensor [B,H,W] or [H,W] to B mode-"L" images (1.0 -> 255)."""
    array = _as_numpy(value, name)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 4 and array.shape[-1] == 1:  # [B,H,W,1] from some mask nodes
        array = array[..., 0]
    if array.ndim != 3:
        raise InvalidInputError(
            f"Input '{name}' has shape {tuple(array.shape)}; a MASK must be [batch, height, width] or [height, width]."
        )
    return [Image.fromarray(m, "L") for m in to_uint8(array)]


def _scale_into(pixels: np.ndarray, dest: np.ndarray) -> None:
    # One single-threaded numpy pass per image (convert and divide fused), straight into the
    # tensor's memory. Not torch's .to().div_(): its intra-op threads wait on each other when
    # the cores are busy with anything else (ComfyUI, other jobs) and ran 5-10x slower on a
    # loaded 2-core machine; this pass is memory-bound and needs no second core.
    np.divide(pixels, np.float32(255.0), out=dest, dtype=np.float32)


def pils_to_image(images: Sequence[Image.Image], name: str = "images"):  # noqa: ANN201 - torch.Tensor
    """PIL images of one size to an IMAGE tensor [N,H,W,3], in order."""
    if not images:
        raise InvalidInputError(f"No images to output on '{name}'.")
    size = images[0].size
    if any(img.size != size for img in images):
        sizes = sorted({f"{w}x{h}" for w, h in (img.size for img in images)})
        raise InvalidInputError(f"Output '{name}' got images of different sizes ({', '.join(sizes)}); a batch needs one size.")
    import torch

    # Straight into the float output, image by image: no uint8 batch stacked first.
    out = torch.empty((len(images), size[1], size[0], 3), dtype=torch.float32)
    dest = out.numpy()
    for i, img in enumerate(images):
        # Alpha is dropped, as ComfyUI's LoadImage does (IMAGE is RGB; alpha would be a separate MASK).
        _scale_into(np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8), dest[i])
    return out
