"""The fault matrix one layer up from tests/test_faults.py: through the ComfyUI node classes
(torch tensors in, the exception ComfyUI shows out), through the executor on a chain where the
fault hits the last node (earlier results kept, in the report, the cache and the output
folder), and through the CLI's stderr. Each case: the right typed error or a successful retry,
the right number of attempts at the server, a bounded time, and a message that says what
happened and what to do, with no traceback, key or base64.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (.ci/run installs the CPU build)")

from gpt_image_nodes.nodes import RetryPolicy, Timeouts, errors
from gpt_image_nodes.nodes.comfy import nodes as comfy_nodes
from gpt_image_nodes.nodes.comfy import runtime
from gpt_image_nodes.nodes.node_types import ClientPool
from gpt_image_nodes.nodes.workflow import Executor, ResultCache, Workflow
from gpt_image_nodes.nodes.workflow import executor as executor_module
from testkit import dead_port

E = errors
RETRY = RetryPolicy(max_retries=2, initial_backoff=0.01, max_backoff=0.05, max_retry_after=3.0)
FAST = Timeouts(connect=1, read=0.3, write=2, total=5)
#: For "never answers": the read timeout is longer than the total, so the total must bound it.
HANG = Timeouts(connect=1, read=30, write=2, total=1.0)
ADVICE = re.compile(r"(?i)\b(try|check|change|send|wait|rephrase|raise|use|run|set|fix|lower)\b")
LONG_B64 = re.compile(r"[A-Za-z0-9+/]{100,}")


def http_date() -> str:
    """An HTTP date (whole seconds) between 0.5 and 1.5 s from now."""
    return email.utils.formatdate(math.ceil(time.time() + 0.5), usegmt=True)


# (id, fault (kind, times, params) or "refused", stream, expected: "ok" or error class,
#  attempts at the server for the faulted node, (min, max) seconds, words the message holds)
CASES = [
    ("400", ("status", 1, dict(status=400)), False, E.BadRequestError, 1, (0, 2), ["400"]),
    ("401", ("status", 1, dict(status=401)), False, E.AuthenticationError, 1, (0, 2), ["401", "API key"]),
    ("403", ("status", 1, dict(status=403)), False, E.PermissionDeniedError, 1, (0, 2), ["403"]),
    ("404", ("status", 1, dict(status=404)), False, E.NotFoundError, 1, (0, 2), ["404", "base URL"]),
    ("408-retried", ("status", 1, dict(status=408)), False, "ok", 2, (0, 2), []),
    ("409-retried", ("status", 1, dict(status=409)), False, "ok", 2, (0, 2), []),
    ("413", ("status", 1, dict(status=413)), False, E.PayloadTooLargeError, 1, (0, 2), ["413", "smaller"]),
    ("429-retried", ("status", 2, dict(status=429)), False, "ok", 3, (0, 2), []),
    ("429-retry-after-s", ("status", 1, dict(status=429, retry_after="1")), False, "ok", 2, (0.95, 3), []),
    ("429-retry-after-date", ("status", 1, dict(status=429, retry_after=http_date)), False, "ok", 2, (0.4, 2.5), []),
    ("429-retry-after-too-long", ("status", 1, dict(status=429, retry_after="3600")), False, E.RateLimitError, 1, (0, 1.5), ["429", "3600 s"]),
    ("429-always", ("status", 9, dict(status=429)), False, E.RateLimitError, 3, (0, 2), ["429", "3 attempts"]),
    ("500-retried", ("status", 1, dict(status=500)), False, "ok", 2, (0, 2), []),
    ("500-always", ("status", 9, dict(status=500)), False, E.ServerError, 3, (0, 2), ["500", "3 attempts"]),
    ("502-html-retried", ("status", 1, dict(status=502, body="html")), False, "ok", 2, (0, 2), []),
    ("502-html-always", ("status", 9, dict(status=502, body="html")), False, E.ServerError, 3, (0, 2), ["502", "HTML page"]),
    ("503-retried", ("status", 2, dict(status=503)), False, "ok", 3, (0, 2), []),
    ("504-always", ("status", 9, dict(status=504, body="empty")), False, E.ServerError, 3, (0, 2), ["504"]),
    ("connection-refused", "refused", False, E.ConnectionError, 0, (0, 2), ["Could not reach", "base URL"]),
    ("reset-mid-body-retried", ("reset_mid_body", 1, {}), False, "ok", 2, (0, 2), []),
    ("reset-mid-body-always", ("reset_mid_body", 9, {}), False, E.ConnectionError, 3, (0, 2), ["connection", "3 attempts"]),
    ("read-timeout-retried", ("slow", 1, dict(delay=1.0)), False, "ok", 2, (0.28, 2), []),
    ("read-timeout-always", ("slow", 9, dict(delay=1.0)), False, E.TimeoutError, 3, (0.85, 2.5), ["0.3 s"]),
    ("never-answers", ("hang", 9, {}), False, E.TimeoutError, 1, (0.95, 2.0), ["total time limit"]),
    ("truncated-json", ("truncated_json", 1, {}), False, E.MalformedAnswerError, 1, (0, 2), ["not valid JSON"]),
    ("200-not-json", ("not_json", 1, {}), False, E.MalformedAnswerError, 1, (0, 2), ["HTML page"]),
    ("invalid-base64", ("bad_base64", 1, {}), False, E.MalformedAnswerError, 1, (0, 2), ["base64"]),
    ("no-image", ("no_image", 1, {}), False, E.NoImageError, 1, (0, 2), ["held none", "policies"]),
    ("refusal-content-filter", ("refusal", 1, {}), True, E.ContentFilterError, 1, (0, 2), ["refused"]),
    ("sse-cut-before-image", ("stream_cut", 1, {}), True, E.MalformedAnswerError, 1, (0, 2), ["stream stopped"]),
    ("mid-stream-error", ("mid_stream_error", 1, {}), True, E.ServerError, 1, (0, 2), ["Upstream model failed"]),
]
IDS = [c[0] for c in CASES]


def timeouts_for(case) -> Timeouts:
    return HANG if case[0] == "never-answers" else FAST


def dead_url() -> str:
    return f"http://127.0.0.1:{dead_port()}"


def inject(srv, case) -> None:
    fault = case[1]
    if fault == "refused":
        return
    kind, times, params = fault
    params = {k: (v() if callable(v) else v) for k, v in params.items()}
    srv.inject(kind, times, **params)


def assert_clear(message: str, canary: str, words: list[str]) -> None:
    """What happened and what to do; no traceback, key, base64 or markup."""
    assert 30 < len(message) < 800, message
    assert "Traceback" not in message and 'File "' not in message, message
    assert canary not in message and ";base64," not in message and not LONG_B64.search(message), message
    assert "<html" not in message.lower() and "<h1>" not in message.lower(), message
    assert ADVICE.search(message), f"says nothing about what to do: {message}"
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in: {message}"


# -- through the ComfyUI node classes -------------------------------------------------------------

class RecordingHooks(runtime.Hooks):
    def __init__(self) -> None:
        self.texts: list[str] = []

    def send_text(self, node_id, text):
        self.texts.append(text)


@pytest.fixture
def comfy(srv, canary_key):
    hooks = RecordingHooks()
    previous = runtime.set_hooks(hooks)
    yield hooks
    runtime.set_hooks(previous)
    comfy_nodes.set_client_pool(None)


def image_tensor(seed: int = 0, h: int = 40, w: int = 48) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)).float() / 255.0


# Every node class meets the faults; the image-only faults go to the image nodes.
NODE_FOR = ["GPTImage2TextToImage", "GPTImage2EditImage", "GPTImage2MultiMerge"]


def comfy_inputs(name: str, base_url: str, stream: bool) -> dict:
    common = {"backend": "remote", "base_url": base_url, "model": "", "stream": stream, "seed": 0}
    if name == "GPTImage2Describe":
        return {"image": image_tensor(), "question": "what is this?", **common}
    opts = {"prompt": "a red circle on blue", "size": "1024x1024", "quality": "low", "n": 1, **common}
    if name == "GPTImage2EditImage":
        opts["image"] = image_tensor()
    if name == "GPTImage2MultiMerge":
        opts.update(image_1=image_tensor(1), image_2=image_tensor(2))
    return opts


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fault_through_the_comfyui_node(case, srv, comfy, canary_key, debug_logs):
    name_, _, stream, expected, attempts, (low, high), words = case
    index = IDS.index(name_)
    image_only = name_ in ("invalid-base64", "no-image", "sse-cut-before-image")
    name = NODE_FOR[index % 3] if image_only or index % 4 else "GPTImage2Describe"
    comfy_nodes.set_client_pool(ClientPool(api_key=canary_key, timeouts=timeouts_for(case), retry=RETRY))
    inject(srv, case)
    url = dead_url() if case[1] == "refused" else srv.url
    node = comfy_nodes.NODE_CLASS_MAPPINGS[name]()
    start = time.monotonic()
    if expected == "ok":
        result = asyncio.run(node.execute(unique_id="9", **comfy_inputs(name, url, stream)))
        elapsed = time.monotonic() - start
        if name == "GPTImage2Describe":
            assert result["result"][0].strip()
        else:
            assert tuple(result[0].shape) == (1, 1024, 1024, 3) and torch.isfinite(result[0]).all()
        assert any("retrying" in t for t in comfy.texts), comfy.texts  # the wait is shown on the node
        assert comfy.texts[-1].startswith("Done") or name == "GPTImage2Describe"
    else:
        with pytest.raises(expected) as info:
            asyncio.run(node.execute(unique_id="9", **comfy_inputs(name, url, stream)))
        elapsed = time.monotonic() - start
        assert_clear(str(info.value), canary_key, words)
        assert info.value.__cause__ is None or canary_key not in repr(info.value.__cause__)
        assert comfy.texts[-1] == f"Failed: {info.value}"  # the node's own text says the same
    assert srv.stats["requests"] == attempts
    assert low <= elapsed < high, elapsed
    assert canary_key not in debug_logs.text and all(canary_key not in t for t in comfy.texts)


# -- through the executor: the fault hits the last API node of a chain ---------------------------

def chain(last: str, last_url: str = "") -> Workflow:
    """TextToImage -> <last> (the faulted node), each saved: the first result must survive."""
    second: dict = {"class_type": last, "inputs": {"image": ["1", 0], "prompt": "make it grayscale", "size": "1024x1024", "quality": "low"}}
    if last == "GPTImage2Describe":
        second["inputs"] = {"image": ["1", 0], "question": "which colours?"}
    if last_url:
        second["inputs"]["base_url"] = last_url
    nodes = {
        "1": {"class_type": "GPTImage2TextToImage", "inputs": {"prompt": "a red circle on blue", "size": "1024x1024", "quality": "low"}},
        "2": second,
        "4": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "first"}},
    }
    if last != "GPTImage2Describe":
        nodes["3"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "last"}}
    return Workflow(nodes)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fault_on_the_last_node_of_an_executor_chain(case, srv, canary_key, tmp_path, debug_logs):
    name_, _, stream, expected, attempts, (low, high), words = case
    index = IDS.index(name_)
    image_only = name_ in ("invalid-base64", "no-image", "sse-cut-before-image")
    last = "GPTImage2EditImage" if image_only or index % 3 else "GPTImage2Describe"
    refused = case[1] == "refused"
    wf = chain(last, dead_url() if refused else "")
    for nid in ("1", "2"):
        wf.nodes[nid]["inputs"]["stream"] = stream
    out, cache = tmp_path / "out", ResultCache(tmp_path / "cache")
    pool = ClientPool(api_key=canary_key, base_url=srv.url, timeouts=timeouts_for(case), retry=RETRY)
    srv.inject("slow", 1, delay=0.0)  # node 1 is answered normally
    inject(srv, case)
    times: dict[str, float] = {}

    def on_event(event):
        if event.node_id == "2" and event.kind in ("start", "done", "error"):
            times[event.kind] = time.monotonic()

    report = Executor(pool, cache=cache, output_dir=out, input_dir=tmp_path).run_sync(wf, on_event=on_event)
    elapsed = times.get("done", times.get("error", 0)) - times["start"]
    assert low <= elapsed < high, elapsed
    assert srv.stats["requests"] == 1 + attempts
    assert report.requests == 1 + (RETRY.max_retries + 1 if refused else attempts)  # what was paid for
    assert {"1", "4"} <= set(report.outputs)  # the earlier result is kept
    assert "first_00001_.png" in files(out) and not any(n.endswith(".tmp") for n in files(out))
    if expected == "ok":
        assert report.ok and "2" in report.outputs
        return
    message = report.errors["2"]
    assert list(report.errors) == ["2"] and "2" not in report.outputs
    assert_clear(message, canary_key, words)
    if last != "GPTImage2Describe":
        assert report.skipped == {"3": "not run: node 2 (GPTImage2EditImage) failed"}
    assert files(out) == ["first_00001_.png"]  # nothing of the failed branch, no partial file
    assert canary_key not in debug_logs.text
    # The fault clears: a re-run pays only for the failed node.
    srv.reset()
    if refused:
        wf.nodes["2"]["inputs"]["base_url"] = ""
    report = Executor(pool, cache=cache, output_dir=out, input_dir=tmp_path).run_sync(wf)
    assert report.ok and report.executed == ["2"] and report.cached == ["1"]
    assert srv.stats["requests"] == 1


# -- through the CLI: what the user reads on stderr, and the exit code ---------------------------

CLI_CASES = ["401", "413", "429-always", "502-html-always", "connection-refused", "never-answers",
             "truncated-json", "refusal-content-filter", "sse-cut-before-image", "503-retried"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_fault_as_the_cli_shows_it(name, srv, canary_key, tmp_path, monkeypatch, capsys):
    from gpt_image_nodes.nodes.cli import main

    case = CASES[IDS.index(name)]
    _, _, stream, expected, attempts, (low, high), words = case
    monkeypatch.setenv("GPT_IMAGE_API_KEY", canary_key)
    monkeypatch.setenv("GPT_IMAGE_BASE_URL", srv.url)
    monkeypatch.setenv("GPT_IMAGE_CONFIG", str(tmp_path / "absent.json"))
    monkeypatch.delenv("GPT_IMAGE_BACKEND", raising=False)
    monkeypatch.delenv("GPT_IMAGE_MODEL", raising=False)
    # The CLI's pool, with the test's small timeouts and retry policy.
    monkeypatch.setattr(executor_module, "ClientPool", lambda: ClientPool(timeouts=timeouts_for(case), retry=RETRY))
    wf = chain("GPTImage2EditImage", dead_url() if case[1] == "refused" else "")
    for nid in ("1", "2"):
        wf.nodes[nid]["inputs"]["stream"] = stream
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf.to_api()))
    out = tmp_path / "out"
    args = ["run", str(path), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    srv.inject("slow", 1, delay=0.0)
    inject(srv, case)
    start = time.monotonic()
    code = main(args)
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    assert canary_key not in captured.out + captured.err
    assert "Traceback" not in captured.err
    assert srv.stats["requests"] == 1 + attempts
    assert elapsed < high + 3
    if expected == "ok":
        assert code == 0 and files(out) == ["first_00001_.png", "last_00001_.png"]
        return
    assert code == 1
    line = next(l for l in captured.err.splitlines() if l.startswith("error: node 2 (GPTImage2EditImage) failed: "))
    assert_clear(line.split("failed: ", 1)[1], canary_key, words)
    assert "Not run because of it: node 3 (SaveImage)" in captured.err
    assert "Kept: 1 finished node " in captured.err
    assert files(out) == ["first_00001_.png"]
