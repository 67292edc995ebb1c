"""Bad inputs at the layers tests/test_bad_inputs.py does not reach: tensors into the ComfyUI
nodes, workflow files through the CLI, bombs and over-cap files through LoadImage in the
executor, and answers over the byte and pixel caps. Each is refused with a message naming the
problem; nothing crashes, hangs, sends a request or leaves a partial file.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (.ci/run installs the CPU build)")
from PIL import Image

from gpt_image_nodes.nodes import codecs, errors
from gpt_image_nodes.nodes.cli import main
from gpt_image_nodes.nodes.comfy import nodes as comfy_nodes
from gpt_image_nodes.nodes.node_types import ClientPool
from gpt_image_nodes.nodes.workflow import Executor, ResultCache, Workflow, WorkflowError
from testkit import png_header_only


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# -- tensors into the ComfyUI nodes --------------------------------------------------------------

def good(h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.rand(1, h, w, 3)


def with_nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[t.numel() // 2] = float("nan")
    return t


TENSORS = [
    # (id, node, input name, bad value, words in the message)
    ("describe-nan", "GPTImage2Describe", "image", with_nan(good()), ["'image'", "NaN"]),
    ("describe-neg-inf", "GPTImage2Describe", "image", torch.full((1, 8, 8, 3), float("-inf")), ["'image'", "infinite"]),
    ("edit-bf16-nan", "GPTImage2EditImage", "image", with_nan(good()).to(torch.bfloat16), ["'image'", "NaN"]),
    ("edit-float64-overflow", "GPTImage2EditImage", "image", torch.full((1, 4, 4, 3), 1e300, dtype=torch.float64), ["'image'", "infinite"]),
    ("edit-mask-nan", "GPTImage2EditImage", "mask", with_nan(torch.ones(1, 32, 32)), ["'mask'", "NaN"]),
    ("edit-mask-rgb-shape", "GPTImage2EditImage", "mask", torch.ones(1, 32, 32, 3), ["'mask'", "shape"]),
    ("edit-mask-1d", "GPTImage2EditImage", "mask", torch.ones(32), ["'mask'", "shape"]),
    ("merge-image_2-channels-first", "GPTImage2MultiMerge", "image_2", torch.rand(1, 3, 32, 32), ["'image_2'", "shape"]),
    ("merge-image_1-5d", "GPTImage2MultiMerge", "image_1", torch.rand(1, 1, 8, 8, 3), ["'image_1'", "shape"]),
    ("edit-2d-image", "GPTImage2EditImage", "image", torch.rand(32, 32), ["'image'", "shape"]),
    ("edit-empty-batch", "GPTImage2EditImage", "image", torch.rand(0, 32, 32, 3), ["'image'", "empty"]),
    ("edit-zero-width", "GPTImage2EditImage", "image", torch.rand(1, 32, 0, 3), ["'image'", "empty"]),
    ("describe-not-a-tensor", "GPTImage2Describe", "image", "cat.png", ["'image'", "str"]),
    ("describe-ragged-list", "GPTImage2Describe", "image", [[1.0, 2.0], [3.0]], ["'image'"]),
]


def comfy_inputs(node: str, srv) -> dict:
    common = {"backend": "remote", "base_url": srv.url, "model": "", "stream": False, "seed": 0}
    if node == "GPTImage2Describe":
        return {"image": good(), "question": "what?", **common}
    base = {"prompt": "invert", "size": "auto", "quality": "low", "n": 1, **common}
    if node == "GPTImage2EditImage":
        return {"image": good(), **base}
    return {"image_1": good(), "image_2": good(), **base}


@pytest.fixture
def pool(srv, canary_key):
    comfy_nodes.set_client_pool(ClientPool(api_key=canary_key))
    yield
    comfy_nodes.set_client_pool(None)


@pytest.mark.parametrize("case", TENSORS, ids=[c[0] for c in TENSORS])
def test_bad_tensors_into_every_comfyui_node(case, srv, pool):
    _, node, name, bad, words = case
    inputs = {**comfy_inputs(node, srv), name: bad}
    start = time.monotonic()
    with pytest.raises(errors.InvalidInputError) as info:
        asyncio.run(comfy_nodes.NODE_CLASS_MAPPINGS[node]().execute(unique_id="3", **inputs))
    message = str(info.value)
    assert all(w in message for w in words), message
    assert "Traceback" not in message and len(message) < 400
    assert srv.stats["requests"] == 0 and time.monotonic() - start < 2


def test_odd_but_valid_tensors_are_accepted(srv, pool):
    """Out-of-range values are clipped, an alpha channel and a grey channel are fine."""
    node = comfy_nodes.NODE_CLASS_MAPPINGS["GPTImage2Describe"]()
    for value in (torch.full((1, 16, 16, 3), 7.5), torch.full((1, 16, 16, 3), -2.0), torch.rand(1, 16, 16, 4), torch.rand(16, 16, 1)):
        out = asyncio.run(node.execute(unique_id="3", **{**comfy_inputs("GPTImage2Describe", srv), "image": value}))
        assert out["result"][0]
    assert srv.stats["requests"] == 4


# -- workflow files through the CLI: exit 2, a clear message, nothing written, nothing sent --------

def chain_with(load_name: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": load_name}},
        "2": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["1", 0], "prompt": "invert"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }


def _cycle() -> dict:
    wf = chain_with("ok.png")
    wf["4"] = {"class_type": "GPTImage2EditImage", "inputs": {"image": ["5", 0], "prompt": "a"}}
    wf["5"] = {"class_type": "GPTImage2EditImage", "inputs": {"image": ["4", 0], "prompt": "b"}}
    return wf


def _self_loop() -> dict:
    wf = chain_with("ok.png")
    wf["2"]["inputs"]["image"] = ["2", 0]
    return wf


def _ui_cycle() -> dict:
    node = lambda i, inp, out: {"id": i, "type": "GPTImage2EditImage", "pos": [0, 0], "size": [400, 300], "flags": {}, "order": i, "mode": 0,
                                "inputs": [{"name": "image", "type": "IMAGE", "link": inp}],
                                "outputs": [{"name": "images", "type": "IMAGE", "links": [out]}, {"name": "text", "type": "STRING", "links": []}, {"name": "usage", "type": "STRING", "links": []}],
                                "widgets_values": ["x", "auto", "auto", 1, 0, "fixed"]}
    return {"last_node_id": 2, "last_link_id": 2, "nodes": [node(1, 2, 1), node(2, 1, 2)],
            "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 1, 0, "IMAGE"]], "groups": [], "config": {}, "extra": {}, "version": 0.4}


BAD_WORKFLOWS = [
    ("cycle", lambda d: json.dumps(_cycle()), "is part of a cycle (4 -> 5 -> 4)"),
    ("self-loop", lambda d: json.dumps(_self_loop()), "node 2 (GPTImage2EditImage): is part of a cycle (2 -> 2)"),
    ("ui-format-cycle", lambda d: json.dumps(_ui_cycle()), "cycle"),
    ("unknown-node", lambda d: json.dumps({**chain_with("ok.png"), "9": {"class_type": "CheckpointLoaderSimple", "inputs": {}}}), "node 9 (CheckpointLoaderSimple): unknown node type"),
    ("load-dotdot", lambda d: json.dumps(chain_with("../secret.png")), "node 1 (LoadImage): the image '../secret.png' is outside the folder"),
    ("load-absolute", lambda d: json.dumps(chain_with(str(d / "secret.png"))), "is outside the folder"),
    ("load-symlink-out", lambda d: json.dumps(chain_with("link.png")), "is outside the folder"),
    ("load-nul", lambda d: json.dumps(chain_with("ok\x00.png")), "node 1 (LoadImage): the image name 'ok\\x00.png' holds a NUL character"),
    ("load-missing", lambda d: json.dumps(chain_with("nope.png")), "the image 'nope.png' is not in"),
    ("not-json", lambda d: "{'1': nope", "is not valid JSON"),
    ("json-array", lambda d: "[1, 2, 3]", "must be a JSON object"),
    ("nested-too-deep", lambda d: '{"1": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ("empty-object", lambda d: "{}", "holds no nodes"),
    ("not-utf8", lambda d: b"\xff\xfe{\x00}".decode("latin-1"), "could not be read|not valid JSON"),
]


@pytest.mark.parametrize("case", BAD_WORKFLOWS, ids=[c[0] for c in BAD_WORKFLOWS])
def test_bad_workflow_files_through_the_cli(case, srv, canary_key, tmp_path, monkeypatch, capsys):
    name, make, expected = case
    monkeypatch.setenv("GPT_IMAGE_API_KEY", canary_key)
    monkeypatch.setenv("GPT_IMAGE_BASE_URL", srv.url)
    monkeypatch.setenv("GPT_IMAGE_CONFIG", str(tmp_path / "absent.json"))
    monkeypatch.delenv("GPT_IMAGE_BACKEND", raising=False)
    work, inputs, out, cache = tmp_path / "work", tmp_path / "work" / "in", tmp_path / "out", tmp_path / "cache"
    inputs.mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(inputs / "ok.png")
    Image.new("RGB", (8, 8), "blue").save(work / "secret.png")
    (inputs / "link.png").symlink_to(work / "secret.png")
    path = work / "wf.json"
    text = make(work)
    path.write_bytes(text.encode("latin-1") if name == "not-utf8" else text.encode("utf-8"))
    before = tree(tmp_path)
    start = time.monotonic()
    code = main(["run", str(path), "--out", str(out), "--input-dir", str(inputs), "--cache-dir", str(cache), "-q"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert elapsed < 3 and "Traceback" not in err and canary_key not in err
    assert srv.stats["requests"] == 0
    assert code == 2, err
    assert re.search(re.escape(expected) if "|" not in expected else expected, err), err
    assert "Nothing was sent" in err
    assert tree(tmp_path) == before  # no output folder, no cache entry, no temporary file


def test_a_huge_graph_is_validated_and_ordered_quickly():
    """5000 chained nodes: ordering used to be quadratic (13 s for 3000 nodes)."""
    nodes = {"0": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}}
    for i in range(1, 5000):
        nodes[str(i)] = {"class_type": "ImageFromBatch", "inputs": {"image": [str(i - 1), 0]}}
    nodes["5000"] = {"class_type": "PreviewImage", "inputs": {"images": ["4999", 0]}}
    wf = Workflow(nodes)
    start = time.monotonic()
    wf.validate()
    order = wf.order()
    assert order == [str(i) for i in range(5001)] and time.monotonic() - start < 2
    nodes["0"] = {"class_type": "ImageFromBatch", "inputs": {"image": ["4999", 0]}}  # one long cycle
    start = time.monotonic()
    with pytest.raises(WorkflowError, match="is part of a cycle"):
        Workflow(nodes).validate()
    assert time.monotonic() - start < 2


# -- bombs and over-cap files through LoadImage in the executor -------------------------------------

LOAD_FILES = [
    ("bomb-30000x30000", lambda: png_header_only(30000, 30000), "megapixels"),
    ("over-byte-cap", lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * (codecs.MAX_INPUT_BYTES + 1), "MiB"),
    ("zero-bytes", lambda: b"", "empty"),
    ("text-as-png", lambda: b"not an image at all\n", "not a supported image"),
]


@pytest.mark.parametrize("case", LOAD_FILES, ids=[c[0] for c in LOAD_FILES])
def test_bombs_and_over_cap_files_through_load_image(case, srv, canary_key, tmp_path):
    _, make, words = case
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_bytes(make())
    wf = Workflow({
        **chain_with("bad.png"),
        "4": {"class_type": "GPTImage2TextToImage", "inputs": {"prompt": "an independent branch", "size": "1024x1024", "quality": "low"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "other"}},
    })
    out = tmp_path / "out"
    ex = Executor(ClientPool(api_key=canary_key, base_url=srv.url), cache=ResultCache(None), input_dir=tmp_path / "in", output_dir=out)
    start = time.monotonic()
    report = ex.run_sync(wf)
    assert time.monotonic() - start < 5
    message = report.errors["1"]
    assert words in message and "bad.png" in message and "Traceback" not in message and len(message) < 400
    assert not message.startswith("node 1")  # the label is shown once, by whoever prints it
    assert set(report.skipped) == {"2", "3"} and report.outputs.keys() >= {"4", "5"}
    assert srv.stats["requests"] == 1  # only the independent branch
    assert tree(out) == ["other_00001_.png"]


# -- answers over the byte and pixel caps ----------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_an_answer_over_the_byte_cap_is_refused(srv, make_client, stream):
    client = make_client(sync=True, max_answer_bytes=64 * 1024)
    with pytest.raises(errors.MalformedAnswerError, match="limit"):
        client.text_to_image("a red circle on blue", size="1024x1024", quality="low", stream=stream)
    assert srv.stats["requests"] == 1  # not retried: it would be as large again


def test_a_linked_image_over_the_byte_cap_is_refused(srv, make_client):
    srv.configure(answer_shape="markdown_link")
    with pytest.raises(errors.MalformedAnswerError, match="limit"):
        make_client(sync=True, max_link_bytes=32 * 1024).text_to_image("a red circle on blue", size="1024x1024", quality="low")
    assert srv.stats["image_fetches"] == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_an_answer_image_that_is_a_pixel_bomb_is_refused(srv, make_client, stream):
    bomb = base64.b64encode(png_header_only(30000, 30000)).decode()
    srv.inject("bad_base64", 1, value=bomb)
    start = time.monotonic()
    with pytest.raises(errors.MalformedAnswerError, match="pixels") as info:
        make_client(sync=True).text_to_image("a red circle on blue", size="1024x1024", quality="low", stream=stream)
    assert time.monotonic() - start < 2 and len(str(info.value)) < 400
