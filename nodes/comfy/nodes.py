"""The four ComfyUI node classes, made from ``node_types.NODE_TYPES`` by one factory.

Thin glue: INPUT_TYPES from the specs, IMAGE/MASK tensors to PIL and back, the spec's ``run``
with ComfyUI's progress/cancel hooks. No HTTP here; the requests are the core's.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import errors
from ..node_types import CATEGORY, NODE_TYPES, ClientPool, InputSpec, NodeType, RunContext
from . import runtime, tensors

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "make_node_class", "input_types", "client_pool", "set_client_pool", "run_node"]

_pool: ClientPool | None = None
_pool_lock = threading.Lock()


def client_pool() -> ClientPool:
    """The process-wide pool (one client per backend/base URL/model), made on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ClientPool()
        return _pool


def set_client_pool(pool: ClientPool | None) -> None:
    """Use another pool (tests, embedding hosts); None makes a fresh default one on next use."""
    global _pool
    with _pool_lock:
        _pool = pool


def _client_for(backend: str, base_url: str, model: str) -> Any:
    client = client_pool()(backend, base_url, model)
    runtime.close_at_loop_end(client)
    return client


def _widget(spec: InputSpec) -> tuple[Any, dict[str, Any]]:
    options: dict[str, Any] = {"tooltip": spec.tooltip}
    if spec.kind in ("IMAGE", "MASK"):
        return spec.kind, options
    if spec.default is not None:
        options["default"] = spec.default
    if spec.advanced:
        options["advanced"] = True  # frontends that support it fold these away
    if spec.kind == "CHOICE":
        return list(spec.choices), options
    if spec.kind == "INT":
        options.update(min=spec.minimum if spec.minimum is not None else 0, step=1)
        if spec.maximum is not None:
            options["max"] = spec.maximum
        if spec.name == "seed":
            # Explicit (the frontend also infers it from the name); web/ sets its mode to "fixed".
            options["control_after_generate"] = True
    elif spec.kind == "STRING":
        options["multiline"] = spec.multiline
    return spec.kind, options


def input_types(spec: NodeType) -> dict[str, dict[str, Any]]:
    return {
        "required": {s.name: _widget(s) for s in spec.inputs if not s.optional},
        "optional": {s.name: _widget(s) for s in spec.inputs if s.optional},
        "hidden": {"unique_id": "UNIQUE_ID"},
    }


def _convert_inputs(spec: NodeType, inputs: dict[str, Any]) -> dict[str, Any]:
    kinds = {s.name: s.kind for s in spec.inputs}
    out: dict[str, Any] = {}
    for name, value in inputs.items():
        if value is None or name not in kinds:
            continue
        if kinds[name] == "IMAGE":
            out[name] = tensors.image_to_pils(value, name)
        elif kinds[name] == "MASK":
            out[name] = tensors.mask_to_pils(value, name)
        else:
            out[name] = value
    return out


def _summary(outputs: tuple, seconds: float) -> str:
    first = outputs[0]
    if isinstance(first, str):  # Describe: the answer itself stays on the node
        return first
    size = f" ({first[0].width}x{first[0].height})" if first else ""
    return f"Done: {len(first)} image(s){size} in {seconds:.1f} s."


async def run_node(spec: NodeType, unique_id: str | None, inputs: dict[str, Any]) -> tuple:
    """Run one node: convert, call the spec's run with ComfyUI's hooks, convert back."""
    host = runtime.hooks()
    values = _convert_inputs(spec, inputs)
    # node_types sends one request per image of an "image" batch (Edit, Describe).
    requests = len(values["image"]) if isinstance(values.get("image"), list) else 1
    per_request = int(values.get("n") or 1) if any(o.kind == "IMAGE" for o in spec.outputs) else 0
    progress = runtime.NodeProgress(host, unique_id, requests, per_request)
    ctx = RunContext(client_for=_client_for, on_progress=progress, cancel_check=progress.cancelled)
    try:
        outputs = await spec.run(ctx, **values)
    except errors.CancelledError:
        progress.fail("Cancelled.")
        interrupt = host.interrupt_error()
        if interrupt is None:
            raise
        raise interrupt from None  # ComfyUI shows it as "interrupted", not as a failure
    except errors.GPTImageError as exc:
        progress.fail(f"Failed: {exc}")
        raise
    result = tuple(
        tensors.pils_to_image(value, out.name) if out.kind == "IMAGE" else value
        for out, value in zip(spec.outputs, outputs)
    )
    progress.finish(_summary(outputs, progress.elapsed()))
    return result


def make_node_class(spec: NodeType) -> type:
    """A classic-API ComfyUI node class for one spec."""
    # A node without an IMAGE output (Describe) is an output node, so a graph that only
    # describes still runs; its text is also returned as UI output (visible in /history).
    is_output = not any(o.kind == "IMAGE" for o in spec.outputs)

    async def execute(self: Any, unique_id: str | None = None, **inputs: Any) -> Any:
        result = await run_node(spec, unique_id, inputs)
        return {"ui": {"text": [result[0]]}, "result": result} if is_output else result

    return type(spec.name, (), {
        "__doc__": spec.description,
        "__module__": __name__,
        "INPUT_TYPES": classmethod(lambda cls: input_types(spec)),
        "RETURN_TYPES": tuple(o.kind for o in spec.outputs),
        "RETURN_NAMES": tuple(o.name for o in spec.outputs),
        "OUTPUT_TOOLTIPS": tuple(o.tooltip for o in spec.outputs),
        "FUNCTION": "execute",
        "CATEGORY": CATEGORY,
        "DESCRIPTION": spec.description,
        "OUTPUT_NODE": is_output,
        # API_NODE marks Comfy Org's account-billed nodes (yellow, listed under "API nodes",
        # documented as needing a comfy.org login); these use the user's own key instead.
        "API_NODE": False,
        "SPEC": spec,
        "execute": execute,
    })


NODE_CLASS_MAPPINGS: dict[str, type] = {name: make_node_class(spec) for name, spec in NODE_TYPES.items()}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: spec.display_name for name, spec in NODE_TYPES.items()}
