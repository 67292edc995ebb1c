"""The canvas's chain model: a plain list of step dicts, and its ComfyUI API-workflow twin.

A step is ``{"type", "prompt", "size", "quality", "n", "seed", "inputs", "uploads", "result"}``.
``inputs`` are references, in order: ``{"upload": "/abs/path.png"}`` or ``{"step": k, "pick": i}``
(``pick`` None = the whole batch of step k). Step references always point to earlier steps, so a
chain is a DAG by construction; structural edits remap or drop references to keep it that way.
Nothing here imports Gradio: every function is pure and unit-tested.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

from ..nodes.node_types import MAX_MERGE_INPUTS, NODE_TYPES
from ..nodes.protocol import DEFAULT_DESCRIBE_QUESTION
from ..nodes.workflow.files import resolve_inside
from ..nodes.workflow.graph import Workflow, WorkflowError, as_link

__all__ = [
    "STEP_TYPES", "CLASS_OF", "TYPE_OF", "MAX_STEPS", "ChainError", "new_step", "add_step",
    "remove_step", "duplicate_step", "move_step", "output_count", "input_choices", "ref_value",
    "value_ref", "max_inputs", "chain_to_api", "api_to_chain", "dependencies", "step_node_id",
]

#: Short names shown on blocks -> node class names in workflows.
CLASS_OF = {
    "TextToImage": "GPTImage2TextToImage",
    "EditImage": "GPTImage2EditImage",
    "MultiMerge": "GPTImage2MultiMerge",
    "Describe": "GPTImage2Describe",
}
TYPE_OF = {v: k for k, v in CLASS_OF.items()}
STEP_TYPES = tuple(CLASS_OF)
#: The page has this many block slots (see app.py for why slots, not gr.render).
MAX_STEPS = 8
_OUTPUT_NODES = {"PreviewImage", "SaveImage"}
#: Per node class, the inputs that say how a request is sent (backend, base_url, model, stream).
_CONNECTION = {cls: tuple(s.name for s in NODE_TYPES[cls].inputs if s.advanced) for cls in CLASS_OF.values()}


class ChainError(ValueError):
    """A chain or workflow that the canvas cannot show or run; the message says why."""


def new_step(kind: str, prompt: str | None = None) -> dict[str, Any]:
    if kind not in CLASS_OF:
        raise ChainError(f"Unknown step type {kind!r}; use one of {', '.join(STEP_TYPES)}.")
    defaults = NODE_TYPES[CLASS_OF[kind]].defaults()
    return {
        "type": kind,
        "prompt": prompt if prompt is not None else (DEFAULT_DESCRIBE_QUESTION if kind == "Describe" else ""),
        "size": defaults.get("size", "auto"), "quality": defaults.get("quality", "auto"),
        "n": int(defaults.get("n", 1)), "seed": int(defaults.get("seed", 0)),
        "inputs": [], "uploads": [], "result": None,
    }


def max_inputs(kind: str) -> int:
    return {"TextToImage": 0, "MultiMerge": MAX_MERGE_INPUTS}.get(kind, 1)


def output_count(chain: list[dict], k: int) -> int:
    """How many images step k produces (0 for Describe): n per request times its batch."""
    step = chain[k]
    if step["type"] == "Describe":
        return 0
    n = max(1, int(step.get("n") or 1))
    if step["type"] != "EditImage" or not step["inputs"]:
        return n
    ref = step["inputs"][0]
    batch = output_count(chain, ref["step"]) if "step" in ref and ref.get("pick") is None else 1
    return n * max(1, batch)


def _last_image_step(chain: list[dict], before: int) -> int | None:
    for k in range(before - 1, -1, -1):
        if chain[k]["type"] != "Describe":
            return k
    return None


def add_step(chain: list[dict], kind: str) -> list[dict]:
    """Append a step; an image-taking step is fed from the latest image step by default."""
    if len(chain) >= MAX_STEPS:
        raise ChainError(f"A chain holds at most {MAX_STEPS} steps.")
    step = new_step(kind)
    src = _last_image_step(chain, len(chain))
    if src is not None and max_inputs(kind):
        pick = 0 if output_count(chain, src) > 1 else None
        step["inputs"] = [{"step": src, "pick": pick}]
    return [*copy.deepcopy(chain), step]


def _remap(chain: list[dict], new_index: Mapping[int, int | None]) -> list[dict]:
    """Rewrite step references after a structural edit; drop any that no longer point back."""
    out = []
    for pos, step in enumerate(chain):
        step = copy.deepcopy(step)
        refs = []
        for ref in step["inputs"]:
            if "step" in ref:
                target = new_index.get(ref["step"])
                if target is None or target >= pos:
                    continue
                ref = {**ref, "step": target}
            refs.append(ref)
        step["inputs"] = refs
        out.append(step)
    return out


def remove_step(chain: list[dict], k: int) -> list[dict]:
    rest = chain[:k] + chain[k + 1:]
    return _remap(rest, {i: (i if i < k else i - 1) for i in range(len(chain)) if i != k})


def duplicate_step(chain: list[dict], k: int) -> list[dict]:
    if len(chain) >= MAX_STEPS:
        raise ChainError(f"A chain holds at most {MAX_STEPS} steps.")
    twin = {**copy.deepcopy(chain[k]), "result": None}
    grown = chain[: k + 1] + [twin] + chain[k + 1:]
    mapping = {i: (i if i <= k else i + 1) for i in range(len(chain))}
    return _remap(grown, mapping)  # the twin, at k+1, reads what the original reads


def move_step(chain: list[dict], k: int, delta: int) -> list[dict]:
    j = k + delta
    if not (0 <= k < len(chain) and 0 <= j < len(chain)):
        return copy.deepcopy(chain)
    order = list(range(len(chain)))
    order.insert(j, order.pop(k))
    return _remap([chain[i] for i in order], {old: new for new, old in enumerate(order)})


def dependencies(chain: list[dict], k: int) -> set[int]:
    """Step k and every step it reads from, transitively."""
    seen, todo = set(), [k]
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo += [r["step"] for r in chain[i]["inputs"] if "step" in r]
    return seen


# -- input references <-> dropdown values ------------------------------------------------------

def ref_value(ref: Mapping[str, Any], uploads: list[str]) -> str | None:
    if "upload" in ref:
        return f"upload:{uploads.index(ref['upload'])}" if ref["upload"] in uploads else None
    pick = ref.get("pick")
    return f"step:{ref['step']}:{'all' if pick is None else pick}"


def value_ref(value: str, uploads: list[str]) -> dict[str, Any] | None:
    kind, _, rest = value.partition(":")
    try:
        if kind == "upload":
            return {"upload": uploads[int(rest)]}
        if kind == "step":
            k, _, pick = rest.partition(":")
            return {"step": int(k), "pick": None if pick == "all" else int(pick)}
    except (ValueError, IndexError):
        pass
    return None


def input_choices(chain: list[dict], k: int) -> list[tuple[str, str]]:
    """(label, value) pairs step k may read: its uploads, then each earlier image step's images."""
    uploads = chain[k]["uploads"]
    choices = [(f"Upload {j + 1} ({Path(p).name[:24]})", f"upload:{j}") for j, p in enumerate(uploads)]
    for i in range(k):
        count = output_count(chain, i)
        if count == 1:
            choices.append((f"Step {i + 1} ({chain[i]['type']})", f"step:{i}:all"))
        elif count > 1:
            choices += [(f"Step {i + 1} · image {p + 1}", f"step:{i}:{p}") for p in range(count)]
            choices.append((f"Step {i + 1} · all {count} images", f"step:{i}:all"))
    return choices


# -- chain -> ComfyUI API workflow -------------------------------------------------------------

def step_node_id(k: int) -> str:
    return str(k + 1)


def chain_to_api(chain: list[dict], connection: Mapping[str, str] | None = None, *, only: set[int] | None = None) -> dict[str, dict]:
    """The chain as a ComfyUI API-format workflow.

    Step k is node ``k+1``; LoadImage (uploads, by file name in the input folder),
    ImageFromBatch (a pick out of a batch) and PreviewImage (one per image step) follow.
    ``connection`` (backend/base_url/model) is written into every step when running, so a change
    of backend is a change of inputs and never reuses a cached result; exports leave it out.
    ``only`` (step indices, closed under their inputs) builds just those steps, so running one
    step never fails on a later, unfinished one; the default is every step.
    """
    wf: dict[str, dict] = {}
    aux: dict[tuple, str] = {}
    next_id = len(chain) + 1

    def node(key: tuple, class_type: str, inputs: dict) -> list:
        nonlocal next_id
        if key not in aux:
            aux[key] = str(next_id)
            wf[aux[key]] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": class_type}}
            next_id += 1
        return [aux[key], 0]

    def link(ref: Mapping[str, Any], k: int) -> list:
        if "upload" in ref:
            name = Path(ref["upload"]).name
            return node(("load", name), "LoadImage", {"image": name})
        src = ref["step"]
        if not 0 <= src < k:
            raise ChainError(f"Step {k + 1} reads step {src + 1}, which does not come before it.")
        if chain[src]["type"] == "Describe":
            raise ChainError(f"Step {k + 1} reads step {src + 1}, a Describe step, which has no image.")
        if only is not None and src not in only:
            raise ChainError(f"Step {k + 1} reads step {src + 1}, which is not part of this run.")
        pick = ref.get("pick")
        if pick is None or output_count(chain, src) == 1:
            return [step_node_id(src), 0]
        return node(("pick", src, pick), "ImageFromBatch", {"image": [step_node_id(src), 0], "batch_index": int(pick), "length": 1})

    built = [k for k in range(len(chain)) if only is None or k in only]
    for k in built:
        step = chain[k]
        kind, refs = step["type"], step["inputs"]
        inputs: dict[str, Any] = {}
        if kind == "Describe":
            inputs["question"] = step["prompt"] or DEFAULT_DESCRIBE_QUESTION
        else:
            inputs.update(prompt=step["prompt"], size=step["size"], quality=step["quality"], n=int(step["n"]))
        inputs["seed"] = int(step.get("seed") or 0)
        if kind in ("EditImage", "Describe"):
            if not refs:
                raise ChainError(f"Step {k + 1} ({kind}) needs an input image: upload one or pick an earlier step.")
            inputs["image"] = link(refs[0], k)
        elif kind == "MultiMerge":
            if len(refs) < 2:
                raise ChainError(f"Step {k + 1} (MultiMerge) needs at least 2 input images, in order.")
            for i, ref in enumerate(refs[:MAX_MERGE_INPUTS]):
                inputs[f"image_{i + 1}"] = link(ref, k)
        for name in _CONNECTION[CLASS_OF[kind]]:
            if connection and connection.get(name) not in (None, ""):
                inputs[name] = connection[name]
        wf[step_node_id(k)] = {"class_type": CLASS_OF[kind], "inputs": inputs, "_meta": {"title": f"Step {k + 1} · {kind}"}}
    for k in built:
        if chain[k]["type"] != "Describe":
            node(("preview", k), "PreviewImage", {"images": [step_node_id(k), 0]})
    return dict(sorted(wf.items(), key=lambda kv: int(kv[0])))


# -- ComfyUI API workflow -> chain -------------------------------------------------------------

def api_to_chain(workflow: Mapping[str, Mapping], input_dirs: list[Path]) -> tuple[list[dict], list[str]]:
    """A chain from an API-format workflow, and notes on anything it had to leave out.

    ``input_dirs`` are searched, in order, for LoadImage files; a missing file leaves the
    step's upload slot empty with a note, so the rest of the chain still opens.
    """
    try:
        wf = Workflow({k: v for k, v in workflow.items() if isinstance(v, Mapping) and isinstance(v.get("class_type"), str)})
    except WorkflowError as exc:  # a node whose inputs are not an object
        raise ChainError(str(exc)) from None
    try:
        order = wf.order()  # dependency order, ties broken by numeric id (a stable reading order)
    except WorkflowError:
        raise ChainError("The workflow has a cycle, so it cannot be shown as a chain.") from None
    nodes = wf.nodes
    notes: list[str] = []
    steps = [nid for nid in order if nodes[nid]["class_type"] in TYPE_OF]
    if not steps:
        raise ChainError("The workflow has none of the four GPT Image 2 nodes, so there is no chain to show.")
    if len(steps) > MAX_STEPS:
        raise ChainError(f"The workflow has {len(steps)} GPT Image 2 nodes; the canvas shows at most {MAX_STEPS}.")
    index = {nid: k for k, nid in enumerate(steps)}
    for nid, n in nodes.items():
        if nid not in index and n["class_type"] not in _OUTPUT_NODES | {"LoadImage", "ImageFromBatch"}:
            notes.append(f"Node {nid} ({n['class_type']}) has no block on the canvas and was left out.")
    chain: list[dict] = []

    def resolve(link: list, k: int) -> dict | None:
        src = nodes.get(str(link[0]))
        if src is None:
            return None
        cls = src["class_type"]
        if cls == "LoadImage":
            name = str(src["inputs"].get("image", ""))
            for folder in input_dirs:
                try:  # as the executor reads it: "cat.png [input]" is cat.png, nothing outside folder
                    path = resolve_inside(folder, name, "image")
                except ValueError:
                    continue
                if path.is_file():
                    return {"upload": str(path)}
            notes.append(f"Step {k + 1}: the image {name!r} was not found; upload it again.")
            return None
        if cls == "ImageFromBatch":
            inner = src["inputs"].get("image")
            ref = resolve(inner, k) if as_link(inner) else None
            if ref is not None and "step" in ref:
                ref["pick"] = int(src["inputs"].get("batch_index", 0))
            return ref
        if str(link[0]) in index and index[str(link[0])] < k:
            return {"step": index[str(link[0])], "pick": None}
        notes.append(f"Step {k + 1} reads node {link[0]} ({cls}), which has no block; that input was left out.")
        return None

    for k, nid in enumerate(steps):
        n = nodes[nid]
        kind, values = TYPE_OF[n["class_type"]], n.get("inputs", {})
        step = new_step(kind)
        if kind == "Describe":
            step["prompt"] = str(values.get("question") or DEFAULT_DESCRIBE_QUESTION)
        else:
            step["prompt"] = str(values.get("prompt", ""))
            step["size"] = str(values.get("size", step["size"]))
            step["quality"] = str(values.get("quality", step["quality"]))
            step["n"] = int(values.get("n", 1) or 1)
        step["seed"] = int(values.get("seed", 0) or 0)
        names = ["image"] if kind in ("EditImage", "Describe") else [f"image_{i}" for i in range(1, MAX_MERGE_INPUTS + 1)] if kind == "MultiMerge" else []
        for name in names:
            value = values.get(name)
            ref = resolve(value, k) if as_link(value) else None
            if ref is not None:
                if "upload" in ref and ref["upload"] not in step["uploads"]:
                    step["uploads"].append(ref["upload"])
                step["inputs"].append(ref)
        chain.append(step)
    # A pick into a single-image step means "that image": normalise to the whole (one-image) batch.
    for step in chain:
        for ref in step["inputs"]:
            if "step" in ref and ref["pick"] is not None and output_count(chain, ref["step"]) <= 1:
                ref["pick"] = None
    return chain, notes
