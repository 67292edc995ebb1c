"""The pack inside a real ComfyUI, talking to a real offline server.

Set COMFYUI_DIR (a ComfyUI checkout) and COMFYUI_PYTHON (the python of its venv) to run it, e.g.
``COMFYUI_DIR=~/ComfyUI COMFYUI_PYTHON=~/ComfyUI/venv/bin/python pytest tests/test_comfyui_real.py -s``.
The pack is copied into a temporary ``--base-directory`` (custom_nodes, input, output, user) under
an awkward folder name; the ComfyUI checkout itself is not touched.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from PIL import Image

from gpt_image_nodes.nodes.offline import OfflineServer
from testkit import free_port

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", "")
FOLDER = "gpt-image.nodes-v2"  # dashes and a dot, as a clone might be named
CANARY = "sk-canary-" + secrets.token_hex(12)
NAMES = ("GPTImage2TextToImage", "GPTImage2EditImage", "GPTImage2MultiMerge", "GPTImage2Describe")

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (COMFYUI_DIR and COMFYUI_PYTHON and Path(COMFYUI_DIR, "main.py").is_file() and Path(COMFYUI_PYTHON).is_file()),
        reason="needs a real ComfyUI: set COMFYUI_DIR (folder with main.py) and COMFYUI_PYTHON (its venv's python)",
    ),
]

# Listens on ComfyUI's websocket (with ComfyUI's own aiohttp) and writes one JSON line per event.
_WS_LISTENER = r"""
import asyncio, json, struct, sys, aiohttp
async def main(url, path):
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        with open(path, "a", encoding="utf-8") as out:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    out.write(msg.data + "\n")
                elif msg.type == aiohttp.WSMsgType.BINARY and struct.unpack(">I", msg.data[:4])[0] == 3:
                    n = struct.unpack(">I", msg.data[4:8])[0]
                    node, text = msg.data[8:8 + n].decode(), msg.data[8 + n:].decode()
                    out.write(json.dumps({"type": "progress_text", "data": {"node": node, "text": text}}) + "\n")
                out.flush()
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class Comfy:
    def __init__(self, url: str, base: Path, log: Path, events: Path, pid: int) -> None:
        self.url, self.base, self.log, self.events, self.pid = url, base, log, events, pid
        self.client_id = uuid.uuid4().hex

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"POST {path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from None
        return json.loads(raw) if raw.strip() else {}

    def queue(self, prompt: dict, workflow: dict | None = None) -> str:
        extra = {"extra_pnginfo": {"workflow": workflow or {"note": "gpt-image-nodes test"}}}
        return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id, "extra_data": extra})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 60) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
                return entry
            time.sleep(0.05)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s; log:\n{self.log.read_text()[-3000:]}")

    def run(self, prompt: dict, workflow: dict | None = None, expect: str = "success") -> dict:
        entry = self.wait(self.queue(prompt, workflow))
        assert entry["status"]["status_str"] == expect, json.dumps(entry["status"], indent=1)[:3000]
        return entry

    def files(self, entry: dict) -> list[Path]:
        found = []
        for output in entry["outputs"].values():
            for image in output.get("images", []):
                found.append(self.base / image["type"] / image.get("subfolder", "") / image["filename"])
        return found


@pytest.fixture(scope="module")
def offline():
    server = OfflineServer(api_key=CANARY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, offline):
    base = tmp_path_factory.mktemp("comfy-base")
    for name in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base / name).mkdir()
    shutil.copytree(ROOT, base / "custom_nodes" / FOLDER, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", "tests", "benchmarks", ".ci", "*.pyc"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPT_IMAGE_")}
    env.update(GPT_IMAGE_API_KEY=CANARY, GPT_IMAGE_BASE_URL=offline.url, GPT_IMAGE_CONFIG=str(base / "absent.json"), PYTHONUNBUFFERED="1")
    log = base / "comfyui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
             "--disable-auto-launch", "--disable-api-nodes", "--verbose", "DEBUG"],
            cwd=COMFYUI_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)
    events = base / "events.jsonl"
    listener = None
    try:
        client = Comfy(f"http://127.0.0.1:{port}", base, log, events, proc.pid)
        end = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"ComfyUI exited:\n{log.read_text()[-4000:]}"
            try:
                client.get("/system_stats")
                break
            except OSError:
                assert time.monotonic() < end, f"ComfyUI did not start:\n{log.read_text()[-4000:]}"
                time.sleep(0.3)
        listener = subprocess.Popen([COMFYUI_PYTHON, "-c", _WS_LISTENER, f"ws://127.0.0.1:{port}/ws?clientId={client.client_id}", str(events)])
        while not (events.exists() and events.read_text().strip()):  # the first "status" message
            assert time.monotonic() < end and listener.poll() is None, "websocket listener failed"
            time.sleep(0.1)
        yield client
    finally:
        for p in (listener, proc):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
    assert CANARY not in log.read_text(errors="replace"), "the API key reached ComfyUI's log"


def _events(comfy: Comfy) -> list[dict]:
    return [json.loads(line) for line in comfy.events.read_text(encoding="utf-8").splitlines() if line.strip()]


def _t2i(prompt: str, n: int = 1, **extra) -> dict:
    return {"class_type": "GPTImage2TextToImage", "inputs": {"prompt": prompt, "size": "1024x1024", "quality": "low", "n": n, "seed": 0, **extra}}


# -- tests ----------------------------------------------------------------------------------------

def test_object_info_lists_the_four_nodes(comfy):
    info = comfy.get("/object_info")
    for name in NAMES:
        node = info[name]
        assert node["category"] == "GPT Image 2" and node["description"] and node["display_name"].startswith("GPT Image 2 · ")
        assert node["python_module"] == f"custom_nodes.{FOLDER}" and node["api_node"] is False
        assert node["output_node"] is (name == "GPTImage2Describe") and all(node["output_tooltips"])
        for group in ("required", "optional"):
            for key, spec in node["input"][group].items():
                assert spec[1].get("tooltip"), f"{name}.{key} has no tooltip"
        assert node["input"]["hidden"] == {"unique_id": "UNIQUE_ID"}
    assert any(e.endswith(f"/{FOLDER}/gpt_image_nodes.js") for e in comfy.get("/extensions"))
    assert CANARY not in json.dumps(info)


def test_a_graph_with_all_four_nodes(comfy, offline):
    offline.reset()
    prompt = {
        "1": _t2i("a red square on white", n=2),
        "2": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["1", 0], "prompt": "invert", "size": "auto", "quality": "low", "n": 1, "seed": 0}},
        "3": {"class_type": "GPTImage2MultiMerge", "inputs": {"image_1": ["1", 0], "image_2": ["2", 0], "prompt": "combine", "size": "1024x1024", "quality": "low", "n": 1, "seed": 0}},
        "4": {"class_type": "GPTImage2Describe", "inputs": {"image": ["3", 0], "question": "What is this?", "seed": 0}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "gpt_image_test"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "gpt_image_edit"}},
    }
    entry = comfy.run(prompt)
    files = comfy.files(entry)
    assert len(files) == 3 and all(f.is_file() for f in files)  # 1 merge + a batch of 2 edits
    assert entry["outputs"]["4"]["text"][0]  # Describe's answer is UI output
    assert offline.stats["requests"] == 1 + 2 + 1 + 1  # the edit's batch of 2 is 2 requests
    for f in files:  # ComfyUI writes the prompt and workflow into the PNG: no key there
        chunks = Image.open(f).text
        assert "prompt" in chunks and "workflow" in chunks
        assert all(CANARY not in value for value in chunks.values())
    assert CANARY not in json.dumps(entry)
    mine = [e["data"] for e in _events(comfy) if e["type"] == "progress_text" and e["data"]["node"] in ("1", "2", "3", "4")]
    assert any(d["text"].startswith("Done: 2 image(s)") for d in mine if d["node"] == "1"), mine[-5:]
    assert any(d["node"] == "4" and d["text"] == entry["outputs"]["4"]["text"][0] for d in mine)
    bars = [e["data"] for e in _events(comfy) if e["type"] == "progress" and e["data"]["node"] == "1"]
    assert bars and bars[-1]["value"] == bars[-1]["max"], bars


def _prepare_workflow(comfy: Comfy, prompt: dict) -> int:
    """Point every GPT node at the test server with a fresh seed (ComfyUI caches results across
    prompts: an unchanged node would not send again); give LoadImage nodes an input file.
    Returns how many GPT nodes there are."""
    ours = 0
    for node in prompt.values():
        inputs = node.get("inputs", {})
        if node.get("class_type") in NAMES:
            ours += 1
            inputs.update(backend="remote", base_url="", seed=secrets.randbelow(2**31))
        if node.get("class_type") in ("LoadImage", "LoadImageMask") and isinstance(inputs.get("image"), str):
            target = comfy.base / "input" / inputs["image"]
            shipped = next((p for p in (ROOT / "workflows" / inputs["image"], ROOT / "workflows" / "inputs" / inputs["image"]) if p.is_file()), None)
            if shipped:
                shutil.copy(shipped, target)
            elif not target.exists():
                Image.new("RGBA", (512, 384), (40, 120, 200, 255)).save(target)
    return ours


@pytest.mark.parametrize("path", sorted((ROOT / "workflows" / "api").glob("*.json")), ids=lambda p: p.name)
def test_shipped_workflows_run(comfy, offline, path):
    prompt = json.loads(path.read_text(encoding="utf-8"))
    ours = _prepare_workflow(comfy, prompt)
    twin = path.parent.parent / path.name
    workflow = json.loads(twin.read_text(encoding="utf-8")) if twin.is_file() else None
    offline.reset()
    entry = comfy.run(prompt, workflow)
    files = comfy.files(entry)
    assert all(f.is_file() for f in files)
    assert offline.stats["requests"] >= ours > 0
    for f in files:
        if f.suffix == ".png":
            assert all(CANARY not in v for v in Image.open(f).text.values())


def test_four_independent_nodes_run_concurrently(comfy, offline):
    offline.reset()
    offline.latency = 1.0
    try:
        prompt = {}
        for i in range(4):
            prompt[str(10 + i)] = _t2i(f"parallel {uuid.uuid4().hex}")  # unique: never a cache hit
            prompt[str(20 + i)] = {"class_type": "PreviewImage", "inputs": {"images": [str(10 + i), 0]}}
        start = time.monotonic()
        entry = comfy.run(prompt)
        elapsed = time.monotonic() - start
    finally:
        offline.latency = 0.0
    stamps = {m[0]: m[1]["timestamp"] for m in entry["status"]["messages"]}
    inside = (stamps["execution_success"] - stamps["execution_start"]) / 1000
    print(f"\nfour TextToImage nodes, 1 s server latency each: {elapsed:.2f} s wall, {inside:.2f} s inside ComfyUI")
    assert offline.stats["requests"] == 4 and len(comfy.files(entry)) == 4
    assert elapsed < 3.0, f"{elapsed:.2f} s: the four requests did not overlap (serially they take 4 s)"


def test_cancel_interrupts_within_a_second(comfy, offline):
    offline.reset()
    offline.latency = 5.0
    try:
        prompt_id = comfy.queue({"1": _t2i(f"slow {uuid.uuid4().hex}"), "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
        while offline.stats["requests"] == 0:
            time.sleep(0.05)
        time.sleep(0.3)
        start = time.monotonic()
        comfy.post("/interrupt", {})
        entry = comfy.wait(prompt_id, timeout=10)
        elapsed = time.monotonic() - start
    finally:
        offline.latency = 0.0
    kinds = [m[0] for m in entry["status"]["messages"]]
    print(f"\ncancel honoured in {elapsed:.2f} s")
    assert "execution_interrupted" in kinds and "execution_error" not in kinds, kinds
    assert elapsed < 1.5


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files via /proc")
def test_prompts_do_not_leak_connections(comfy, offline):
    """ComfyUI runs each prompt in a new event loop; the pack closes that loop's connections."""
    def open_files() -> int:
        return len(os.listdir(f"/proc/{comfy.pid}/fd"))

    def prompt() -> dict:  # JSON answers leave keep-alive connections in the pool (streams may not)
        graph = {}
        for i in range(3):
            graph[str(i + 1)] = _t2i(f"leak {uuid.uuid4().hex}", stream=False)
            graph[str(i + 11)] = {"class_type": "PreviewImage", "inputs": {"images": [str(i + 1), 0]}}
        return graph

    comfy.run(prompt())
    before = open_files()
    for _ in range(5):
        comfy.run(prompt())
    assert open_files() - before <= 2, (before, open_files())
    assert "Task was destroyed but it is pending" not in comfy.log.read_text(errors="replace")


def test_errors_show_their_message(comfy, offline):
    offline.reset()
    offline.inject("refusal")
    entry = comfy.run({"1": _t2i(f"refuse {uuid.uuid4().hex}"), "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}, expect="error")
    error = dict(entry["status"]["messages"])["execution_error"]
    assert error["node_type"] == "GPTImage2TextToImage" and "refused" in error["exception_message"]
    assert error["exception_type"].endswith("ContentFilterError") and not entry["outputs"]
    assert CANARY not in json.dumps(entry)


@pytest.fixture(scope="module")
def comfy_page(comfy):
    """ComfyUI's own frontend in headless Chromium, with our nodes registered."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - no usable browser here
            pytest.skip(f"no headless Chromium ({type(exc).__name__}); set CHROMIUM to a chromium binary")
        try:
            page = browser.new_page()
            page.goto(comfy.url)
            page.wait_for_function("!!(window.app && window.app.graph && window.LiteGraph && LiteGraph.registered_node_types['GPTImage2TextToImage'])", timeout=60000)
            yield page
        finally:
            browser.close()


@pytest.mark.browser
def test_new_nodes_start_with_a_fixed_seed(comfy_page):
    """web/gpt_image_nodes.js: a new node's seed control is "fixed"; a saved choice still wins."""
    result = comfy_page.evaluate("""async (names) => {
        const control = (n) => n.widgets.find((w) => w.name === "control_after_generate").value;
        const fresh = names.map((t) => { const n = LiteGraph.createNode(t); app.graph.add(n); return control(n); });
        const node = app.graph.nodes.find((n) => n.type === names[0]);
        node.widgets.find((w) => w.name === "control_after_generate").value = "randomize";
        await app.loadGraphData(JSON.parse(JSON.stringify(app.graph.serialize())));
        return {fresh, reloaded: control(app.graph.nodes.find((n) => n.type === names[0]))};
    }""", list(NAMES))
    assert result == {"fresh": ["fixed"] * 4, "reloaded": "randomize"}


@pytest.mark.browser
def test_ui_workflows_open_in_comfyuis_own_frontend(comfy_page):
    """Every UI-format file in workflows/ loads in ComfyUI's real frontend, and the prompt the
    frontend makes from it equals our API-format twin: widget order, links, values."""
    files = sorted((ROOT / "workflows").glob("*.json"))
    assert files
    for path in files:
        made = comfy_page.evaluate("""async (wf) => {
            await app.loadGraphData(wf);
            return (await app.graphToPrompt()).output;
        }""", json.loads(path.read_text()))
        twin = json.loads((ROOT / "workflows" / "api" / path.name).read_text())
        assert set(made) == set(twin), path.name
        for nid, node in twin.items():
            assert made[nid]["class_type"] == node["class_type"], (path.name, nid)
            for name, value in node["inputs"].items():
                assert made[nid]["inputs"].get(name) == value, (path.name, nid, name, made[nid]["inputs"].get(name), value)
