"""Regenerate docs/canvas.png: a real 3-step chain run on the offline backend, in Chromium.

    python docs/make_canvas_screenshot.py   (needs gradio, playwright and /usr/bin/chromium)
"""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import sync_playwright

OUT = Path(__file__).resolve().parent / "canvas.png"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    os.environ.pop("GPT_IMAGE_API_KEY", None)
    os.environ["GPT_IMAGE_CONFIG"] = "/nonexistent/gpt-image-config.json"
    from gpt_image_nodes.ui.launch import serve

    demo, url = serve(port=7899)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.goto(url)
            page.wait_for_selector("#add-TextToImage")
            steps = [("TextToImage", "a lighthouse at dusk, orange sky over a blue sea"),
                     ("EditImage", "make it a vintage sepia photo and mirror it"), ("Describe", None)]
            for k, (kind, prompt) in enumerate(steps):
                page.click(f"#add-{kind}")
                page.wait_for_selector(f"#step-{k}", state="visible")
                if prompt:
                    page.fill(f"#step-{k}-prompt textarea", prompt)
            page.click("#run-all")
            page.wait_for_function("(document.querySelector('#chain-status')?.innerText || '').includes('Done:')", timeout=60_000)
            page.wait_for_selector("#step-1-gallery img")
            page.wait_for_timeout(500)
            bottom = page.evaluate("(() => { const r = document.querySelector('#step-2').getBoundingClientRect(); return r.bottom + window.scrollY + 12; })()")
            page.screenshot(path=str(OUT), full_page=True, clip={"x": 0, "y": 0, "width": 1360, "height": bottom})
            browser.close()
    finally:
        demo.close()
        demo.canvas_store.close_all()
    print(OUT)


if __name__ == "__main__":
    main()
