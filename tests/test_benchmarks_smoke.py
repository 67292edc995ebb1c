"""benchmarks/run.py --quick --json runs end to end and ends with one valid JSON object.

Figures are not judged here (CI machines are shared and noisy); only that every benchmark ran
and reported ours/baseline/ratio/goal, and that the invariants they assert held (lossless
encoding, no request on a cached re-run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ("encode", "decode", "end_to_end", "concurrency", "cache", "streaming", "canvas_start", "memory")


def test_quick_json_run_reports_every_benchmark():
    for module in ("torch", "openai", "gradio"):
        pytest.importorskip(module)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    doc = json.loads(lines[-1])
    assert doc["_quick"] is True and doc["_machine"]["cores"]
    for name in EXPECTED:
        figures = doc[name]
        assert "error" not in figures, (name, figures)
        for key in ("ours", "baseline", "ratio", "goal"):
            assert key in figures, (name, key)
        assert isinstance(figures["ours"], (int, float)) and figures["ours"] > 0, (name, figures)
    assert doc["encode"]["lossless"] is True and 0 < doc["encode"]["bytes_ratio"]  # measured, not a constant
    assert doc["cache"]["requests_rerun"] == 0
    # One more request in flight costs memory (its upload, its answer), but not tens of images'
    # worth: quick mode is 512x512, where one raw RGB image is 0.75 MiB (measured: about 2 MiB).
    assert 0 < doc["memory"]["per_request_mb"] < 64, doc["memory"]
    # The readable table comes first, one row per benchmark.
    table = "\n".join(lines[:-1])
    assert all(f"| {name}" in table for name in EXPECTED)
