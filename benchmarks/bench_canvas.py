"""canvas_start: process start to the first HTTP 200 of the page.

Ours: ``gpt-image-nodes canvas --port P``. Baseline: an empty ``gr.Blocks()`` launched the same
way (a subprocess of the same Python). Both are polled every 20 ms on ``GET /`` and then stopped
with SIGTERM; the two are interleaved.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from timing import Result, median

BARE = (
    "import sys, gradio as gr\n"
    "with gr.Blocks() as demo:\n"
    "    pass\n"
    "demo.launch(server_name='127.0.0.1', server_port=int(sys.argv[1]), quiet=True)\n"
)
OURS = "import sys\nfrom gpt_image_nodes.nodes.cli import main\nraise SystemExit(main(['canvas', '--port', sys.argv[1]]))\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    for name in ("GPT_IMAGE_API_KEY", "GRADIO_SERVER_PORT", "GRADIO_SERVER_NAME"):
        env.pop(name, None)
    return env


def time_to_200(code: str, timeout: float = 120.0) -> float:
    port = _free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(port)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        while time.perf_counter() - start < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"the process exited with {proc.returncode} before serving")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:  # loopback only
                    if resp.status == 200:
                        return time.perf_counter() - start
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.02)
        raise RuntimeError("no HTTP 200 before the timeout")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_canvas_start(quick: bool = False) -> Result:
    if quick:
        # The smoke test's budget: both at once (each gets about one core), one pair only.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            a, b = pool.submit(time_to_200, OURS), pool.submit(time_to_200, BARE)
            ours, base = [a.result()], [b.result()]
    else:
        ours, base = [], []
        for i in range(5):
            for code, into in (((OURS, ours), (BARE, base)) if i % 2 == 0 else ((BARE, base), (OURS, ours))):
                into.append(time_to_200(code))
    ratios = [a / b for a, b in zip(ours, base)]
    return Result(median(ours), median(base), median(ratios), 1.3,
                  note="`gpt-image-nodes canvas` vs an empty gr.Blocks(), start -> first 200 on /"
                  + (" (quick: both started at once)" if quick else ""))
