"""GPT Image 2 Nodes: ComfyUI entry point.

ComfyUI imports this folder as a package under whatever name it was cloned as. Only relative
imports, nothing heavy at import time (torch and ComfyUI modules are imported when a node runs).
"""

from .nodes.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
