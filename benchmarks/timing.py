"""Shared timing helpers: interleaved A/B runs, medians, paired ratios, the machine.

The benchmark machine is shared and noisy (2 cores, other jobs), so no figure is an absolute
time on its own: each benchmark runs ours and the baseline in the same process, interleaved
(AB BA AB ...: the order alternates so neither side always runs on a warm cache), and reports the
medians and the median of the per-pair ratios ours/baseline.
"""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Result:
    """One benchmark's figures. ``ours``/``baseline`` in seconds unless ``unit`` says otherwise."""

    ours: float
    baseline: float | None
    ratio: float | None
    goal: float | None
    #: "ratio" (ratio <= goal), "ours" (ours <= goal, absolute), "ours<" (ours < goal), or the
    #: name of an ``extra`` figure (that figure <= goal).
    goal_on: str = "ratio"
    unit: str = "s"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        if self.goal_on == "ratio":
            value = self.ratio
        elif self.goal_on in ("ours", "ours<"):
            value = self.ours
        else:  # the goal is on an extra figure (e.g. requests sent)
            value = self.extra.get(self.goal_on)
        if value is None:
            return None
        return value < self.goal if self.goal_on == "ours<" else value <= self.goal

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ours": _round(self.ours), "baseline": _round(self.baseline),
                               "ratio": _round(self.ratio), "goal": self.goal}
        out["goal_on"] = self.goal_on
        out["met"] = self.met
        out["unit"] = self.unit
        if self.note:
            out["note"] = self.note
        out.update({k: _round(v) for k, v in self.extra.items()})
        return out


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def median(values: list[float]) -> float:
    return statistics.median(values)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(ours: Callable[[], Any], baseline: Callable[[], Any], repeats: int = 9,
            warmup: int = 1) -> tuple[float, float, float]:
    """Interleave ``ours`` and ``baseline`` ``repeats`` times each (order alternating);
    returns (median ours, median baseline, median of per-pair ratios)."""
    for _ in range(warmup):
        ours()
        baseline()
    a: list[float] = []
    b: list[float] = []
    gc.collect()
    for i in range(repeats):
        if i % 2 == 0:
            a.append(_timed(ours))
            b.append(_timed(baseline))
        else:
            b.append(_timed(baseline))
            a.append(_timed(ours))
    ratios = [x / y for x, y in zip(a, b) if y > 0]
    return median(a), median(b), median(ratios)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    from importlib import metadata

    for name in ("numpy", "pillow", "torch", "httpx", "openai", "gradio"):
        try:  # from the installed metadata: importing gradio alone takes seconds
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    try:
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        if value >= 1:
            return f"{value:.2f} s"
        return f"{value * 1000:.1f} ms"
    if unit in ("MB", "MiB"):
        return f"{value:.0f} {unit}"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:g} {unit}".strip()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is still parked on ``loop`` (e.g. the ComfyUI glue's client closer, which
    closes the connections when cancelled), then close it, as ``asyncio.run`` does."""
    if loop.is_closed():
        return
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
