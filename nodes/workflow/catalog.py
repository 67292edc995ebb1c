"""Every node type a workflow may hold: our four, plus ComfyUI's LoadImage, SaveImage,
PreviewImage and ImageFromBatch, described with the same InputSpec/OutputSpec so validation, the UI-format
converter and the executor read one table.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..node_types import NODE_TYPES, InputSpec, OutputSpec

__all__ = [
    "CORE_TYPES", "NodeInfo", "node_info", "known_types", "widget_names", "LINK_KINDS",
    "CONTROL_AFTER_GENERATE", "is_ours",
]

#: Inputs of these kinds are sockets (links only), never widgets.
LINK_KINDS = frozenset({"IMAGE", "MASK"})
#: Values ComfyUI's frontend stores right after a ``seed`` widget in ``widgets_values``.
CONTROL_AFTER_GENERATE = ("fixed", "increment", "decrement", "randomize")


@dataclass(frozen=True)
class NodeInfo:
    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    #: Runs even when nothing consumes it (ComfyUI's OUTPUT_NODE). Ours are: a Describe at the
    #: end of a chain is the whole point of the chain.
    output_node: bool
    #: Default node size in the UI format (ComfyUI frontend pixels).
    ui_size: tuple[int, int]

    def input(self, name: str) -> InputSpec | None:
        return next((s for s in self.inputs if s.name == name), None)


_IMAGE_IN = InputSpec("images", "IMAGE", "The images to save.")
CORE_TYPES: dict[str, NodeInfo] = {
    "LoadImage": NodeInfo(
        "LoadImage",
        (InputSpec("image", "STRING", "File name inside the input folder."),
         # ComfyUI's upload button is a widget too; its value ("image") means nothing here.
         InputSpec("upload", "STRING", "ComfyUI's upload widget (ignored).", default="image", optional=True)),
        (OutputSpec("IMAGE", "IMAGE", "The image (first frame), RGB."),
         OutputSpec("MASK", "MASK", "1 where the image is transparent, as ComfyUI makes it.")),
        False, (315, 314),
    ),
    "SaveImage": NodeInfo(
        "SaveImage",
        (_IMAGE_IN, InputSpec("filename_prefix", "STRING", "Files are named <prefix>_00001_.png, ...", default="ComfyUI")),
        (), True, (315, 270),
    ),
    "PreviewImage": NodeInfo("PreviewImage", (_IMAGE_IN,), (), True, (315, 246)),
    # Picks images out of a batch (e.g. one of n variants to edit further), as ComfyUI does.
    "ImageFromBatch": NodeInfo(
        "ImageFromBatch",
        (InputSpec("image", "IMAGE", "The batch."),
         InputSpec("batch_index", "INT", "First image to take (0-based).", default=0, minimum=0, maximum=4095),
         InputSpec("length", "INT", "How many images to take.", default=1, minimum=1, maximum=4096)),
        (OutputSpec("IMAGE", "IMAGE", "The picked images."),),
        False, (315, 106),
    ),
}


def _ours(name: str) -> NodeInfo:
    spec = NODE_TYPES[name]
    widgets = sum(1 for s in spec.inputs if s.kind not in LINK_KINDS)
    return NodeInfo(name, spec.inputs, spec.outputs, True, (400, 80 + 26 * widgets + (60 if any(s.multiline for s in spec.inputs) else 0)))


_ALL: dict[str, NodeInfo] = {**{name: _ours(name) for name in NODE_TYPES}, **CORE_TYPES}


def node_info(class_type: str) -> NodeInfo | None:
    return _ALL.get(class_type)


def known_types() -> list[str]:
    return list(_ALL)


def is_ours(class_type: str) -> bool:
    """One of the four API nodes (the ones that send requests and are cached)."""
    return class_type in NODE_TYPES


def widget_names(class_type: str) -> list[str]:
    """Widget inputs in the order ComfyUI's frontend stores them in ``widgets_values``
    (without the ``control_after_generate`` value that follows a seed)."""
    info = _ALL.get(class_type)
    return [] if info is None else [s.name for s in info.inputs if s.kind not in LINK_KINDS]
