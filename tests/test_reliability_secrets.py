"""The key end to end: a canary key through every mode, faults, retries, DEBUG logging of
everything, the CLI's output files (PNG text chunks included) and cache, workflow exports and
reports; image links are fetched without it, across a redirect to another host too.
(tests/test_config_secrets.py covers the client's reprs, messages and log records.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import gpt_image_nodes
from gpt_image_nodes.nodes import RetryPolicy, Timeouts
from gpt_image_nodes.nodes.node_types import ClientPool
from gpt_image_nodes.nodes.workflow import Executor, ResultCache, Workflow

ROOT = Path(gpt_image_nodes.__file__).resolve().parent
FAST = dict(retry=RetryPolicy(max_retries=2, initial_backoff=0.01, max_backoff=0.05), timeouts=Timeouts(connect=2, read=10, write=5, total=20))

ALL_MODES = {
    "1": {"class_type": "GPTImage2TextToImage", "inputs": {"prompt": "a red circle on blue", "size": "1024x1024", "quality": "low"}},
    "2": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["1", 0], "prompt": "make it grayscale", "size": "1024x1024", "quality": "low"}},
    "3": {"class_type": "GPTImage2MultiMerge", "inputs": {"image_1": ["1", 0], "image_2": ["2", 0], "prompt": "side by side", "size": "1024x1024", "quality": "low"}},
    "4": {"class_type": "GPTImage2Describe", "inputs": {"image": ["3", 0], "question": "which colours?"}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "merged"}},
    "6": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "first"}},
}


def scan_files(folder: Path, canary: str) -> int:
    """Every byte of every file, and every PNG text chunk decoded (zTXt/iTXt are compressed)."""
    count = 0
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        count += 1
        data = path.read_bytes()
        assert canary.encode() not in data, path
        if data.startswith(b"\x89PNG"):
            with Image.open(path) as img:
                for key, value in {**getattr(img, "text", {}), **img.info}.items():
                    assert canary not in str(key) + str(value), (path, key)
    return count


def test_cli_at_debug_level_with_faults_writes_and_logs_no_key(srv, canary_key, tmp_path):
    """A real subprocess, key from the environment, logging.DEBUG for every logger (httpx and
    httpcore included), all four modes, a retried 500, and a 400 whose text echoes the key."""
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(ALL_MODES))
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "GPT_IMAGE_API_KEY": canary_key, "GPT_IMAGE_BASE_URL": srv.url,
           "GPT_IMAGE_CONFIG": str(tmp_path / "absent.json"), "PYTHONPATH": str(ROOT.parent)}
    env.pop("GPT_IMAGE_BACKEND", None)
    code = ("import logging, sys; logging.basicConfig(level=logging.DEBUG, format='%(name)s %(levelname)s %(message)s'); "
            "from gpt_image_nodes.nodes.cli import main; sys.exit(main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", code, "run", str(wf), "--out", str(out), "--cache-dir", str(cache)]
    srv.inject("status", 1, status=500)  # node 1, attempt 1: retried
    srv.inject("slow", 3, delay=0.0)  # node 1 attempt 2, nodes 2 and 3
    srv.inject("status", 1, status=400, message=f"Bad request for key {canary_key}")  # node 4
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 1, first.stderr[-2000:]
    assert "error: node 4 (GPTImage2Describe) failed" in first.stderr and "[redacted]" in first.stderr
    assert "gpt_image_nodes.client DEBUG POST" in first.stderr  # DEBUG logging was really on
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "1 request sent, 3 cache hits" in second.stdout
    assert srv.stats["requests"] == 6
    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert canary_key not in text and ";base64," not in text
    assert scan_files(out, canary_key) == 5  # merged x2, first x2, the description
    assert scan_files(cache, canary_key) == 4  # one entry per API node
    with Image.open(next(out.glob("merged_*.png"))) as img:  # the graph is embedded, the key is not
        assert json.loads(img.text["prompt"])["3"]["class_type"] == "GPTImage2MultiMerge"


def test_exports_reports_and_events_hold_no_key(srv, canary_key, tmp_path, debug_logs):
    events = []
    ex = Executor(ClientPool(api_key=canary_key, base_url=srv.url, **FAST), cache=ResultCache(tmp_path / "cache"), output_dir=tmp_path / "out")
    srv.inject("status", 1, status=429, retry_after="0")
    wf = Workflow(ALL_MODES)
    report = ex.run_sync(wf, on_event=events.append)
    assert report.ok and srv.stats["requests"] == 5
    blob = "\n".join([json.dumps(wf.to_api()), json.dumps(wf.to_ui()), repr(report), repr(events), repr(ex.pool), repr(ex.cache),
                      repr(ex.client_for("auto", "", "")), repr(ex.client_for("auto", "", "").settings)])
    assert canary_key not in blob and canary_key not in debug_logs.text
    scan_files(tmp_path, canary_key)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream-asked-json-answered"])
def test_image_links_are_fetched_without_the_key_across_hosts_and_redirects(srv, make_client, canary_key, stream):
    # The answer links an image on 127.0.0.1 (the API's own host) that redirects to localhost.
    srv.configure(answer_shape="markdown_link", stream_shape="json",
                  link_base=f"http://localhost:{srv.port}", link_via_redirect=True)
    result = make_client(sync=True).text_to_image("a red circle on blue", size="1024x1024", quality="low", n=2, stream=stream)
    assert len(result.images) == 2 and all(img.size == (1024, 1024) for img in result.images)
    stats = srv.stats
    assert stats["redirects"] == 2 and stats["image_fetches"] == 2
    assert stats["image_fetch_authorization"] == [None, None]


def test_executor_link_fetches_carry_no_key(srv, canary_key, tmp_path):
    srv.configure(answer_shape="markdown_link", link_base=f"http://localhost:{srv.port}")
    ex = Executor(ClientPool(api_key=canary_key, base_url=srv.url, **FAST), cache=None)
    wf = Workflow({k: ALL_MODES[k] for k in ("1", "2", "6")})
    wf.apply_overrides({"1.stream": False, "2.stream": False})  # links come in JSON answers
    report = ex.run_sync(wf)
    assert report.ok and srv.stats["image_fetches"] == 2
    assert srv.stats["image_fetch_authorization"] == [None, None]
