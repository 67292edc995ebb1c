"""The hosted canvas (SPACE_ID set, offline backend) under a visitor's eyes and hands: a key typed
in a session never shows in the page, its config or API info; the base-URL allow-list holds
through the page event; the public API can't send the server's key elsewhere; oversized and bomb
uploads are refused; and 20 concurrent API clients each get only their own results.

The page's private events are driven the way the browser drives them (Gradio's queue protocol
over HTTP: join, then read the event stream), so what a visitor's browser receives is checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from gpt_image_nodes.nodes import errors  # noqa: E402
from gpt_image_nodes.nodes.backend import shared_offline_server  # noqa: E402
from gpt_image_nodes.nodes.offline import OfflineServer  # noqa: E402
from gpt_image_nodes.ui.connection import check_base_url  # noqa: E402
from gpt_image_nodes.ui.session import SessionStore  # noqa: E402
from gpt_image_nodes.ui.steps import attach_upload  # noqa: E402
from testkit import png_header_only  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*(silent_downcasting|copy keyword).*")

CANARY = "sk-canary-typed-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:24]


@pytest.fixture(scope="module")
def canvas(start_canvas):
    """The canvas in this process, hosted (SPACE_ID), with no key: the offline backend."""
    with start_canvas(SPACE_ID="tester/gpt-image-canvas") as (demo, url):
        yield demo, url.rstrip("/")


@pytest.fixture(scope="module")
def client(canvas):
    return gradio_client.Client(canvas[1], verbose=False)


def settings_event(demo) -> dict:
    """The page's "Use these settings" event: the only one the key box feeds."""
    config = demo.get_config_file()
    key_id = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "api-key")
    return next(d for d in config["dependencies"] if key_id in d["inputs"] and d.get("targets"))


def browser_event(url: str, dep: dict, data: list, session: str) -> tuple[bool, dict, str]:
    """Run a page event as the browser does; returns (success, output, every byte received)."""
    joined = httpx.post(f"{url}/gradio_api/queue/join", json={
        "data": data, "fn_index": dep["id"], "trigger_id": dep["targets"][0][0], "session_hash": session, "event_data": None}, timeout=10)
    assert joined.status_code == 200, joined.text
    received = [joined.text]
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=20) as stream:
        for line in stream.iter_lines():
            received.append(line)
            if line.startswith("data:") and "process_completed" in line:
                message = json.loads(line[5:])
                return bool(message["success"]), message["output"], "\n".join(received)
    raise AssertionError("the event stream ended without a result")


# -- a key typed in a session --------------------------------------------------------------------

def test_a_typed_key_never_reaches_the_page_config_or_api_info(canvas):
    demo, url = canvas
    dep = settings_event(demo)
    ok, output, received = browser_event(url, dep, [CANARY, "", "", None], "visitor-1")
    assert ok, output
    assert "key you entered" in " ".join(str(v) for v in output["data"])  # the banner says so...
    assert CANARY not in received  # ...but the key never goes back to the browser
    held = demo.state_holder["visitor-1"]  # it is kept server side, in this session only
    assert any(CANARY in json.dumps(held[c], default=str) for c in dep["inputs"] if c in held)
    pages = [httpx.get(url + path, params=params, timeout=10)
             for path, params in (("/", {}), ("/config", {}), ("/config", {"session_hash": "visitor-1"}),
                                  ("/gradio_api/info", {}), ("/gradio_api/info", {"all_endpoints": "true"}))]
    assert all(r.status_code == 200 for r in pages)
    for page in pages:
        assert CANARY not in page.text
    assert CANARY not in json.dumps(demo.get_config_file(), default=str)
    # Another visitor's session holds nothing of it.
    ok, output, received = browser_event(url, dep, ["", "", "", None], "visitor-2")
    assert ok and "Offline backend" in " ".join(str(v) for v in output["data"])  # no key here: offline
    assert CANARY not in received


# -- the base-URL allow-list, hosted --------------------------------------------------------------

REFUSED = [
    "http://10.1.2.3", "http://192.168.0.10:8080", "http://172.16.0.1", "http://127.0.0.1:9", "http://localhost:9",
    "http://169.254.169.254/latest/meta-data", "http://[::1]:9", "http://0.0.0.0:9", "http://2130706433:9",
    "http://0x7f.1:9", "http://127.1:9", "http://[::ffff:127.0.0.1]:9", "http://api.yisu.com@127.0.0.1:9",
    "http://LOCALHOST.:9", "https://api.yisu.com.evil.example", "http://[fe80::1]:9",
]


def test_private_loopback_and_link_local_base_urls_are_refused_through_the_page(canvas, monkeypatch):
    demo, url = canvas
    dep = settings_event(demo)
    for bad in REFUSED:
        ok, output, _ = browser_event(url, dep, ["", bad, "", None], "visitor-urls")
        assert not ok and "may not send requests" in output["error"], (bad, output)
    ok, output, _ = browser_event(url, dep, ["", "https://api.yisu.com/v1", "", None], "visitor-urls")
    assert ok, output
    # The operator's allow-list opens exactly the hosts it names.
    monkeypatch.setenv("GPT_IMAGE_ALLOWED_HOSTS", "10.1.2.3, localhost")
    for fine in ("http://10.1.2.3", "http://localhost:9"):
        ok, output, _ = browser_event(url, dep, ["", fine, "", None], "visitor-urls")
        assert ok, (fine, output)
    for still_bad in ("http://127.0.0.1:9", "http://169.254.169.254", "http://192.168.0.10"):
        ok, output, _ = browser_event(url, dep, ["", still_bad, "", None], "visitor-urls")
        assert not ok, still_bad


def test_a_wildcard_allow_list_never_opens_private_addresses():
    env = {"SPACE_ID": "x/y", "GPT_IMAGE_ALLOWED_HOSTS": "*", "GPT_IMAGE_CONFIG": "/nonexistent"}
    for bad in [u for u in REFUSED if "evil.example" not in u]:
        with pytest.raises(errors.ConfigurationError):
            check_base_url(bad, env)
    assert check_base_url("http://93.184.216.34/v1", env) == "http://93.184.216.34"  # a public address: allowed


# -- the public API uses the server's own connection -----------------------------------------------

def test_the_public_api_never_sends_the_servers_key_to_a_workflows_base_url(canvas, client, monkeypatch):
    """A workflow's node may carry base_url: through /run_workflow that would send the Space's
    secret key to any host (the visitor's own server, or 169.254.169.254)."""
    attacker = OfflineServer(api_key=CANARY).start()  # answers only when sent the server's key
    try:
        monkeypatch.setenv("GPT_IMAGE_API_KEY", CANARY)
        monkeypatch.setenv("GPT_IMAGE_BASE_URL", "http://127.0.0.1:9")  # the server's configured gateway
        wf = {"1": {"class_type": "GPTImage2TextToImage", "inputs": {"prompt": "a red fox", "size": "1024x1024", "quality": "low",
                                                                      "backend": "remote", "base_url": attacker.url, "stream": False}}}
        with pytest.raises(Exception, match="base_url") as info:
            client.predict(json.dumps(wf), [], api_name="/run_workflow")
        assert CANARY not in str(info.value)
        assert attacker.stats["requests"] == 0
    finally:
        attacker.stop()


# -- uploads ---------------------------------------------------------------------------------------

UPLOADS = [
    ("bomb-30000x30000", lambda: png_header_only(30000, 30000), "megapixels"),
    ("bomb-9000x9000", lambda: png_header_only(9000, 9000), "megapixels"),  # below Pillow's own guard: ours refuses it
    ("text-named-png", lambda: b"hello\n", "not a supported image"),
    ("zero-bytes", lambda: b"", "empty"),
]


@pytest.mark.parametrize("case", UPLOADS, ids=[c[0] for c in UPLOADS])
def test_bad_uploads_to_the_public_api_are_refused(case, canvas, client, tmp_path):
    name, make, needle = case
    path = tmp_path / "upload.png"
    path.write_bytes(make())
    good = tmp_path / "good.png"
    Image.new("RGB", (16, 16), "red").save(good)
    before = shared_offline_server().stats["requests"]
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        client.predict(gradio_client.handle_file(str(path)), "what is it?", api_name="/describe")
    # Our loader's message, not Gradio's "Could not preprocess" (the input is a plain file).
    assert needle in str(info.value) and "preprocess" not in str(info.value), str(info.value)
    with pytest.raises(Exception) as info:  # gr.File: no Gradio image check in front of ours
        client.predict([gradio_client.handle_file(str(good)), gradio_client.handle_file(str(path))], "merge", "auto", "auto", 1, 0, api_name="/multi_merge")
    assert "image 2" in str(info.value), str(info.value)
    summary, gallery = client.predict(json.dumps({"1": {"class_type": "LoadImage", "inputs": {"image": "upload.png"}},
                                                  "2": {"class_type": "GPTImage2Describe", "inputs": {"image": ["1", 0]}}}),
                                      [gradio_client.handle_file(str(path))], api_name="/run_workflow")
    assert "upload.png" in summary["errors"]["1"] and summary["requests"] == 0 and gallery == []
    assert time.monotonic() - start < 10
    assert shared_offline_server().stats["requests"] == before  # nothing was sent
    text, _ = client.predict(gradio_client.handle_file(str(good)), "what is it?", api_name="/describe")
    assert "red" in text.lower()  # the server is fine afterwards


def test_an_upload_over_the_cap_is_refused_by_the_server(canvas, client):
    _, url = canvas
    big = b"\x89PNG\r\n\x1a\n" + os.urandom(21 * 2**20)
    response = httpx.post(f"{url}/gradio_api/upload", files={"files": ("big.png", big, "image/png")}, timeout=30)
    assert response.status_code == 413, (response.status_code, response.text[:200])
    assert httpx.get(f"{url}/config", timeout=10).status_code == 200  # and it goes on serving


def test_bad_uploads_into_a_canvas_block_are_refused_and_leave_nothing(tmp_path):
    store = SessionStore(tmp_path / "sessions")
    session = store.get("visitor")
    chain = [{"type": "EditImage", "prompt": "x", "inputs": [], "uploads": []}]
    for name, make, _ in UPLOADS + [("over-50mib-cap", lambda: b"\x89PNG\r\n\x1a\n" + bytes(51 * 2**20), "MiB")]:
        src = tmp_path / f"{name}.png"
        src.write_bytes(make())
        with pytest.raises(errors.InvalidInputError):
            attach_upload(chain, 0, str(src), session)
    assert list(session.inputs.iterdir()) == []
    store.close_all()


# -- 20 concurrent API clients ---------------------------------------------------------------------

def workflow_for(name: str) -> dict:
    """A short chain on the visitor's own upload: load, invert, describe."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["1", 0], "prompt": "invert the colours", "size": "auto", "quality": "low"}},
        "3": {"class_type": "GPTImage2Describe", "inputs": {"image": ["2", 0], "question": "Describe the colours."}},
    }


def test_twenty_concurrent_api_clients_each_get_only_their_own_results(canvas, tmp_path):
    """Each visitor uploads its own picture (its own size and colour) and runs a chain on it at
    the same moment as the 19 others; each must get back exactly its picture, inverted, and a
    description of that picture."""
    _, url = canvas
    visitors = 20
    rng = np.random.default_rng(7)
    colours = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(visitors)]
    sizes = [(24 + i, 20 + 2 * i) for i in range(visitors)]
    for i in range(visitors):
        Image.new("RGB", sizes[i], colours[i]).save(tmp_path / f"visitor{i}.png")
    results: dict[int, tuple] = {}
    failures: list[BaseException] = []
    barrier = threading.Barrier(visitors)
    before = shared_offline_server().stats["requests"]

    def visitor(i: int) -> None:
        try:
            own = gradio_client.Client(url, verbose=False)
            upload = gradio_client.handle_file(str(tmp_path / f"visitor{i}.png"))
            barrier.wait(timeout=30)
            summary, gallery = own.predict(json.dumps(workflow_for(f"visitor{i}.png")), [upload], api_name="/run_workflow")
            results[i] = (summary, [np.asarray(Image.open(item["image"]).convert("RGB")) for item in gallery])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    start = time.monotonic()
    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.monotonic() - start
    assert not failures, failures[:3]
    assert len(results) == visitors
    for i in range(visitors):
        summary, pictures = results[i]
        (w, h), colour = sizes[i], np.array(colours[i])
        assert summary["errors"] == {} and summary["requests"] == 2, summary
        # The gallery holds the results (the edit), not the visitor's own upload echoed back.
        assert summary["images"] == {"2": 1} and len(pictures) == 1, summary["images"]
        assert pictures[0].shape == (h, w, 3), i
        assert np.abs(pictures[0].reshape(-1, 3).mean(0) - (255 - colour)).max() < 3, i  # its own colour, inverted
        text = summary["text"]["3"][0]
        assert text.startswith(f"A {w}×{h} image"), (i, text)
    assert shared_offline_server().stats["requests"] - before == 2 * visitors
    print(f"20 concurrent /run_workflow clients: {elapsed:.1f} s")
