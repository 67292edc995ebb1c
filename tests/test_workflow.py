"""The workflow executor against the real offline server: every shipped workflow, the cache
(memory and disk), validation before any request, LoadImage/SaveImage, concurrency, failures."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from PIL import Image

import gpt_image_nodes
from gpt_image_nodes.nodes import RetryPolicy, Timeouts
from gpt_image_nodes.nodes.node_types import ClientPool
from gpt_image_nodes.nodes.workflow import (
    Executor, ResultCache, Workflow, WorkflowError, api_to_ui, load_workflow, ui_to_api,
)
from gpt_image_nodes.nodes.workflow.catalog import is_ours

WORKFLOWS = Path(gpt_image_nodes.__file__).resolve().parent / "workflows"
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
FAST = dict(retry=RetryPolicy(max_retries=2, initial_backoff=0.02, max_backoff=0.1), timeouts=Timeouts(connect=2, read=10, write=10, total=30))


@pytest.fixture
def env(srv_env, tmp_path):
    (tmp_path / "in").mkdir()
    return srv_env


@pytest.fixture
def make(env, tmp_path):
    def make(**kw) -> Executor:
        kw.setdefault("cache", ResultCache(tmp_path / "cache"))
        return Executor(ClientPool(**FAST), input_dir=tmp_path / "in", output_dir=tmp_path / "out", **kw)
    return make


def ours(wf: Workflow) -> int:
    return sum(is_ours(n["class_type"]) for n in wf.nodes.values())


def chain() -> Workflow:
    return load_workflow(WORKFLOWS / "api" / "chain_edit_edit_describe.json")


# -- every shipped workflow ---------------------------------------------------------------------

def test_workflows_are_shipped():
    names = {p.stem for p in API_FILES}
    assert {"text_to_image", "edit_image", "describe_image", "merge_two_generated", "chain_edit_edit_describe"} <= names
    for path in API_FILES:
        kinds = {n["class_type"] for n in load_workflow(path).nodes.values()}
        assert kinds & {"SaveImage", "PreviewImage"}, path.name


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_workflow_runs_then_costs_nothing_again(path, make, env, tmp_path):
    wf = load_workflow(path)
    n = ours(wf)
    first = make().run_sync(wf)
    assert not first.errors and not first.skipped
    assert env.stats["requests"] == first.requests == n
    assert all(p.is_file() for p in first.saved)

    env.reset()
    again = make(cache=ResultCache(tmp_path / "cache"))  # fresh process-like executor, same disk folder
    ui_twin = load_workflow(WORKFLOWS / path.name)
    second = again.run_sync(ui_twin)  # the UI twin is the same graph: same keys
    assert env.stats["requests"] == second.requests == 0
    assert second.cache_hits == n
    third = again.run_sync(wf)  # memory layer
    assert env.stats["requests"] == 0 and third.cache_hits == n
    for nid, images in first.images.items():
        assert [im.tobytes() for im in images] == [im.tobytes() for im in second.images[nid]]


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_ui_twin_is_generated_from_the_api_file(path, canary_key):
    api = json.loads(path.read_text(encoding="utf-8"))
    twin = WORKFLOWS / path.name
    ui = json.loads(twin.read_text(encoding="utf-8"))
    assert ui == api_to_ui(api)
    assert ui["version"] == 0.4 and ui["last_node_id"] == max(n["id"] for n in ui["nodes"])
    assert ui["last_link_id"] == len(ui["links"])
    assert ui_to_api(ui) == api
    for node in ui["nodes"]:
        assert node["properties"]["Node name for S&R"] == node["type"]
        if "seed" in json.dumps(api[str(node["id"])]["inputs"]):
            assert "fixed" in node["widgets_values"]  # never re-roll a paid request
    for text in (path.read_text(), twin.read_text()):
        assert canary_key not in text and "api_key" not in text and "sk-" not in text


# -- the cache: only what changed is requested ----------------------------------------------------

def test_editing_a_node_reruns_it_and_its_dependents_only(make, env):
    ex = make()
    wf = chain()
    ex.run_sync(wf)
    assert env.stats["requests"] == 4
    env.reset()
    wf.set_input("3", "prompt", "rotate it")
    report = ex.run_sync(wf)
    assert env.stats["requests"] == report.requests == 2
    assert sorted(report.executed) == ["3", "4"] and report.cache_hits == 2
    env.reset()
    report = ex.run_sync(wf, overrides={"Describe.question": "What colours are in this image?"})
    assert env.stats["requests"] == 1 and report.executed == ["4"]
    env.reset()
    report = ex.run_sync(wf, overrides={"1.seed": "7"})  # text, converted to INT: a new request...
    # ...but the offline backend paints the same pixels, and downstream keys are pixel content.
    assert env.stats["requests"] == 1 and report.executed == ["1"] and report.cache_hits == 3


def test_stream_flag_is_not_part_of_the_key_and_usage_is_summed(make, env):
    ex = make()
    wf = load_workflow(WORKFLOWS / "api" / "text_to_image.json")
    report = ex.run_sync(wf, overrides={"1.stream": False})
    assert report.usage.get("total_tokens", 0) > 0
    report = ex.run_sync(wf)  # streamed or not, the same image: not bought twice
    assert env.stats["requests"] == 1 and report.cache_hits == 1 and report.usage == {}


def test_damaged_cache_entries_are_ignored_and_recomputed(make, env, tmp_path):
    wf = load_workflow(WORKFLOWS / "api" / "text_to_image.json")
    good = make().run_sync(wf)
    [entry] = (tmp_path / "cache").glob("*/*.entry")
    data = entry.read_bytes()
    for damaged in (data[: len(data) // 2], data[:100] + bytes([data[100] ^ 1]) + data[101:], b""):
        entry.write_bytes(damaged)
        env.reset()
        report = make().run_sync(wf)
        assert env.stats["requests"] == 1 and report.cache_hits == 0 and not report.errors
        assert report.images["1"][0].tobytes() == good.images["1"][0].tobytes()
    env.reset()
    assert make().run_sync(wf).cache_hits == 1 and env.stats["requests"] == 0
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_no_cache_sends_again(make, env):
    wf = load_workflow(WORKFLOWS / "api" / "text_to_image.json")
    ex = make(cache=None)
    ex.run_sync(wf)
    ex.run_sync(wf)
    assert env.stats["requests"] == 2


# -- validation: every problem named, nothing sent ------------------------------------------------

def _mutate(change):
    def apply(wf: Workflow) -> Workflow:
        change(wf.nodes)
        return wf
    return apply


INVALID = {
    "unknown type": (_mutate(lambda n: n.update({"9": {"class_type": "KSampler", "inputs": {}}})), "node 9 (KSampler): unknown node type"),
    "missing link": (_mutate(lambda n: n["2"]["inputs"].pop("image")), "node 2 (GPTImage2EditImage): required input 'image' is missing"),
    "mistyped int": (_mutate(lambda n: n["1"]["inputs"].update(n="two")), "node 1 (GPTImage2TextToImage): input 'n' must be a whole number"),
    "bad choice": (_mutate(lambda n: n["3"]["inputs"].update(size="huge")), "node 3 (GPTImage2EditImage): input 'size' must be one of"),
    "empty prompt": (_mutate(lambda n: n["2"]["inputs"].update(prompt="  ")), "node 2 (GPTImage2EditImage): input 'prompt': The prompt is empty"),
    "unknown input": (_mutate(lambda n: n["4"]["inputs"].update(promt="x")), "node 4 (GPTImage2Describe): unknown input 'promt'"),
    "literal image": (_mutate(lambda n: n["4"]["inputs"].update(image="cat.png")), "node 4 (GPTImage2Describe): input 'image' needs a link"),
    "wrong output kind": (_mutate(lambda n: n["2"]["inputs"].update(image=["1", 1])), "node 2 (GPTImage2EditImage): input 'image' links to output 1 (text, STRING)"),
    "missing node": (_mutate(lambda n: n["3"]["inputs"].update(image=["42", 0])), "node 3 (GPTImage2EditImage): input 'image' links to node 42, which is not in the workflow"),
    "missing output": (_mutate(lambda n: n["5"]["inputs"].update(images=["3", 7])), "node 5 (SaveImage): input 'images' links to output 7 of node 3"),
    "cycle": (_mutate(lambda n: n["2"]["inputs"].update(image=["3", 0])), "node 2 (GPTImage2EditImage): is part of a cycle (2 -> 3 -> 2)"),
}


@pytest.mark.parametrize("kind", list(INVALID))
def test_invalid_graphs_are_refused_before_any_request(kind, make, env):
    change, expected = INVALID[kind]
    wf = change(chain())
    with pytest.raises(WorkflowError) as info:
        make().run_sync(wf)
    assert expected in str(info.value)
    assert env.stats["requests"] == 0


def test_all_problems_are_listed_at_once():
    wf = chain()
    wf.nodes["1"]["inputs"]["n"] = 99
    wf.nodes["4"]["inputs"]["image"] = ["8", 0]
    with pytest.raises(WorkflowError) as info:
        wf.validate()
    assert len(info.value.problems) == 2 and "node 1" in str(info.value) and "node 4" in str(info.value)


def test_overrides_resolve_nodes_and_convert_text():
    wf = chain()
    wf.apply_overrides({"Mirror.prompt": "rotate it", "Describe.seed": "3", "1.stream": "false"})
    assert wf.nodes["3"]["inputs"]["prompt"] == "rotate it"
    assert wf.nodes["4"]["inputs"]["seed"] == 3 and wf.nodes["1"]["inputs"]["stream"] is False
    for bad, message in [({"EditImage.prompt": "x"}, "matches several nodes"), ({"1.n": "two"}, "must be a whole number"),
                         ({"1.colour": "red"}, "has no input 'colour'"), ({"Nope.prompt": "x"}, "no node 'Nope'"),
                         ({"prompt": "x"}, "NODE.INPUT")]:
        with pytest.raises(WorkflowError, match=message):
            wf.apply_overrides(bad)


# -- running: order, concurrency, failure, cancel -------------------------------------------------

def test_independent_branches_run_concurrently_dependent_ones_in_order(make, env):
    env.latency = 0.5
    wf = load_workflow(WORKFLOWS / "api" / "merge_two_generated.json")
    start = time.monotonic()
    report = make().run_sync(wf, targets=["1", "2"])
    assert time.monotonic() - start < 0.9 and env.stats["requests"] == 2
    assert sorted(report.executed) == ["1", "2"]
    env.latency = 0.0
    events = []
    make(cache=None).run_sync(chain(), on_event=lambda e: events.append((e.node_id, e.kind)))
    position = {key: i for i, key in enumerate(events)}
    assert position[("1", "done")] < position[("2", "start")] < position[("2", "done")] < position[("3", "start")]
    assert any(kind == "progress" for _, kind in events)


def test_a_failure_skips_dependents_and_keeps_the_rest(make, env, tmp_path):
    wf = Workflow({
        "1": {"class_type": "GPTImage2TextToImage", "inputs": {"prompt": "a red circle on blue", "size": "1024x1024", "quality": "low"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "first"}},
        "3": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["1", 0], "prompt": "make it grayscale"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "edited"}},
    })

    def on_event(event):
        if event.node_id == "1" and event.kind == "done":
            env.inject("status", 1, status=400, message="Invalid image format.")

    report = make().run_sync(wf, on_event=on_event)
    assert "Invalid image format" in report.errors["3"]
    assert report.skipped == {"4": "not run: node 3 (GPTImage2EditImage) failed"}
    assert [p.name for p in report.saved] == ["first_00001_.png"] and report.saved[0].is_file()
    assert "1" in report.outputs and not report.ok
    env.reset()
    report = make().run_sync(wf)
    assert env.stats["requests"] == 1 and report.executed == ["3"] and report.ok
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["edited_00001_.png", "first_00001_.png", "first_00002_.png"]


def test_cancel_stops_a_request_in_flight(make, env):
    env.latency = 2.0
    flag = {"stop": False}
    wf = load_workflow(WORKFLOWS / "api" / "text_to_image.json")
    start = time.monotonic()
    report = make().run_sync(wf, on_event=lambda e: flag.update(stop=e.kind == "start" or flag["stop"]), cancel_check=lambda: flag["stop"])
    assert time.monotonic() - start < 1.0
    assert report.cancelled and report.errors == {"1": "cancelled"} and "2" in report.skipped


def test_run_sync_works_inside_a_running_loop(make, env):
    async def inside():
        return make().run_sync(load_workflow(WORKFLOWS / "api" / "text_to_image.json"))
    assert asyncio.run(inside()).requests == 1


# -- files: LoadImage in, SaveImage out -------------------------------------------------------------

def _rgba(path: Path, colour=(200, 30, 30)) -> None:
    img = Image.new("RGBA", (64, 48), (*colour, 255))
    img.paste((0, 0, 0, 0), (0, 0, 32, 48))  # left half transparent
    img.save(path)


def _load_edit(name: str) -> Workflow:
    return Workflow({
        "1": {"class_type": "LoadImage", "inputs": {"image": name, "upload": "image"}},
        "2": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["1", 0], "mask": ["1", 1], "prompt": "make it grayscale", "quality": "low"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "masked"}},
    })


def test_load_image_mask_and_content_keyed_cache(make, env, tmp_path):
    _rgba(tmp_path / "in" / "pic.png")
    ex = make()
    report = ex.run_sync(_load_edit("pic.png"))
    assert env.stats["requests"] == 1 and report.ok
    [mask] = report.outputs["1"][1]
    assert mask.mode == "L" and mask.getpixel((0, 0)) == 255 and mask.getpixel((63, 0)) == 0
    assert report.images["2"][0].getpixel((60, 10)) == (200, 30, 30)  # mask 0 (opaque): kept exactly
    assert ex.run_sync(_load_edit("pic.png")).requests == 0
    _rgba(tmp_path / "in" / "pic.png", colour=(30, 30, 200))  # same name, new pixels: a new request
    assert ex.run_sync(_load_edit("pic.png")).requests == 1
    inside = str((tmp_path / "in" / "pic.png").resolve())
    assert ex.run_sync(_load_edit(inside)).requests == 0  # an absolute path inside the folder is fine


@pytest.mark.parametrize("name", ["../secret.png", "/etc/hostname", "sub/../../secret.png", "missing.png"])
def test_load_image_outside_the_input_folder_is_refused(name, make, env, tmp_path):
    _rgba(tmp_path / "secret.png")
    with pytest.raises(WorkflowError) as info:
        make().run_sync(_load_edit(name))
    assert "node 1 (LoadImage)" in str(info.value)
    assert ("outside the folder" in str(info.value)) != (name == "missing.png")
    assert env.stats["requests"] == 0


def test_saved_pngs_number_up_carry_the_graph_and_never_the_key(make, env, tmp_path, canary_key):
    wf = chain()
    ex = make()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "chain_edit_edit_describe_00003_.png").write_bytes(b"not mine")
    first, second = ex.run_sync(wf), ex.run_sync(wf)
    names = sorted(p.name for p in first.saved + second.saved)
    assert names == ["GPTImage2Describe_4_00001_.txt", "GPTImage2Describe_4_00002_.txt",
                     "chain_edit_edit_describe_00004_.png", "chain_edit_edit_describe_00005_.png"]
    assert (tmp_path / "out" / "chain_edit_edit_describe_00003_.png").read_bytes() == b"not mine"
    assert "gray" in (tmp_path / "out" / "GPTImage2Describe_4_00001_.txt").read_text()
    with Image.open(next(p for p in first.saved if p.suffix == ".png")) as img:
        assert json.loads(img.text["prompt"]) == wf.to_api() and json.loads(img.text["workflow"])["version"] == 0.4
    for path in [*first.saved, *(tmp_path / "cache").rglob("*.entry")]:
        assert canary_key.encode() not in path.read_bytes()
    assert canary_key not in json.dumps(wf.to_ui())
    bad = ex.run_sync(wf, overrides={"5.filename_prefix": "../escaped"})
    assert "outside the folder" in bad.errors["5"] and not (tmp_path / "escaped_00001_.png").exists()


def test_image_from_batch_and_targets(make, env):
    wf = Workflow({
        "1": {"class_type": "GPTImage2TextToImage", "inputs": {"prompt": "a red circle on blue", "n": 2, "quality": "low", "size": "1024x1024"}},
        "2": {"class_type": "ImageFromBatch", "inputs": {"image": ["1", 0], "batch_index": 1, "length": 1}},
        "3": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["2", 0], "prompt": "mirror it"}},
        "4": {"class_type": "GPTImage2Describe", "inputs": {"image": ["3", 0]}},
    })
    report = make().run_sync(wf, targets=["3"])
    assert env.stats["requests"] == 2 and sorted(report.executed) == ["1", "3"] and "4" not in report.outputs
    assert len(report.outputs["1"][0]) == 2 and len(report.outputs["2"][0]) == 1


# -- UI format -------------------------------------------------------------------------------------

def test_ui_format_frontend_only_nodes_and_widget_variants():
    ui = {
        "last_node_id": 8, "last_link_id": 5, "version": 0.4,
        "nodes": [
            {"id": 1, "type": "GPTImage2TextToImage", "mode": 0, "inputs": [],
             "outputs": [{"name": "images", "type": "IMAGE", "links": [1]}],
             "widgets_values": ["ignored: linked below", "1024x1024", "low", 1, 5, "randomize", "auto", "", "", True],
             "title": "Source", "pos": [120, 340], "size": [400, 250]},
            {"id": 2, "type": "PrimitiveNode", "outputs": [{"name": "STRING", "type": "STRING", "links": [2]}], "widgets_values": ["a red circle on blue"]},
            {"id": 3, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}], "outputs": [{"name": "", "type": "IMAGE", "links": [3]}]},
            {"id": 4, "type": "GPTImage2EditImage", "mode": 4, "inputs": [{"name": "image", "type": "IMAGE", "link": 3}],
             "outputs": [{"name": "images", "type": "IMAGE", "links": [4]}], "widgets_values": ["bypassed", "auto", "auto", 1, 0]},
            {"id": 5, "type": "GPTImage2Describe", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 4}],
             "widgets_values": {"question": "What is it?", "seed": 2}},
            {"id": 6, "type": "Note", "widgets_values": ["just a note"]},
            {"id": 7, "type": "SaveImage", "mode": 2, "inputs": [{"name": "images", "type": "IMAGE", "link": 5}], "widgets_values": ["muted"]},
            {"id": 8, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": None}], "widgets_values": []},
        ],
        "links": [[1, 1, 0, 3, 0, "IMAGE"], [2, 2, 0, 1, 0, "STRING"], [3, 3, 0, 4, 0, "IMAGE"], [4, 4, 0, 5, 0, "IMAGE"],
                  {"id": 5, "origin_id": 1, "origin_slot": 0, "target_id": 7, "target_slot": 0, "type": "IMAGE"}],
    }
    ui["nodes"][0]["inputs"] = [{"name": "prompt", "type": "STRING", "link": 2, "widget": {"name": "prompt"}}]
    api = ui_to_api(ui)
    assert sorted(api, key=int) == ["1", "5", "8"]
    assert api["1"]["inputs"]["prompt"] == "a red circle on blue" and api["1"]["inputs"]["seed"] == 5
    assert api["1"]["inputs"]["backend"] == "auto" and api["1"]["_meta"] == {"title": "Source"}
    assert api["5"]["inputs"] == {"question": "What is it?", "seed": 2, "image": ["1", 0]}  # through reroute and bypass
    no_control = ui_to_api({"nodes": [{"id": 1, "type": "GPTImage2Describe", "widgets_values": ["Why?", 4, "offline", "", "", False]}], "links": []})
    assert no_control["1"]["inputs"] == {"question": "Why?", "seed": 4, "backend": "offline", "base_url": "", "model": "", "stream": False}
    loaded = load_workflow(json.dumps(ui))
    # The layout survives the round trip: node 1's own pos and size; node 5 (none given) at 0,0.
    assert loaded.layout["1"] == {"pos": [120, 340], "size": [400, 250]}
    assert loaded.layout["5"] == {"pos": [0, 0], "size": [0, 0]}
    ui_nodes = {n["id"]: n for n in loaded.to_ui()["nodes"]}
    assert ui_nodes[1]["pos"] == [120, 340] and ui_nodes[1]["size"] == [400, 250]
    assert ui_nodes[5]["pos"] == [0, 0]
    with pytest.raises(WorkflowError, match="subgraphs"):
        load_workflow({"nodes": [], "links": [], "definitions": {"subgraphs": [{"id": "x"}]}})


def test_load_workflow_errors(tmp_path):
    with pytest.raises(WorkflowError, match="does not exist"):
        load_workflow(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(WorkflowError, match="not valid JSON"):
        load_workflow(tmp_path / "bad.json")
    with pytest.raises(WorkflowError, match="node 3: has no class_type"):
        load_workflow('{"3": {"inputs": {}}}')


def test_memory_layer_is_bounded_and_disk_keeps_everything(tmp_path):
    cache = ResultCache(tmp_path / "c", max_memory_bytes=3 * 64 * 64 * 2 + 100)
    for i in range(4):
        cache.put(f"{i:064x}", ([Image.new("RGB", (64, 64), (i, 0, 0))], "text", 3))
    assert len(cache._items) == 2  # the two most recent stay in memory
    cache.clear()
    outputs = cache.get(f"{0:064x}")  # from disk, exactly as stored
    assert outputs[1:] == ("text", 3) and outputs[0][0].getpixel((0, 0)) == (0, 0, 0) and outputs[0][0].mode == "RGB"
    assert ResultCache(None).get(f"{0:064x}") is None and ResultCache(None).path("ab") is None
