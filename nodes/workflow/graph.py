"""A workflow in ComfyUI's API format: loading, editing, validation and ordering.

API format is ``{"<node id>": {"class_type": str, "inputs": {name: value | [src_id, slot]},
"_meta": {"title": str}}}``; a two-item list ``["3", 0]`` is a link to output 0 of node 3.
Everything wrong with a graph is found here, before any request is sent.
"""

from __future__ import annotations

import copy
import heapq
import json
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import InvalidInputError
from ..node_types import InputSpec
from ..protocol import validate_prompt
from .catalog import LINK_KINDS, is_ours, known_types, node_info

__all__ = ["WorkflowError", "Workflow", "load_workflow", "as_link", "node_sort_key"]


class WorkflowError(InvalidInputError):
    """A workflow that can't run. The message names the node: ``node 3 (GPTImage2EditImage): ...``."""

    def __init__(self, message: str, node_id: str | None = None, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.problems = problems or [message]


def as_link(value: Any) -> tuple[str, int] | None:
    """``(source node id, output index)`` if ``value`` is an API-format link, else None."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        src, slot = value
        if isinstance(src, (str, int)) and not isinstance(src, bool) and isinstance(slot, int) and not isinstance(slot, bool):
            return str(src), slot
    return None


def node_sort_key(node_id: str) -> tuple:
    """Numeric ids in numeric order, then the rest (ComfyUI ids are usually "1", "2", ...)."""
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_literal(spec: InputSpec, value: Any) -> Any:
    """The value, normalised; raises ValueError saying what is wrong with it."""
    kind = spec.kind
    if kind in LINK_KINDS:
        raise ValueError(f"needs a link from a node's {kind} output, not a literal value")
    if kind == "INT":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not _is_int(value):
            raise ValueError(f"must be a whole number, not {value!r}")
        if spec.minimum is not None and value < spec.minimum or spec.maximum is not None and value > spec.maximum:
            raise ValueError(f"must be from {spec.minimum} to {spec.maximum}, not {value}")
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
    elif kind == "CHOICE":
        if value not in spec.choices:
            raise ValueError(f"must be one of {', '.join(map(repr, spec.choices))}, not {value!r}")
    elif not isinstance(value, str):
        raise ValueError(f"must be text, not {type(value).__name__} {value!r}")
    return value


def coerce_text(spec: InputSpec, text: str) -> Any:
    """A value typed as text (command line, CSV) converted to what the input takes."""
    if spec.kind == "INT":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"must be a whole number, not {text!r}") from None
    if spec.kind == "BOOLEAN":
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"must be true or false, not {text!r}")
    return text


def _links_ok(out_kind: str, in_kind: str) -> bool:
    return out_kind == in_kind or (in_kind == "CHOICE" and out_kind == "STRING")


class Workflow:
    """An API-format graph. ``nodes`` maps node id -> ``{"class_type", "inputs"[, "_meta"]}``."""

    def __init__(self, nodes: Mapping[str, Any], layout: Mapping[str, Any] | None = None) -> None:
        if not isinstance(nodes, Mapping):
            raise WorkflowError("A workflow must be a JSON object of nodes (ComfyUI API format).")
        self.nodes: dict[str, dict] = {}
        for node_id, node in nodes.items():
            nid = str(node_id)
            if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
                raise WorkflowError(f"node {nid}: has no class_type; this is not an API-format node.", nid)
            inputs = node.get("inputs", {})
            if not isinstance(inputs, Mapping):
                raise WorkflowError(f"node {nid} ({node['class_type']}): 'inputs' must be an object.", nid)
            self.nodes[nid] = {**copy.deepcopy(dict(node)), "inputs": copy.deepcopy(dict(inputs))}
        #: Node positions/sizes kept from a UI-format file, so to_ui() keeps the user's layout.
        self.layout: dict[str, Any] = dict(layout or {})

    # -- reading -------------------------------------------------------------------------

    def copy(self) -> "Workflow":
        return Workflow(self.nodes, self.layout)

    def to_api(self) -> dict:
        return copy.deepcopy(self.nodes)

    def to_ui(self) -> dict:
        from .uiformat import api_to_ui

        return api_to_ui(self.nodes, layout=self.layout)

    def label(self, node_id: str) -> str:
        node = self.nodes.get(node_id)
        return f"node {node_id} ({node['class_type']})" if node else f"node {node_id}"

    def title(self, node_id: str) -> str:
        node = self.nodes[node_id]
        return str((node.get("_meta") or {}).get("title") or node["class_type"])

    def links(self, node_id: str) -> list[tuple[str, str, int]]:
        """``(input name, source id, output index)`` for each linked input of a node."""
        out = []
        for name, value in self.nodes[node_id]["inputs"].items():
            link = as_link(value)
            if link is not None:
                out.append((name, *link))
        return out

    def consumers(self, node_id: str) -> list[str]:
        return [nid for nid in self.nodes if any(src == node_id for _, src, _ in self.links(nid))]

    def needed(self, targets: Iterable[str] | None = None) -> set[str]:
        """Nodes to run: the targets (default: every output node and every unknown node, so
        it gets reported) and everything they depend on."""
        if targets is None:
            roots = [nid for nid, n in self.nodes.items() if (info := node_info(n["class_type"])) is None or info.output_node]
        else:
            roots = [self.resolve_node(str(t)) for t in targets]
        seen: set[str] = set()
        todo = deque(roots)
        while todo:
            nid = todo.popleft()
            if nid in seen or nid not in self.nodes:
                continue
            seen.add(nid)
            todo.extend(src for _, src, _ in self.links(nid))
        return seen

    def resolve_node(self, ref: str) -> str:
        """A node id from an id, a title or a class name (``EditImage`` finds GPTImage2EditImage)."""
        if ref in self.nodes:
            return ref
        for match in (
            lambda nid: self.title(nid) == ref,
            lambda nid: self.title(nid).lower() == ref.lower() or self.nodes[nid]["class_type"].lower() == ref.lower(),
            lambda nid: self.nodes[nid]["class_type"].lower() == "gptimage2" + ref.lower(),
        ):
            found = [nid for nid in self.nodes if match(nid)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise WorkflowError(f"{ref!r} matches several nodes ({', '.join(self.label(n) for n in found)}); use a node id.")
        raise WorkflowError(f"There is no node {ref!r} in the workflow (ids: {', '.join(sorted(self.nodes, key=node_sort_key))}).")

    # -- editing -------------------------------------------------------------------------

    def set_input(self, node_id: str, name: str, value: Any) -> None:
        """Set a literal input. Text is converted to the input's type (INT, BOOLEAN), so values
        from a command line or a CSV file work as typed."""
        nid = self.resolve_node(str(node_id))
        info = node_info(self.nodes[nid]["class_type"])
        spec = info.input(name) if info else None
        if info is not None and spec is None:
            names = ", ".join(s.name for s in info.inputs)
            raise WorkflowError(f"{self.label(nid)}: has no input {name!r} (inputs: {names}).", nid)
        if spec is not None and isinstance(value, str):
            try:
                value = coerce_text(spec, value)
            except ValueError as exc:
                raise WorkflowError(f"{self.label(nid)}: input {name!r} {exc}.", nid) from None
        self.nodes[nid]["inputs"][name] = value

    def apply_overrides(self, overrides: Mapping[str, Any] | None) -> None:
        """``{"NODE.INPUT": value}``; NODE as in :meth:`resolve_node`."""
        for key, value in (overrides or {}).items():
            ref, dot, name = str(key).rpartition(".")
            if not dot or not ref or not name:
                raise WorkflowError(f"Override {key!r} must look like NODE.INPUT, e.g. 3.prompt.")
            self.set_input(ref, name, value)

    # -- checking ------------------------------------------------------------------------

    def validate(self, nodes: Iterable[str] | None = None) -> list[str]:
        """Raise WorkflowError listing every problem of the given nodes (default: all); else
        return them in :meth:`order` (the sort that finds cycles, so callers need not sort again)."""
        check = sorted(self.nodes if nodes is None else nodes, key=node_sort_key)
        problems: list[tuple[str, str]] = []
        for nid in check:
            problems += [(nid, f"{self.label(nid)}: {p}") for p in self._node_problems(nid)]
        if not problems:
            return self.order(check)  # raises on a cycle
        text = problems[0][1] if len(problems) == 1 else "\n".join(["The workflow has problems:"] + [f"- {p}" for _, p in problems])
        raise WorkflowError(text, problems[0][0], [p for _, p in problems])

    def _node_problems(self, nid: str) -> list[str]:
        node = self.nodes[nid]
        info = node_info(node["class_type"])
        if info is None:
            return [f"unknown node type {node['class_type']!r}; this runner knows {', '.join(known_types())}."]
        problems = []
        inputs = node["inputs"]
        for name in inputs:
            if info.input(name) is None:
                problems.append(f"unknown input {name!r} (inputs: {', '.join(s.name for s in info.inputs)}).")
        for spec in info.inputs:
            value = inputs.get(spec.name)
            if value is None:
                if not spec.optional and (spec.kind in LINK_KINDS or spec.default is None):
                    what = "a link from an IMAGE output" if spec.kind == "IMAGE" else "a value"
                    problems.append(f"required input {spec.name!r} is missing; it needs {what}.")
                continue
            link = as_link(value)
            if link is None:
                try:
                    value = inputs[spec.name] = check_literal(spec, value)
                    if spec.name == "prompt" and is_ours(node["class_type"]):
                        validate_prompt(value)
                except InvalidInputError as exc:  # the protocol's own wording
                    problems.append(f"input {spec.name!r}: {exc}")
                except ValueError as exc:
                    problems.append(f"input {spec.name!r} {exc}.")
                continue
            problems += self._link_problems(spec, *link)
        return problems

    def _link_problems(self, spec: InputSpec, src: str, slot: int) -> list[str]:
        where = f"input {spec.name!r} links to"
        if src not in self.nodes:
            return [f"{where} node {src}, which is not in the workflow."]
        src_info = node_info(self.nodes[src]["class_type"])
        if src_info is None:
            return []  # the source node reports its own unknown type
        if not 0 <= slot < len(src_info.outputs):
            return [f"{where} output {slot} of {self.label(src)}, which has {len(src_info.outputs)} output(s)."]
        out = src_info.outputs[slot]
        if not _links_ok(out.kind, spec.kind):
            want = "STRING" if spec.kind == "CHOICE" else spec.kind
            return [f"{where} output {slot} ({out.name}, {out.kind}) of {self.label(src)}, but it takes {want}."]
        return []

    def order(self, nodes: Iterable[str] | None = None) -> list[str]:
        """The nodes in an order where every node comes after its inputs; raises on a cycle."""
        todo = set(self.nodes if nodes is None else nodes)
        deps = {nid: {src for _, src, _ in self.links(nid) if src in todo} for nid in todo}
        users: dict[str, list[str]] = {nid: [] for nid in todo}
        for nid, srcs in deps.items():
            for src in srcs:
                users[src].append(nid)
        # Kahn's algorithm, smallest ready id first: linear-ish, so a huge graph can't stall.
        ready = [(node_sort_key(n), n) for n, d in deps.items() if not d]
        heapq.heapify(ready)
        waiting = {nid: len(d) for nid, d in deps.items()}
        out: list[str] = []
        while ready:
            nid = heapq.heappop(ready)[1]
            out.append(nid)
            for other in users[nid]:
                waiting[other] -= 1
                if not waiting[other]:
                    heapq.heappush(ready, (node_sort_key(other), other))
        if len(out) < len(todo):
            done = set(out)
            cycle = self._find_cycle({n for n in todo if n not in done}, deps)
            path = " -> ".join(cycle + cycle[:1])
            raise WorkflowError(f"{self.label(cycle[0])}: is part of a cycle ({path}); a node can't depend on its own output.", cycle[0])
        return out

    @staticmethod
    def _find_cycle(left: set[str], deps: dict[str, set[str]]) -> list[str]:
        start = min(left, key=node_sort_key)
        path, seen = [start], {start: 0}
        while True:
            nxt = min(deps[path[-1]] & left, key=node_sort_key)
            if nxt in seen:
                cycle = list(reversed(path[seen[nxt]:]))  # in the direction data flows
                first = cycle.index(min(cycle, key=node_sort_key))
                return cycle[first:] + cycle[:first]
            seen[nxt] = len(path)
            path.append(nxt)


def load_workflow(source: "str | Path | Mapping[str, Any] | Workflow") -> Workflow:
    """A workflow from a file path, a JSON string or a dict, in API or UI format."""
    if isinstance(source, Workflow):
        return source.copy()
    data: Any = source
    if isinstance(source, (str, Path)) and not (isinstance(source, str) and source.lstrip().startswith("{")):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise WorkflowError(f"The workflow file {path} does not exist.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise WorkflowError(f"The workflow file {path} could not be read ({exc}).") from None
        data = _parse(text, str(path))
    elif isinstance(source, str):
        data = _parse(source, "The workflow")
    if not isinstance(data, Mapping):
        raise WorkflowError("A workflow must be a JSON object (ComfyUI API or UI format).")
    if isinstance(data.get("nodes"), list):
        from .uiformat import ui_to_api

        api, layout = ui_to_api(data, with_layout=True)
        return Workflow(api, layout)
    if isinstance(data.get("prompt"), Mapping) and "class_type" not in data["prompt"]:
        data = data["prompt"]  # the body ComfyUI's /prompt endpoint takes
    return Workflow(data)


def _parse(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:  # "[[[[...": nested deeper than any workflow, and than the parser's stack
        raise WorkflowError(f"{what} is nested too deeply to be a workflow.") from None
    except ValueError as exc:
        raise WorkflowError(f"{what} is not valid JSON (line {getattr(exc, 'lineno', '?')}: {getattr(exc, 'msg', exc)}).") from None
