"""The ComfyUI node pack: four nodes generated from ``node_types.NODE_TYPES``.

Importing this is cheap (no torch, no ComfyUI modules, no network): ComfyUI's hooks are
looked up when a node runs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

#: The frontend extension (seed widget defaults to "fixed"), relative to the pack's root folder,
#: which is where ComfyUI resolves the WEB_DIRECTORY of the root __init__.py.
WEB_DIRECTORY = "./nodes/comfy/web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
