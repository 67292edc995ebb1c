"""encode: IMAGE tensor -> JSON request body; decode: JSON answer -> IMAGE tensor.

Baselines are the recipes in ComfyUI's own API nodes (comfy_api_nodes/apinode_utils.py):
``tensor_to_data_uri`` -> ``_tensor_to_pil`` (``(x.numpy() * 255).astype(np.uint8)``, no downscale
at 1024x1024) -> Pillow PNG at its default settings (compress_level 6, adaptive filters) ->
base64 -> data URL, then ``json.dumps`` of the body; and ``bytesio_to_image_tensor`` (Pillow open,
``convert("RGB")``, ``np.array(...).astype(np.float32) / 255.0``, ``torch.from_numpy``) after
``json.loads`` and ``base64.b64decode``.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

import scene
from timing import Result, compare

PROMPT = "Make it a snowy winter evening, keep the composition."
MODEL = "gpt-5.4-image-2"


# -- encode ---------------------------------------------------------------------------------

def ours_encode(tensor, size: str = "1024x1024", stream: bool = True) -> bytes:  # noqa: ANN001 - torch.Tensor
    """What the EditImage node does before sending: tensors -> PIL -> data URL -> body bytes."""
    from gpt_image_nodes.nodes import operations
    from gpt_image_nodes.nodes.comfy import tensors
    from gpt_image_nodes.nodes.protocol import ImageRequest, Mode

    images = tensors.image_to_pils(tensor, "image")
    urls = operations.encode_inputs(images)
    request = ImageRequest.build(Mode.EDIT_IMAGE, PROMPT, urls, size=size, quality="high",
                                 n=1, stream=stream)
    return request.body(MODEL)


def baseline_encode(tensor) -> bytes:  # noqa: ANN001
    """ComfyUI's tensor_to_data_uri recipe, then the body as a user would build it."""
    image = tensor[0] if len(tensor.shape) > 3 else tensor
    image_np = (image.cpu().numpy() * 255).astype(np.uint8)
    img = Image.fromarray(image_np)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data_uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("utf-8")
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": PROMPT}, {"type": "image", "image": data_uri}]}],
        "stream": True, "size": "1024x1024", "quality": "high", "n": 1,
    }
    return json.dumps(body).encode("utf-8")


def _png_from_body(body: bytes) -> bytes:
    doc = json.loads(body)
    url = doc["messages"][0]["content"][1]["image"]
    return base64.b64decode(url.partition(",")[2])


def bench_encode(quick: bool = False) -> Result:
    side = 512 if quick else 1024
    tensor = scene.scene_tensor(side, side)
    expected = scene.scene_uint8(side, side)
    ours_body = ours_encode(tensor)
    base_body = baseline_encode(tensor)
    ours_px = np.asarray(Image.open(io.BytesIO(_png_from_body(ours_body))).convert("RGB"))
    lossless = bool(np.array_equal(ours_px, expected))  # a figure: the smoke test asserts it
    base_px = np.asarray(Image.open(io.BytesIO(_png_from_body(base_body))).convert("RGB"))
    base_off = int(np.count_nonzero(base_px != expected))
    ours_t, base_t, ratio = compare(lambda: ours_encode(tensor), lambda: baseline_encode(tensor),
                                    repeats=3 if quick else 11)
    return Result(ours_t, base_t, ratio, 0.5, note=f"{side}x{side} {scene.NAME}", extra={
        "ours_bytes": len(ours_body), "baseline_bytes": len(base_body),
        "bytes_ratio": len(ours_body) / len(base_body), "bytes_goal": 1.25,
        "lossless": lossless,
        # (x*255).astype(uint8) truncates: values that were exactly k/255 can come back k-1.
        "baseline_wrong_subpixels": base_off,
    })


# -- decode ---------------------------------------------------------------------------------

def answer_png(width: int, height: int, seed: int = 11) -> tuple[bytes, np.ndarray]:
    """A PNG (Pillow default settings, as an image service would plausibly encode it) of the
    benchmark scene, and the pixels it holds."""
    pixels = scene.scene_uint8(height, width, seed)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue(), pixels


def answer_body(b64: str) -> bytes:
    """A seed-shaped (non-streamed) chat.completion answer holding one base64 image."""
    doc = {
        "id": "chatcmpl_img_edit_0123456789abcdef01234567", "object": "chat.completion",
        "created": 1760000000, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": [
            {"type": "image_base64", "image_base64": b64}]}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 98, "completion_tokens": 1560, "total_tokens": 1658},
    }
    return json.dumps(doc).encode("utf-8")


def answer_json(side: int = 1024, seed: int = 11) -> tuple[bytes, np.ndarray]:
    """A seed-shaped chat.completion answer holding one PNG of side x side, and its pixels."""
    png, pixels = answer_png(side, side, seed)
    return answer_body(base64.b64encode(png).decode("ascii")), pixels


def ours_decode(raw: bytes):  # noqa: ANN201 - torch.Tensor
    """What our client + operation + ComfyUI node do with a non-streamed answer body."""
    from gpt_image_nodes.nodes import answers, codecs
    from gpt_image_nodes.nodes.comfy import tensors

    parsed = answers.parse_answer(json.loads(raw))
    images = [codecs.decode_answer_image(ref.data) for ref in parsed.images]
    return tensors.pils_to_image(images, "images")


def baseline_decode(raw: bytes):  # noqa: ANN201
    """json.loads + b64decode + ComfyUI's bytesio_to_image_tensor (mode RGB)."""
    import torch

    doc = json.loads(raw)
    b64 = doc["choices"][0]["message"]["content"][0]["image_base64"]
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image = image.convert("RGB")
    image_array = np.array(image).astype(np.float32) / 255.0
    return torch.from_numpy(image_array).unsqueeze(0)


def comfy_openai_node_decode(raw: bytes):  # noqa: ANN201
    """What ComfyUI's own OpenAI image node does (validate_and_cast_response): RGBA, stack."""
    import torch

    doc = json.loads(raw)
    b64 = doc["choices"][0]["message"]["content"][0]["image_base64"]
    pil_img = Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGBA")
    arr = np.asarray(pil_img).astype(np.float32) / 255.0
    return torch.stack([torch.from_numpy(arr)], dim=0)


def bench_decode(quick: bool = False) -> Result:
    side = 512 if quick else 1024
    raw, pixels = answer_json(side)
    ours_t = ours_decode(raw)
    base_t = baseline_decode(raw)
    assert tuple(ours_t.shape) == (1, side, side, 3) and ours_t.dtype == base_t.dtype
    assert np.array_equal(np.rint(ours_t[0].numpy() * 255).astype(np.uint8), pixels)
    max_diff = float((ours_t - base_t).abs().max())
    o, b, ratio = compare(lambda: ours_decode(raw), lambda: baseline_decode(raw),
                          repeats=3 if quick else 15)
    _, comfy, comfy_ratio = compare(lambda: ours_decode(raw), lambda: comfy_openai_node_decode(raw),
                                    repeats=3 if quick else 9)
    return Result(o, b, ratio, 0.7, note=f"{side}x{side} PNG in a {len(raw) / 1e6:.1f} MB answer",
                  extra={"answer_bytes": len(raw), "max_abs_diff_vs_baseline": max_diff,
                         "comfy_openai_node_recipe_s": comfy, "ratio_vs_comfy_openai_node_recipe": comfy_ratio})
