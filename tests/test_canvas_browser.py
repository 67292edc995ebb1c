"""The canvas in Debian's Chromium: build, run, re-run from cache, export, reopen; two sessions.

Screenshots go to test-artifacts/ at the repo root (git-ignored).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api")

from gpt_image_nodes.nodes.backend import shared_offline_server  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*(silent_downcasting|copy keyword).*"),
]


@pytest.fixture(scope="module")
def canvas(start_canvas):
    with start_canvas() as running:  # no key anywhere: offline
        yield running


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"canvas-{name}.png"), full_page=True)


def status(page, k: int) -> str:
    return page.inner_text(f"#step-{k}-status")


def wait_text(page, selector: str, needle: str, timeout: float = 30_000) -> None:
    page.wait_for_function("([s, n]) => (document.querySelector(s)?.innerText || '').includes(n)", arg=[selector, needle], timeout=timeout)


def open_page(browser, url: str):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_selector("#add-TextToImage")
    wait_text(page, "#banner", "backend")
    return ctx, page


def add(page, kind: str, k: int, prompt: str | None = None) -> None:
    page.click(f"#add-{kind}")
    page.wait_for_selector(f"#step-{k}", state="visible")
    if prompt is not None:
        page.fill(f"#step-{k}-prompt textarea", prompt)


def build_three(page) -> None:
    add(page, "TextToImage", 0, "a lighthouse on a cliff at dusk")
    add(page, "EditImage", 1, "make it a snowy winter night")
    add(page, "Describe", 2)
    wait_text(page, "#step-2-inputs", "Step 2")  # fed from the edit by default


def export_files(page) -> dict[str, bytes]:
    page.click("#export")
    page.wait_for_selector("#export-files a[href*='.api.json']", timeout=15_000)
    out = {}
    for link in page.query_selector_all("#export-files a[href]"):
        href = link.get_attribute("href")
        out[href.rsplit("/", 1)[-1]] = page.request.get(href).body()
    return out


def test_build_run_rerun_export_reopen(canvas, browser, tmp_path):
    demo, url = canvas
    srv = shared_offline_server()
    ctx, page = open_page(browser, url)
    assert "Offline backend" in page.inner_text("#banner")
    build_three(page)
    shot(page, "01-built")

    before = srv.stats["requests"]
    srv.latency = 1.0  # slow enough to watch progress stream into the block
    try:
        page.click("#run-all")
        wait_text(page, "#step-0-status", "Running")
        page.wait_for_function("(document.querySelector('#step-0-status')?.innerText || '').split('\\n').length > 2", timeout=10_000)
        page.wait_for_selector("#chain-status .progress-bar, #chain-status .progress-level", timeout=10_000)
        shot(page, "02-running")
        wait_text(page, "#chain-status", "Done:", timeout=60_000)
    finally:
        srv.latency = 0.0
    assert srv.stats["requests"] == before + 3
    for k in (0, 1):
        assert "Done" in status(page, k)
        page.wait_for_selector(f"#step-{k}-gallery img")
    page.wait_for_selector("#step-1-preview img")  # the edit shows the image it was fed
    description = page.input_value("#step-2-text textarea")
    assert "image" in description.lower() and len(description) > 40
    shot(page, "03-ran")

    page.click("#run-all")
    wait_text(page, "#chain-status", "0 request(s), 3 from cache")
    assert srv.stats["requests"] == before + 3  # nothing new was sent
    assert all("From cache" in status(page, k) for k in range(3))
    shot(page, "04-cached")

    files = export_files(page)
    api_name = next(n for n in files if n.endswith(".api.json"))
    ui_name = next(n for n in files if n.endswith(".json") and not n.endswith(".api.json"))
    api = json.loads(files[api_name])
    assert [api[k]["class_type"] for k in "123"] == ["GPTImage2TextToImage", "GPTImage2EditImage", "GPTImage2Describe"]
    assert api["1"]["inputs"]["prompt"] == "a lighthouse on a cliff at dusk"
    ui = json.loads(files[ui_name])
    assert {n["type"] for n in ui["nodes"]} >= {"GPTImage2TextToImage", "GPTImage2EditImage", "GPTImage2Describe"} and ui["links"]
    shot(page, "05-exported")

    for name in (api_name, ui_name):  # both formats reopen as the same chain, in a fresh session
        (tmp_path / name).write_bytes(files[name])
        page.reload()
        page.wait_for_selector("#add-TextToImage")
        assert not page.is_visible("#step-0")
        page.set_input_files("#open-file input[type=file]", str(tmp_path / name))
        page.wait_for_selector("#step-2", state="visible")
        assert page.input_value("#step-0-prompt textarea") == "a lighthouse on a cliff at dusk"
        assert page.input_value("#step-1-prompt textarea") == "make it a snowy winter night"
        wait_text(page, "#step-2-inputs", "Step 2")
    shot(page, "06-reopened")
    ctx.close()


def test_sessions_are_isolated(canvas, browser, tmp_path):
    demo, url = canvas
    srv = shared_offline_server()
    ctx_a, a = open_page(browser, url)
    add(a, "TextToImage", 0, "session A: a red kite")
    a.click("#run-all")
    wait_text(a, "#chain-status", "Done:")

    ctx_b, b = open_page(browser, url)
    assert not b.is_visible("#step-0") and "red kite" not in b.content()
    # B types a key (the offline server's own, pointed at by URL): B goes remote, A stays offline.
    b.click("#connection > button")
    b.fill("#api-key input", srv.api_key)
    b.fill("#base-url textarea, #base-url input", srv.url)
    b.click("#use-settings")
    wait_text(b, "#banner", "Remote backend")
    assert b.input_value("#api-key input") == "" and srv.api_key not in b.content()
    add(b, "TextToImage", 0, "session B: a blue boat")
    before = srv.stats["requests"]
    b.click("#run-all")
    wait_text(b, "#chain-status", "Done:")
    assert srv.stats["requests"] == before + 1  # sent with B's key
    b.wait_for_selector("#step-0-gallery img")
    # An upload feeds an edit; it is stored as PNG in B's folder only.
    add(b, "EditImage", 1, "add a lighthouse")
    Image.new("RGB", (96, 64), (20, 120, 200)).save(tmp_path / "photo.jpg", quality=90)
    b.set_input_files("#step-1-upload input[type=file]", str(tmp_path / "photo.jpg"))
    wait_text(b, "#step-1-inputs", "Upload 1")
    b.wait_for_selector("#step-1-preview img")
    shot(b, "07-session-b")
    uploads = [p for p in demo.canvas_store.root.glob("*/input/upload-*.png")]
    assert len(uploads) == 1 and uploads[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    a.click("#run-all")  # A's chain is A's: its cache, its images, its offline banner
    wait_text(a, "#chain-status", "1 from cache")
    assert "Offline backend" in a.inner_text("#banner")
    assert a.input_value("#step-0-prompt textarea") == "session A: a red kite"
    assert "blue boat" not in a.content() and srv.api_key not in a.content()
    src_a = a.get_attribute("#step-0-gallery img", "src")
    src_b = b.get_attribute("#step-0-gallery img", "src")
    assert src_a != src_b

    store = demo.canvas_store
    assert len(store) >= 2
    count = len(store)
    ctx_b.close()  # closing the tab ends B's session: its folder goes
    deadline = time.monotonic() + 10
    while len(store) >= count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(store) == count - 1
    ctx_a.close()
