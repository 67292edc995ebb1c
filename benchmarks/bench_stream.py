"""streaming: from the server sending the first progress event to our callback receiving it.

The stub server (stub_server.py, its own process) writes each progress event right after taking
``time.monotonic()`` and puts that time in the event's text; our ``on_progress`` callback takes
``time.monotonic()`` when it is called (CLOCK_MONOTONIC is one clock for every process on Linux).
Ours: the core call the EditImage node makes (operations.edit_image, stream=True). Baseline, for
context: the openai SDK's own stream (``stream=True``), time at which each chunk is yielded.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from PIL import Image

import scene
from bench_codecs import MODEL, PROMPT, baseline_encode
from server_proc import BENCH_KEY, shared_stub
from timing import Result, close_loop, median

_STAMP = re.compile(r"\[t=(\d+\.\d+)\]")


def bench_streaming(quick: bool = False) -> Result:
    from openai import OpenAI

    from gpt_image_nodes.nodes import AsyncImageClient, operations

    side = 512
    rounds = 1 if quick else 7
    image = Image.fromarray(scene.scene_uint8(side, side))
    tensor = scene.scene_tensor(side, side)
    sdk_messages = json.loads(baseline_encode(tensor))["messages"]
    ours_first: list[float] = []
    ours_all: list[float] = []
    sdk_first: list[float] = []
    latency, events = (0.15, 2) if quick else (0.5, 5)
    with shared_stub(f"{side}x{side}", latency=latency, events=events, interval=0.06) as stub:
        client = AsyncImageClient(api_key=BENCH_KEY, base_url=stub.url, backend="remote")
        sdk = OpenAI(base_url=stub.url + "/v1", api_key=BENCH_KEY)
        loop = asyncio.new_event_loop()

        def ours() -> None:
            delays: list[float] = []

            def on_progress(event) -> None:  # noqa: ANN001 - ProgressEvent
                now = time.monotonic()
                if event.kind == "text":
                    match = _STAMP.search(event.text)
                    if match:
                        delays.append(now - float(match.group(1)))

            loop.run_until_complete(operations.edit_image(
                client, image, PROMPT, size="1024x1024", quality="high", stream=True,
                on_progress=on_progress))
            assert delays, "no progress event reached the callback"
            ours_first.append(delays[0])
            ours_all.extend(delays)

        def baseline() -> None:
            stream = sdk.chat.completions.create(model=MODEL, messages=sdk_messages, stream=True,
                                                 extra_body={"size": "1024x1024", "quality": "high"})
            first = None
            for chunk in stream:
                now = time.monotonic()
                delta = chunk.choices[0].delta if chunk.choices else None
                text = getattr(delta, "content", None) if delta is not None else None
                match = _STAMP.search(text) if isinstance(text, str) else None
                if match and first is None:
                    first = now - float(match.group(1))
            assert first is not None
            sdk_first.append(first)

        try:
            ours()
            baseline()  # warm-up: connections, imports
            ours_first.clear(), ours_all.clear(), sdk_first.clear()
            for i in range(rounds):
                for fn in ((ours, baseline) if i % 2 == 0 else (baseline, ours)):
                    fn()
            loop.run_until_complete(client.aclose())
        finally:
            sdk.close()
            close_loop(loop)
    o, b = median(ours_first), median(sdk_first)
    return Result(o, b, o / b if b > 0 else None, 0.020, goal_on="ours<",
                  note="first progress event, server send -> our callback (openai SDK stream as baseline)",
                  extra={"ours_all_events_median": median(ours_all), "ours_max": max(ours_first)})
