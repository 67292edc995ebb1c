"""Benchmarks: is the client faster than what a user would write instead?

    python benchmarks/run.py                 # all, as a table
    python benchmarks/run.py --json          # ... and one JSON object as the last line
    python benchmarks/run.py --quick         # fewer repeats, smaller images (the smoke test)
    python benchmarks/run.py --only encode,decode

Each figure is ours against a baseline measured in the same process, interleaved, median of
repeats (see timing.py); the machine is printed with the table. Loopback only: every server is a
subprocess on 127.0.0.1 that this script starts and stops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from timing import Result, fmt_value, log, machine  # noqa: E402


def _registry() -> dict:
    import bench_cache
    import bench_canvas
    import bench_codecs
    import bench_http
    import bench_memory
    import bench_stream

    return {
        "encode": bench_codecs.bench_encode,
        "decode": bench_codecs.bench_decode,
        "end_to_end": bench_http.bench_end_to_end,
        "concurrency": bench_http.bench_concurrency,
        "cache": bench_cache.bench_cache,
        "streaming": bench_stream.bench_streaming,
        "canvas_start": bench_canvas.bench_canvas_start,
        "memory": bench_memory.bench_memory,
    }


NAMES = ("encode", "decode", "end_to_end", "concurrency", "cache", "streaming", "canvas_start", "memory")


def _goal_text(r: Result) -> str:
    if r.goal is None:
        return "report"
    if r.goal_on == "ratio":
        return f"ratio <= {r.goal:g}"
    if r.goal_on in ("ours", "ours<"):
        op = "<" if r.goal_on == "ours<" else "<="
        return f"ours {op} {fmt_value(r.goal, r.unit)}"
    return f"{r.goal_on} <= {r.goal:g}"


def table(results: dict[str, Result | str]) -> str:
    rows = [("benchmark", "ours", "baseline", "ratio", "goal", "met", "notes")]
    for name, r in results.items():
        if isinstance(r, str):
            rows.append((name, "-", "-", "-", "-", "ERROR", r))
            continue
        notes = r.note
        if name == "encode":
            notes += f"; bytes {r.extra['ours_bytes'] / 1e6:.2f} MB vs {r.extra['baseline_bytes'] / 1e6:.2f} MB (ratio {r.extra['bytes_ratio']:.2f}, goal <= 1.25); {'lossless' if r.extra['lossless'] else 'NOT LOSSLESS'}"
        elif name == "decode" and "ratio_vs_comfy_openai_node_recipe" in r.extra:
            notes += f"; vs ComfyUI's OpenAI node recipe (RGBA + stack) {r.extra['ratio_vs_comfy_openai_node_recipe']:.2f}"
        elif name == "end_to_end":
            notes += f"; server's own share {fmt_value(r.extra['server_floor'], 's')}"
        elif name == "concurrency" and "offline_server_ratio" in r.extra:
            notes += f"; vs the offline server: {r.extra['offline_server_ratio']:.2f}x"
        elif name == "cache":
            notes += f"; re-run sent {r.extra['requests_rerun']} requests; memory-layer re-run {fmt_value(r.extra['rerun_memory_s'], 's')}"
        elif name == "streaming":
            notes += f"; all events median {fmt_value(r.extra['ours_all_events_median'], 's')}"
        elif name == "memory":
            notes += f"; {r.extra['per_request_mb']:.1f} MiB per extra request in flight (+{r.extra['output_tensor_mb_each']:.0f} MiB output tensor)"
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        rows.append((name, fmt_value(r.ours, r.unit), fmt_value(r.baseline, r.unit), ratio, _goal_text(r), met, notes))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(cell.ljust(widths[j]) if j < 6 else cell for j, cell in enumerate(row)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|---|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller images")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(NAMES)}")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(NAMES)}")
    warnings.filterwarnings("ignore", category=UserWarning)  # torch's non-writable numpy notice
    registry = _registry()
    info = machine()
    log(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, numpy {info['numpy']}, "
        f"Pillow {info['pillow']}, torch {info['torch']}, httpx {info['httpx']}, openai {info['openai']}, gradio {info['gradio']}"
        + (" (quick)" if args.quick else ""))
    results: dict[str, Result | str] = {}
    failed = False
    for name in names:
        start = time.perf_counter()
        log(f"running {name} ...")
        try:
            results[name] = registry[name](quick=args.quick)
        except Exception as exc:  # noqa: BLE001 - report, go on with the others
            failed = True
            traceback.print_exc()
            results[name] = f"{type(exc).__name__}: {exc}"
        log(f"  {name} done in {time.perf_counter() - start:.1f} s")
    from server_proc import close_shared

    close_shared()
    print(f"Machine: {info['cpu']}, {info['cores']} cores, load {info.get('load_avg')}; Python {info['python']}; "
          f"numpy {info['numpy']}, Pillow {info['pillow']}, torch {info['torch']}, httpx {info['httpx']}, "
          f"openai {info['openai']}, gradio {info['gradio']}" + ("; --quick" if args.quick else ""))
    print(table(results))
    if args.json:
        doc: dict = {name: (r.as_json() if isinstance(r, Result) else {"error": r}) for name, r in results.items()}
        doc["_machine"] = info
        doc["_quick"] = args.quick
        print(json.dumps(doc, ensure_ascii=False), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
