"""Load: many concurrent requests through one client; no failures, bounded memory, no fd leak."""

from __future__ import annotations

import asyncio
import gc
import os
import time

import pytest
from PIL import Image

from gpt_image_nodes.nodes import describe, text_to_image


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def release_memory() -> None:
    gc.collect()
    try:  # give freed arenas back to the OS, so RSS reflects what is still held
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@pytest.mark.slow
def test_200_concurrent_requests_one_client(srv, make_client):
    client = make_client(max_concurrency=64)
    srv.latency = 0.2

    async def round_of_200():
        results = await asyncio.gather(*[text_to_image(client, "load test: a blue square", size="1024x1024") for _ in range(200)])
        assert len(results) == 200 and all(len(r.images) == 1 for r in results)
        return len(results)

    async def main():
        figures = []
        try:
            for _ in range(2):
                start = time.monotonic()
                await round_of_200()
                elapsed = time.monotonic() - start
                release_memory()
                figures.append((elapsed, rss_mb()))
        finally:
            await client.aclose()
        return figures

    release_memory()
    before = rss_mb()
    figures = asyncio.run(main())
    # (stats["ok"] may also count late answers to earlier tests' cancelled requests)
    assert srv.stats["requests"] == 400
    print(f"RSS before {before:.0f} MiB; after each round of 200: " + ", ".join(f"{t:.2f} s / {m:.0f} MiB" for t, m in figures))
    # Bounded: later rounds do not keep what earlier rounds allocated.
    assert figures[1][1] - figures[0][1] < 60


@pytest.mark.slow
def test_no_descriptor_leak_across_1000_requests(srv, make_client):
    client = make_client(max_concurrency=16)
    small = Image.new("RGB", (16, 16), "green")

    async def batch(n):
        return await asyncio.gather(*[describe(client, small, "what colour?") for _ in range(n)])

    async def main():
        try:
            await batch(50)  # warm the pool
            warm = open_fds()
            for _ in range(19):
                await batch(50)
            return warm
        finally:
            await client.aclose()

    baseline = open_fds()
    warm = asyncio.run(main())
    gc.collect()
    after = open_fds()
    assert srv.stats["requests"] == 1000
    assert after <= baseline + 2, (baseline, warm, after)
