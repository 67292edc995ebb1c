"""The canvas's step functions: form values <-> chain, what each block shows, import/export.

Pure functions of plain data (no Gradio objects), so build_demo() only wires components to them
and the tests call them directly. A block's view is a dict of component name -> properties,
turned into ``gr.update(**props)`` by app.py.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from ..nodes.protocol import MAX_N, QUALITIES, SIZES
from .chain import (
    MAX_STEPS, STEP_TYPES, ChainError, api_to_chain, chain_to_api, input_choices, max_inputs,
    ref_value, value_ref,
)
from .runner import chain_usage
from .session import CanvasSession, import_upload

__all__ = [
    "FIELDS", "SLOT_PARTS", "WORKFLOWS_DIR", "read_form", "slot_views", "status_markdown",
    "usage_text", "attach_upload", "load_chain", "export_chain", "example_files", "chain_summary",
    "result_views",
]

#: Editable fields of a block, in the order the form lists them (inputs of every event).
FIELDS = ("type", "prompt", "size", "quality", "n", "seed", "inputs")
#: Everything a block shows (outputs of structural events).
SLOT_PARTS = ("group", "title", *FIELDS, "upload", "preview", "status", "gallery", "text")
WORKFLOWS_DIR = Path(__file__).resolve().parent.parent / "workflows"


def read_form(chain: list[dict], values: Sequence[Any]) -> list[dict]:
    """The chain with each visible block's edits (flat ``values``, FIELDS per slot) applied."""
    out = copy.deepcopy(chain)
    width = len(FIELDS)
    for k, step in enumerate(out):
        row = dict(zip(FIELDS, values[k * width:(k + 1) * width]))
        if not row:
            break
        if row.get("type") in STEP_TYPES:
            step["type"] = row["type"]
        step["prompt"] = str(row.get("prompt") or "")
        step["size"] = row.get("size") if row.get("size") in SIZES else step["size"]
        step["quality"] = row.get("quality") if row.get("quality") in QUALITIES else step["quality"]
        for name, top in (("n", MAX_N), ("seed", 2**53)):
            try:
                step[name] = min(top, max(1 if name == "n" else 0, int(row.get(name))))
            except (TypeError, ValueError):
                pass
        chosen = row.get("inputs")
        if isinstance(chosen, str):
            chosen = [chosen]
        if isinstance(chosen, list):
            refs = [r for r in (value_ref(v, step["uploads"]) for v in chosen) if r is not None and r.get("step", -1) < k]
            limit = max_inputs(step["type"])
            # One-input steps: the newest choice replaces the old one; MultiMerge keeps the order.
            step["inputs"] = refs[-1:] if limit == 1 else refs[:limit]
    return out


def usage_text(usage: dict) -> str:
    if not usage:
        return "usage: not reported"
    parts = [f"{usage.get('total_tokens', '?')} tokens"]
    for name in ("prompt_tokens", "completion_tokens"):
        if name in usage:
            parts.append(f"{name.split('_')[0]} {usage[name]}")
    return "usage: " + " · ".join(parts)


def status_markdown(step: dict) -> str:
    result = step.get("result") or {}
    status = result.get("status")
    elapsed = float(result.get("elapsed") or 0.0)
    if status is None:
        return "_Not run yet._"
    if status == "queued":
        return "**Queued**…"
    if status == "running":
        lines = result.get("progress") or []
        tail = "\n".join(f"> {line}  " for line in lines) if lines else "> sending request…"
        return f"**Running** · {elapsed:.1f} s\n\n{tail}"
    if status == "error":
        return f"**Error:** {result.get('error') or 'failed'}"
    if status == "skipped":
        return f"**Skipped:** {result.get('error') or 'an earlier step failed.'}"
    usage = usage_text(result.get("usage") or {})
    if status == "cached":
        return f"**From cache** (no new request) · {usage}"
    return f"**Done** in {elapsed:.1f} s · {usage}"


def _image_of(chain: list[dict], ref: dict) -> list[str]:
    if "upload" in ref:
        return [ref["upload"]] if ref["upload"] and Path(ref["upload"]).is_file() else []
    images = ((chain[ref["step"]].get("result") or {}).get("images")) or []
    pick = ref.get("pick")
    if pick is None:
        return list(images)
    return images[pick:pick + 1]


def _slot_view(chain: list[dict], k: int, full: bool) -> dict[str, dict]:
    if k >= len(chain):
        return {"group": {"visible": False}}
    step = chain[k]
    kind = step["type"]
    image_step = kind != "Describe"
    choices = input_choices(chain, k)
    values = [v for v in (ref_value(r, step["uploads"]) for r in step["inputs"]) if v]
    result = step.get("result") or {}
    view = {
        "group": {"visible": True},
        "title": {"value": f"### Step {k + 1} · {kind}"},
        "prompt": {"label": "Question" if kind == "Describe" else "Prompt"},
        "size": {"visible": image_step}, "quality": {"visible": image_step}, "n": {"visible": image_step},
        "inputs": {"choices": choices, "value": values, "visible": kind != "TextToImage",
                   "label": "Inputs, in order (2 or more)" if kind == "MultiMerge" else "Input image"},
        "upload": {"visible": kind != "TextToImage", "value": None},
        "preview": {"value": [p for r in step["inputs"] for p in _image_of(chain, r)] or None, "visible": kind != "TextToImage"},
        "status": {"value": status_markdown(step)},
        "gallery": {"value": result.get("images") or None, "visible": image_step},
        "text": {"value": result.get("text") or "", "label": "Description" if kind == "Describe" else "Model's text"},
    }
    if full:
        for name in ("type", "prompt", "size", "quality", "n", "seed"):
            view.setdefault(name, {})["value"] = step[name]
    return view


def slot_views(chain: list[dict], full: bool = True) -> list[dict[str, dict]]:
    """Every slot's view; ``full`` also rewrites the editable values (after a structural edit)."""
    return [_slot_view(chain, k, full) for k in range(MAX_STEPS)]


def result_views(chain: list[dict], changed: set[int]) -> dict[int, dict[str, dict]]:
    """Only what a run changes in the given blocks: status, images, text, input previews."""
    out = {}
    for k in sorted(changed):
        if k < len(chain):
            view = _slot_view(chain, k, False)
            out[k] = {name: view[name] for name in ("status", "gallery", "text")}
    for k in range(len(chain)):  # later blocks' input previews follow new results
        if chain[k]["inputs"] and any(r.get("step") in changed for r in chain[k]["inputs"]):
            out.setdefault(k, {})["preview"] = _slot_view(chain, k, False)["preview"]
    return out


def chain_summary(chain: list[dict]) -> str:
    usage = chain_usage(chain)
    ran = sum(1 for s in chain if (s.get("result") or {}).get("status") in ("done", "cached"))
    return f"{len(chain)} step(s), {ran} with results · chain {usage_text(usage)}"


def attach_upload(chain: list[dict], k: int, path: str | None, session: CanvasSession) -> list[dict]:
    """Store an uploaded image as PNG in the session and feed it to block k (appended, in order)."""
    if not path or k >= len(chain):
        return chain
    png = str(import_upload(path, session.inputs))
    out = copy.deepcopy(chain)
    step = out[k]
    if png not in step["uploads"]:
        step["uploads"].append(png)
    limit = max_inputs(step["type"])
    ref = {"upload": png}
    if limit == 1:
        step["inputs"] = [ref]
    elif ref not in step["inputs"] and len(step["inputs"]) < limit:
        step["inputs"].append(ref)
    return out


def load_chain(source: str | Path, session: CanvasSession) -> tuple[list[dict], list[str]]:
    """A chain from a workflow file (API or UI format). LoadImage files found next to the
    workflow (or in its ``input``/``inputs`` folder) are copied into the session as PNG."""
    from ..nodes.workflow import load_workflow

    path = Path(source)
    api = load_workflow(path).to_api()
    here = path.resolve().parent
    dirs = [session.inputs, here, here / "input", here / "inputs", WORKFLOWS_DIR / "input", WORKFLOWS_DIR / "inputs"]
    chain, notes = api_to_chain(api, [d for d in dirs if d.is_dir()])
    for step in chain:
        moved = {}
        for p in step["uploads"]:
            if Path(p).parent != session.inputs.resolve():
                moved[p] = str(import_upload(p, session.inputs))
        step["uploads"] = [moved.get(p, p) for p in step["uploads"]]
        for ref in step["inputs"]:
            if "upload" in ref:
                ref["upload"] = moved.get(ref["upload"], ref["upload"])
    return chain, notes


def export_chain(chain: list[dict], session: CanvasSession, name: str = "chain") -> list[str]:
    """Write the chain as ComfyUI API-format and UI-format JSON, plus the uploaded PNGs that its
    LoadImage nodes name (copy those into ComfyUI's input folder)."""
    from ..nodes.workflow import api_to_ui

    if not chain:
        raise ChainError("The chain is empty: add a step first.")
    api = chain_to_api(chain)
    folder = session.root / "export"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    api_path = folder / f"{name}.api.json"
    ui_path = folder / f"{name}.json"
    api_path.write_text(json.dumps(api, indent=2, ensure_ascii=False), encoding="utf-8")
    ui_path.write_text(json.dumps(api_to_ui(api), indent=2, ensure_ascii=False), encoding="utf-8")
    files = [str(api_path), str(ui_path)]
    for step in chain:
        for p in step["uploads"]:
            if Path(p).is_file() and not (folder / Path(p).name).exists():
                files.append(str(shutil.copy2(p, folder / Path(p).name)))
    return files


def example_files() -> list[Path]:
    """The example workflows shipped in ``workflows/api/`` (API format; the UI-format twins in
    ``workflows/`` open too). ComfyUI lists ``workflows/*.json`` as templates, so the API twins
    live one folder down, out of its template browser."""
    return sorted((WORKFLOWS_DIR / "api").glob("*.json"))
