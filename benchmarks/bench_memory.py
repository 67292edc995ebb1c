"""memory: peak RSS of 8 concurrent 1536x1024 edits through the EditImage node, per request.

Measured in a fresh subprocess (so nothing else this run allocated counts) against the stub
server (its own process, 1 s per request so all 8 are in flight together). After a warm-up run on
tiny images (imports, connection pool), the kernel's peak-RSS mark is reset
(``/proc/self/clear_refs`` = 5) and the batch is run; the peak (VmHWM) minus the RSS just before
is what the run cost. The output IMAGE tensor (float32, it must exist) is reported apart, and a
batch of 1 is measured the same way (each in a fresh process), so ``per_request_mb`` is the marginal cost of one more
request in flight: (peak(8) - peak(1) - 7 output images) / 7.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from timing import Result, close_loop

HERE = os.path.dirname(os.path.abspath(__file__))


def _status(field: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def worker(url: str, batch: int, width: int, height: int, first: int = 0) -> dict:
    """Run in a fresh process: warm up on tiny images (imports, n connections), reset the peak
    mark, run the real batch, report peak - before. With ``first``, a batch of that many is
    measured first in the same process (quick mode: cheaper, less exact)."""
    import gc

    import torch

    import scene
    from bench_http import image_batch, node_runner

    tensor = image_batch(batch, width, height)
    scene.scene_uint8.cache_clear()
    run = node_runner(url, f"{width}x{height}" if (width, height) == (1536, 1024) else "auto")
    loop = asyncio.new_event_loop()
    tiny = torch.rand(batch, 64, 64, 3)
    loop.run_until_complete(run(tiny))
    del tiny
    figures = {}
    for n in ((first, batch) if first else (batch,)):
        gc.collect()
        if not _reset_peak():
            raise SystemExit("cannot reset the peak RSS mark (/proc/self/clear_refs)")
        before = _status("VmRSS")
        out = loop.run_until_complete(run(tensor[:n]))
        peak = _status("VmHWM")
        figures[n] = {"delta": peak - before, "output": out.element_size() * out.nelement(),
                      "before": before, "peak": peak}
        del out
    close_loop(loop)
    return figures


def _measure(url: str, batch: int, width: int, height: int, first: int = 0) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", url, str(batch), str(width), str(height), str(first)],
        capture_output=True, text=True, cwd=HERE, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(quick: bool = False) -> Result:
    from server_proc import shared_stub

    batch = 8
    width, height = (512, 512) if quick else (1536, 1024)
    with shared_stub(f"{width}x{height}", latency=0.05 if quick else 1.0, events=2) as stub:
        if quick:
            # The smoke test's budget: one process, batch of 1 then of 8 (rougher figures).
            both = _measure(stub.url, batch, width, height, first=1)
            many, one = both[str(batch)], both["1"]
        else:
            many = _measure(stub.url, batch, width, height)[str(batch)]
            one = _measure(stub.url, 1, width, height)["1"]
    mb = 1024 * 1024
    image_out = one["output"]
    per_request = (many["delta"] - one["delta"] - (batch - 1) * image_out) / (batch - 1)
    raw_rgb = width * height * 3
    return Result(many["delta"] / mb, one["delta"] / mb, None, None, goal_on="ratio", unit="MiB",
                  note=f"{batch} concurrent {width}x{height} edits: peak RSS growth (baseline column: 1 edit)",
                  extra={"per_request_mb": per_request / mb, "output_tensor_mb_each": image_out / mb,
                         "per_request_in_raw_rgb_images": per_request / raw_rgb,
                         "peak_rss_mb": many["peak"] / mb, "rss_before_mb": many["before"] / mb})


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--worker":
    sys.path.insert(0, HERE)
    url, n, w, h, first = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    result = worker(url, n, w, h, first)
    print(json.dumps(result))
