"""cache: an unchanged 5-step chain re-run through the workflow executor.

TextToImage -> EditImage x4 (1024x1024) against the offline server. Run 1 is cold (5 requests,
results stored in a fresh cache folder). The re-run is measured twice: with the same executor
(memory layer) and, the main figure, with a new Executor on the same folder (a new headless run:
every result read back from disk). Figures: requests the re-run sent (goal 0) and its time, with
the cold run as the baseline.
"""

from __future__ import annotations

import asyncio
import tempfile
import time

from bench_http import _env
from server_proc import shared_server
from timing import Result, median

PROMPTS = ("make it grayscale", "mirror it", "make it brighter", "add a warm sepia tone")


def chain(url: str, size: str) -> dict:
    common = {"quality": "low", "n": 1, "seed": 0, "backend": "remote", "base_url": url, "model": "",
              "stream": True}
    wf: dict = {"1": {"class_type": "GPTImage2TextToImage",
                      "inputs": {"prompt": "a lighthouse on a cliff at sunset", "size": size, **common}}}
    for i, prompt in enumerate(PROMPTS, start=2):
        wf[str(i)] = {"class_type": "GPTImage2EditImage",
                      "inputs": {"image": [str(i - 1), 0], "prompt": prompt, "size": "auto", **common}}
    return wf


def bench_cache(quick: bool = False) -> Result:
    _env()
    from gpt_image_nodes.nodes.node_types import ClientPool
    from gpt_image_nodes.nodes.workflow import Executor, ResultCache

    size = "1024x1024"
    rounds = 2 if quick else 5
    with shared_server(latency=0.0) as srv, tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        wf = chain(srv.url, size)

        async def run(ex: Executor):  # noqa: ANN202 - RunReport
            start = time.perf_counter()
            report = await ex.run(wf)  # run() loads it itself
            return report, time.perf_counter() - start

        async def main() -> tuple:
            first_ex = Executor(client_pool=ClientPool(), cache=ResultCache(folder))
            cold, cold_t = await run(first_ex)
            assert cold.ok and cold.requests == 5, (cold.errors, cold.requests)
            mem_times, disk_times, sent = [], [], 0
            for _ in range(rounds):
                report, seconds = await run(first_ex)
                mem_times.append(seconds)
                sent += report.requests
                fresh = Executor(client_pool=ClientPool(), cache=ResultCache(folder))
                report, seconds = await run(fresh)
                disk_times.append(seconds)
                sent += report.requests
                assert report.cache_hits == 5, report.cache_hits
                await fresh.aclose()
            await first_ex.aclose()
            return cold_t, mem_times, disk_times, sent

        cold_t, mem_times, disk_times, sent = asyncio.run(main())
        server_requests = srv.stats()["requests"]
    disk = median(disk_times)
    return Result(disk, cold_t, disk / cold_t, 0, goal_on="requests_rerun",
                  note=f"5-step chain at {size}; re-run from disk cache (new executor) vs cold run",
                  extra={"requests_rerun": sent, "requests_total_at_server": server_requests,
                         "rerun_memory_s": median(mem_times), "rerun_disk_ms": disk * 1000})
