"""ComfyUI's UI format (the frontend's graph JSON, version 0.4) to API format and back.

UI nodes keep widget values positionally in ``widgets_values`` (the node's widget inputs in spec
order; the frontend adds a ``control_after_generate`` value right after ``seed``) and sockets in
``inputs``/``outputs`` joined by ``links`` ``[id, from_node, from_slot, to_node, to_slot, type]``.
Frontend-only nodes are resolved: Reroute and bypassed nodes pass their input through,
PrimitiveNode becomes a literal, Note/MarkdownNote and muted nodes are dropped.
"""

from __future__ import annotations

from typing import Any, Mapping

from .catalog import CONTROL_AFTER_GENERATE, LINK_KINDS, node_info, widget_names
from .graph import Workflow, WorkflowError, as_link, node_sort_key

__all__ = ["ui_to_api", "api_to_ui"]

_VIRTUAL = {"Note", "MarkdownNote"}
_MUTED, _BYPASS = 2, 4
_GAP_X, _GAP_Y, _LEFT, _TOP = 80, 60, 50, 50


def _link_table(ui: Mapping[str, Any]) -> dict[int, tuple[int, int, str]]:
    """link id -> (origin node id, origin slot, type); accepts list and object links."""
    table = {}
    for link in ui.get("links") or []:
        if isinstance(link, Mapping):
            table[int(link["id"])] = (int(link["origin_id"]), int(link["origin_slot"]), str(link.get("type", "*")))
        elif isinstance(link, (list, tuple)) and len(link) >= 5:
            table[int(link[0])] = (int(link[1]), int(link[2]), str(link[5]) if len(link) > 5 else "*")
    return table


def _widget_inputs(class_type: str, values: Any) -> dict[str, Any]:
    """Widget name -> value from ``widgets_values`` (a list, or a dict in newer exports)."""
    names = widget_names(class_type)
    if isinstance(values, Mapping):
        return {k: v for k, v in values.items() if k in names}
    out: dict[str, Any] = {}
    values = list(values or [])
    i = 0
    for name in names:
        if i >= len(values):
            break
        out[name] = values[i]
        i += 1
        if name == "seed" and i < len(values) and values[i] in CONTROL_AFTER_GENERATE:
            i += 1
    return out


def ui_to_api(ui: Mapping[str, Any], *, with_layout: bool = False) -> Any:
    """API-format nodes from a UI-format workflow; with ``with_layout`` also
    ``{node id: {"pos", "size"}}`` so a round trip keeps the user's layout."""
    if (ui.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError("This workflow uses subgraphs, which the runner does not support; unpack them in ComfyUI (or export it with 'Export (API)').")
    nodes = {int(n["id"]): n for n in ui.get("nodes") or [] if isinstance(n, Mapping) and "id" in n}
    links = _link_table(ui)

    def source(link_id: Any, hops: int = 0) -> Any:
        """An API link or a literal for a UI link, following frontend-only nodes."""
        if link_id is None or int(link_id) not in links or hops > len(nodes):
            return None
        origin, slot, kind = links[int(link_id)]
        node = nodes.get(origin)
        if node is None:
            return [str(origin), slot]  # validation names the missing node
        ntype, mode = node.get("type"), node.get("mode", 0)
        if ntype == "PrimitiveNode":
            values = node.get("widgets_values") or []
            return values[0] if values else None
        if ntype == "Reroute" or mode == _BYPASS:
            ins = [i for i in node.get("inputs") or [] if i.get("link") is not None]
            same = [i for i in ins if i.get("type") == kind] if ntype != "Reroute" else ins
            return source(same[0]["link"], hops + 1) if same else None
        if mode == _MUTED:
            return None
        return [str(origin), slot]

    api: dict[str, Any] = {}
    layout: dict[str, Any] = {}
    for nid, node in sorted(nodes.items()):
        ntype = node.get("type")
        if not isinstance(ntype, str) or ntype in _VIRTUAL or ntype in ("Reroute", "PrimitiveNode") or node.get("mode", 0) in (_MUTED, _BYPASS):
            continue
        inputs = _widget_inputs(ntype, node.get("widgets_values"))
        for slot in node.get("inputs") or []:
            name = (slot.get("widget") or {}).get("name") or slot.get("name")
            value = source(slot.get("link"))
            if value is not None:
                inputs[name] = value
        entry: dict[str, Any] = {"inputs": inputs, "class_type": ntype}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        api[str(nid)] = entry
        layout[str(nid)] = {"pos": list(node.get("pos") or [0, 0])[:2], "size": list(node.get("size") or [0, 0])[:2]}
    return (api, layout) if with_layout else api


def _depths(api: Mapping[str, Any]) -> dict[str, int]:
    """Column of each node: the longest chain of links leading into it."""
    depth = {nid: 0 for nid in api}
    for _ in range(len(api)):
        changed = False
        for nid, node in api.items():
            for value in node.get("inputs", {}).values():
                link = as_link(value)
                if link and link[0] in depth and depth[nid] < depth[link[0]] + 1:
                    depth[nid] = depth[link[0]] + 1
                    changed = True
        if not changed:
            break
    return depth


def api_to_ui(api: "Mapping[str, Any] | Workflow", *, layout: Mapping[str, Any] | None = None) -> dict:
    """A UI-format workflow ComfyUI's frontend opens, laid out left to right by dependency
    (or at the positions in ``layout``)."""
    nodes_in = api.nodes if isinstance(api, Workflow) else dict(api)
    layout = layout or {}
    ids = sorted(nodes_in, key=node_sort_key)
    next_id = max([int(i) for i in ids if i.isdigit()], default=0)
    uid: dict[str, int] = {}
    for nid in ids:
        if nid.isdigit():
            uid[nid] = int(nid)
        else:
            next_id += 1
            uid[nid] = next_id
    depth = _depths(nodes_in)
    column_y: dict[int, float] = {}
    column_w: dict[int, float] = {}
    for nid in ids:
        info = node_info(nodes_in[nid]["class_type"])
        column_w[depth[nid]] = max(column_w.get(depth[nid], 0), (info.ui_size if info else (315, 200))[0])
    column_x = {0: _LEFT}
    for d in range(1, max(depth.values(), default=0) + 1):
        column_x[d] = column_x[d - 1] + column_w.get(d - 1, 315) + _GAP_X

    ui_nodes: dict[str, dict] = {}
    order = {nid: i for i, nid in enumerate(sorted(ids, key=lambda n: (depth[n], node_sort_key(n))))}
    for nid in ids:
        node = nodes_in[nid]
        ctype, inputs = node["class_type"], node.get("inputs", {})
        info = node_info(ctype)
        size = list(info.ui_size if info else (315, 200))
        y = column_y.get(depth[nid], _TOP)
        column_y[depth[nid]] = y + size[1] + _GAP_Y
        saved = layout.get(nid) or {}
        slots: list[dict] = []
        widgets: list[Any] = []
        if info is not None:
            for spec in info.inputs:
                linked = as_link(inputs.get(spec.name)) is not None
                if spec.kind in LINK_KINDS:
                    slots.append({"name": spec.name, "type": spec.kind, "link": None})
                else:
                    value = spec.default if linked or spec.name not in inputs else inputs[spec.name]
                    widgets.append(value)
                    if spec.name == "seed":
                        widgets.append("fixed")  # never re-roll: a new seed is a new paid request
                    if linked:
                        slots.append({"name": spec.name, "type": "COMBO" if spec.kind == "CHOICE" else spec.kind, "link": None, "widget": {"name": spec.name}})
            outputs = [{"name": o.name, "type": o.kind, "links": None, "slot_index": i} for i, o in enumerate(info.outputs)]
        else:
            widgets = [v for v in inputs.values() if as_link(v) is None]
            slots = [{"name": k, "type": "*", "link": None} for k, v in inputs.items() if as_link(v) is not None]
            outputs = []
        entry = {
            "id": uid[nid], "type": ctype,
            "pos": list(saved.get("pos") or [column_x[depth[nid]], y]),
            "size": list(saved.get("size") or size) if any(saved.get("size") or []) else size,
            "flags": {}, "order": order[nid], "mode": 0,
            "inputs": slots, "outputs": outputs,
            "properties": {"Node name for S&R": ctype},
            "widgets_values": widgets,
        }
        title = (node.get("_meta") or {}).get("title")
        if title and title != ctype:
            entry["title"] = title
        ui_nodes[nid] = entry

    links: list[list] = []
    for nid in ids:
        for slot_index, slot in enumerate(ui_nodes[nid]["inputs"]):
            link = as_link(nodes_in[nid].get("inputs", {}).get(slot.get("widget", {}).get("name") or slot["name"]))
            if link is None or link[0] not in ui_nodes:
                continue
            src = ui_nodes[link[0]]
            kind = src["outputs"][link[1]]["type"] if link[1] < len(src["outputs"]) else slot["type"]
            link_id = len(links) + 1
            links.append([link_id, src["id"], link[1], ui_nodes[nid]["id"], slot_index, kind])
            slot["link"] = link_id
            if link[1] < len(src["outputs"]):
                out = src["outputs"][link[1]]
                out["links"] = (out["links"] or []) + [link_id]
    return {
        "last_node_id": max(uid.values(), default=0),
        "last_link_id": len(links),
        "nodes": [ui_nodes[nid] for nid in ids],
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "version": 0.4,
    }
