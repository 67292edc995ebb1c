"""The Hugging Face Space's app_file: build the block canvas and serve it.

The Space's folder is this repository, which is itself the ``gpt_image_nodes`` package (ComfyUI
imports it by folder name), so the package is loaded from here under its own name: nothing has
to be pip-installed besides requirements.txt. Locally: ``python app.py`` or
``gpt-image-nodes canvas``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = "gpt_image_nodes"


def load_package() -> object:
    """This folder as the ``gpt_image_nodes`` package (whatever the folder is called)."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    load_package()
    from gpt_image_nodes.ui.launch import launch_kwargs, prepare

    demo = prepare()
    # Spaces set GRADIO_SERVER_NAME/PORT; launch() reads them.
    demo.launch(**launch_kwargs())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
