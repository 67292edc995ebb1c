"""end_to_end and concurrency: the EditImage ComfyUI node over loopback HTTP.

The offline server runs in its own process (see server_proc.py). It caches its renders per
request key, so after the warm-up its per-request work is reading our body, decoding our PNG and
sending its (cached) answer; ``server_floor`` below is that cost seen through a bare httpx POST
of a ready-made body, the part neither side can remove.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time

import numpy as np
from PIL import Image

import scene
from bench_codecs import MODEL, PROMPT, baseline_encode, ours_encode
from server_proc import BENCH_KEY, shared_server, shared_stub
from timing import Result, close_loop, compare, median

SIZE = "1024x1024"


def _env() -> None:
    """The node reads its key from the environment (never a widget); no config file; the key
    may go to the loopback servers the nodes' base_url names."""
    os.environ["GPT_IMAGE_API_KEY"] = BENCH_KEY
    os.environ["GPT_IMAGE_CONFIG"] = os.devnull + ".absent.json"
    os.environ["GPT_IMAGE_ALLOWED_HOSTS"] = "127.0.0.1"
    for name in ("GPT_IMAGE_BASE_URL", "GPT_IMAGE_MODEL", "GPT_IMAGE_BACKEND"):
        os.environ.pop(name, None)


def node_runner(url: str, size: str = SIZE):  # noqa: ANN201
    """An async function running our EditImage ComfyUI node on a tensor (as ComfyUI calls it)."""
    _env()
    from gpt_image_nodes.nodes.comfy import nodes as comfy_nodes
    from gpt_image_nodes.nodes.node_types import ClientPool

    comfy_nodes.set_client_pool(ClientPool())
    node = comfy_nodes.NODE_CLASS_MAPPINGS["GPTImage2EditImage"]()

    async def run(tensor):  # noqa: ANN001, ANN202
        out = await node.execute(unique_id="1", image=tensor, prompt=PROMPT, size=size,
                                 quality="high", n=1, seed=0, backend="remote", base_url=url,
                                 model="", stream=True)
        return out[0]

    return run


def sdk_runner(url: str, size: str = SIZE):  # noqa: ANN201
    """What a user writes instead: the openai SDK plus ComfyUI's Pillow/numpy recipes."""
    import torch
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key=BENCH_KEY)

    def run(tensor):  # noqa: ANN001, ANN202
        body = json.loads(baseline_encode(tensor))  # the data URL, exactly as bench "encode"
        resp = client.chat.completions.create(model=MODEL, messages=body["messages"],
                                              extra_body={"size": size, "quality": "high"})
        content = resp.choices[0].message.content
        b64 = content[0]["image_base64"] if isinstance(content, list) else content
        image = Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")
        return torch.from_numpy(np.array(image).astype(np.float32) / 255.0).unsqueeze(0)

    return run, client


def bench_end_to_end(quick: bool = False) -> Result:
    import httpx

    side = 512 if quick else 1024
    size = SIZE if not quick else "auto"
    tensor = scene.scene_tensor(side, side)
    with shared_server(latency=0.0) as srv:
        loop = asyncio.new_event_loop()
        try:
            ours = node_runner(srv.url, size)
            base, sdk = sdk_runner(srv.url, size)
            a = loop.run_until_complete(ours(tensor))
            b = base(tensor)
            assert tuple(a.shape) == tuple(b.shape), (a.shape, b.shape)
            o, bl, ratio = compare(lambda: loop.run_until_complete(ours(tensor)), lambda: base(tensor),
                                   repeats=3 if quick else 11)
            # The server's share: a bare POST of a ready body, answer read, nothing decoded.
            body = ours_encode(tensor, size=size, stream=False)
            with httpx.Client() as hc:
                floors = []
                for _ in range(3 if quick else 7):
                    start = time.perf_counter()
                    hc.post(srv.url + "/v1/chat/completions", content=body,
                            headers={"Authorization": f"Bearer {BENCH_KEY}",
                                     "Content-Type": "application/json"}).read()
                    floors.append(time.perf_counter() - start)
            sdk.close()
        finally:
            close_loop(loop)
    return Result(o, bl, ratio, 0.6, note=f"EditImage {side}x{side}, offline server latency 0",
                  extra={"server_floor": median(floors)})


def image_batch(batch: int, width: int, height: int | None = None):  # noqa: ANN201 - torch.Tensor
    """An IMAGE batch [batch, height, width, 3] of different images (shifted copies of the
    scene), so different requests."""
    import torch

    base = scene.scene_uint8(width if height is None else height, width)
    frames = np.stack([np.roll(base, 37 * i, axis=1) for i in range(batch)])
    return torch.from_numpy(frames).to(torch.float32).div_(255.0)


def _batch_vs_one(url: str, tensor, rounds: int, size: str = SIZE):  # noqa: ANN001, ANN202
    one = tensor[:1].clone()
    loop = asyncio.new_event_loop()
    try:
        run = node_runner(url, size)
        loop.run_until_complete(run(tensor))  # warm-up (the offline server paints and caches)
        yield  # the caller sets the latency after the warm-up, then sends None
        singles, batches = [], []
        for i in range(rounds):
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                out = loop.run_until_complete(run(one if which == 0 else tensor))
                (singles if which == 0 else batches).append(time.perf_counter() - start)
                assert out.shape[0] == (1 if which == 0 else tensor.shape[0])
        yield singles, batches
    finally:
        close_loop(loop)


def bench_concurrency(quick: bool = False) -> Result:
    """An IMAGE batch of 8 through EditImage, server 1 s per request: wall / one request.

    Main figure against the stub server (no server CPU, so only our client's work and waiting
    count); the same against the offline server (which decodes all 8 uploads on the same two
    cores) is reported as ``offline_server_ratio``."""
    batch = 8
    latency = 0.3 if quick else 1.0
    side = 512 if quick else 1024
    tensor = image_batch(batch, side)
    rounds = 1 if quick else 3
    with shared_stub(f"{side}x{side}", latency=0.0, events=2, interval=0.05) as stub:
        sent = -stub.configure()["requests"]
        gen = _batch_vs_one(stub.url, tensor, rounds, SIZE if side == 1024 else "auto")
        next(gen)
        stub.configure(latency=latency)
        singles, batches = gen.send(None)
        gen.close()
        sent += stub.configure()["requests"]
    ratios = [b / s for b, s in zip(batches, singles)]
    extra: dict = {"requests_sent": sent}
    if not quick:
        with shared_server(latency=0.0) as srv:
            gen = _batch_vs_one(srv.url, tensor, 1)
            next(gen)
            srv.configure(latency=latency)
            s2, b2 = gen.send(None)
            gen.close()
        extra["offline_server_ratio"] = b2[0] / s2[0]
    return Result(median(batches), median(singles), median(ratios), 1.3,
                  note=f"batch of {batch} at {side}x{side} vs batch of 1, stub server {latency:g} s/request",
                  extra=extra)
