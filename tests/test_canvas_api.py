"""The canvas's public API, called with gradio_client against the in-process offline server."""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from gpt_image_nodes.nodes.backend import shared_offline_server  # noqa: E402
from gpt_image_nodes.ui.launch import launch_kwargs  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*(silent_downcasting|copy keyword).*")

ENDPOINTS = {"/text_to_image", "/edit_image", "/multi_merge", "/describe", "/run_workflow"}
PNG = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def canvas(start_canvas):
    """The app in this process, with no key anywhere (so: offline)."""
    with start_canvas() as running:
        yield running


@pytest.fixture(scope="module")
def client(canvas):
    return gradio_client.Client(canvas[1], verbose=False)


def requests() -> int:
    return shared_offline_server().stats["requests"]


def files(gallery) -> list[Path]:
    return [Path(item["image"]) for item in gallery]


def test_exactly_the_five_operations_are_public(canvas, client):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == ENDPOINTS
    demo = canvas[0]
    config = demo.get_config_file()
    public = [d for d in config["dependencies"] if d.get("api_visibility") == "public"]
    assert {"/" + d["api_name"] for d in public} == ENDPOINTS
    # The key box feeds private events only.
    key_id = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "api-key")
    users = [d for d in config["dependencies"] if key_id in d["inputs"]]
    assert users and all(d["api_visibility"] == "private" for d in users)
    # Remote calls are async and may run several at once.
    fns = [demo.fns[d["id"]] for d in public]
    assert all(f.concurrency_limit and f.concurrency_limit > 1 and inspect.iscoroutinefunction(f.fn) for f in fns)


def test_launch_keeps_no_run_history_and_caps_uploads():
    kw = launch_kwargs()
    assert kw["run_history"] is False and kw["max_file_size"] == "20mb"


def test_text_to_image_returns_lossless_pngs(client):
    before = requests()
    gallery, text, usage = client.predict("a red fox in snow", "1024x1024", "low", 2, 0, api_name="/text_to_image")
    paths = files(gallery)
    assert len(paths) == 2 and all(p.read_bytes()[:8] == PNG for p in paths)
    assert Image.open(paths[0]).size == (1024, 1024)
    assert isinstance(json.loads(usage), dict) and isinstance(text, str)
    assert requests() == before + 1


def test_edit_describe_and_merge(client, tmp_path):
    src = tmp_path / "in.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(src)
    gallery, _, _ = client.predict(gradio_client.handle_file(str(src)), "make it black and white", "auto", "auto", 1, 0, api_name="/edit_image")
    edited = files(gallery)[0]
    assert edited.read_bytes()[:8] == PNG
    description, usage = client.predict(gradio_client.handle_file(str(edited)), "What is in this image?", api_name="/describe")
    assert "gray" in description.lower() or "grey" in description.lower()
    merged, _, _ = client.predict([gradio_client.handle_file(str(src)), gradio_client.handle_file(str(edited))],
                                  "put them side by side", "auto", "auto", 1, 0, api_name="/multi_merge")
    assert len(files(merged)) == 1


def test_run_workflow_runs_an_example(client):
    text = (ROOT / "workflows" / "api" / "chain_edit_edit_describe.json").read_text()
    summary, gallery = client.predict(text, [], api_name="/run_workflow")
    assert summary["errors"] == {} and summary["requests"] >= 1
    assert any(summary["text"].values())  # the Describe at the end
    assert files(gallery) and all(p.read_bytes()[:8] == PNG for p in files(gallery))


def test_errors_come_back_as_messages(client, tmp_path):
    src = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(src)
    with pytest.raises(Exception, match="(?i)merge|2 images|image_2"):
        client.predict([gradio_client.handle_file(str(src))], "merge", "auto", "auto", 1, 0, api_name="/multi_merge")
    with pytest.raises(Exception, match="(?i)workflow|json"):
        client.predict("{not json", [], api_name="/run_workflow")


@pytest.mark.slow
def test_cli_prints_the_local_address_and_cleans_up(tmp_path):
    port = free_port()
    env = {**os.environ, "GPT_IMAGE_CONFIG": str(tmp_path / "none.json"), "TMPDIR": str(tmp_path)}
    env.pop("GPT_IMAGE_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "gpt_image_nodes.nodes.cli", "canvas", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        assert list(tmp_path.glob("gpt-image-canvas-*"))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    time.sleep(0.2)
    assert not list(tmp_path.glob("gpt-image-canvas-*"))  # SIGTERM still removes the session root
