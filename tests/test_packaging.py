"""Packaging: one copy of the code in memory, registry metadata, requirements fit both hosts."""

from __future__ import annotations

import sys
from pathlib import Path

import gpt_image_nodes

ROOT = Path(__file__).resolve().parent.parent


def test_root_package_is_imported_once_under_its_own_name():
    init = str(ROOT / "__init__.py")
    names = [n for n, m in list(sys.modules.items()) if getattr(m, "__file__", None) == init]
    assert names == ["gpt_image_nodes"]
    assert Path(gpt_image_nodes.__file__).resolve() == ROOT / "__init__.py"
    core = [n for n, m in list(sys.modules.items()) if getattr(m, "__file__", "") == str(ROOT / "nodes" / "client.py")]
    assert core == ["gpt_image_nodes.nodes.client"]


def test_registry_metadata():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import pytest

        pytest.skip("tomllib needs Python 3.11")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "gpt-image-nodes"
    comfy = meta["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"]
    assert meta["project"]["scripts"]["gpt-image-nodes"] == "gpt_image_nodes.nodes.cli:main"


def test_requirements_fit_comfyui_and_spaces():
    lines = [l.split(">=")[0].split("==")[0].strip().lower() for l in (ROOT / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert set(lines) == {"httpx", "pillow", "numpy", "platformdirs"}  # no torch, no gradio


def test_space_front_matter_pins_the_tested_gradio():
    import gradio

    head = (ROOT / "README.md").read_text().split("---")[1]
    assert f"sdk_version: {gradio.__version__}" in head and "app_file: app.py" in head
