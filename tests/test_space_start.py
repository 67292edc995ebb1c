"""The app starts as a Hugging Face Space would start it: a fresh venv holding only the pinned
Gradio (the README's ``sdk_version``) and requirements.txt, the repository copied into a folder
not named like the package, then ``python <app_file>``. Slow (a real pip install; pip's wheel
cache makes reruns quick); needs PyPI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from testkit import free_port

ROOT = Path(__file__).resolve().parent.parent
SKIP_PARTS = {".git", "test-artifacts", "__pycache__", ".pytest_cache", ".hypothesis", ".gradio", "build", "dist", "venv", ".venv"}

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    if not match:
        return {}
    pairs = (line.split(":", 1) for line in match.group(1).splitlines() if ":" in line)
    return {k.strip(): v.strip().strip("'\"") for k, v in pairs}


def gradio_pin() -> str:
    """The Gradio a Space installs: README's sdk_version, which must match the tested pin."""
    match = re.search(r'canvas\s*=\s*\["gradio==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert match, "pyproject's canvas extra must pin gradio==X"
    tested = match.group(1)
    meta = front_matter()
    if meta:
        assert meta.get("sdk") == "gradio", "README front matter must say sdk: gradio"
        assert meta.get("sdk_version") == tested, f"README sdk_version {meta.get('sdk_version')} != tested gradio {tested}"
    return tested


def copy_repo(dest: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP_PARTS or n.endswith(".egg-info") or n.endswith(".pyc")}
    shutil.copytree(ROOT, dest, ignore=ignore)


def test_space_starts_from_a_fresh_venv(tmp_path):
    requirements = ROOT / "requirements.txt"
    assert requirements.is_file(), "requirements.txt (the Space's and the ComfyUI pack's) is missing"
    app_file = front_matter().get("app_file", "app.py")
    pin = gradio_pin()
    app = tmp_path / "app"  # a Space's folder is not named gpt_image_nodes
    copy_repo(app)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, f"gradio=={pin}", "-r", str(app / "requirements.txt")], check=True, cwd=app, timeout=900)
    installed = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True).stdout.lower()
    assert "torch==" not in installed and "gpt-image-nodes" not in installed

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPT_IMAGE_", "PYTHON", "VIRTUAL_ENV", "GRADIO_"))}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), SPACE_ID="test/gpt-image-canvas",
               GPT_IMAGE_CONFIG=str(tmp_path / "no-config.json"), GRADIO_ANALYTICS_ENABLED="False")
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen([str(py), app_file], cwd=app, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the app did not answer within 120 s"
                time.sleep(0.5)
        from gradio_client import Client

        client = Client(url, verbose=False)
        gallery, _, _ = client.predict("a small red square", "1024x1024", "low", 1, 0, api_name="/text_to_image")
        assert Path(gallery[0]["image"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # offline backend, in the Space
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
