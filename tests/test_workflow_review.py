"""Review fixes: batch fingerprints cover what the cache key covers, done-markers list their
files, saved PNGs use the fast encoder, one preparation per run, and plain-log progress."""

from __future__ import annotations

import asyncio
import io
import json
import os
import zlib
from pathlib import Path

import pytest
from PIL import Image

import gpt_image_nodes
from gpt_image_nodes.nodes import RetryPolicy, codecs
from gpt_image_nodes.nodes.node_types import ClientPool
from gpt_image_nodes.nodes.workflow import DONE_MARKER, BatchItem, Executor, ResultCache, Workflow, run_batch
from gpt_image_nodes.nodes.workflow import executor as executor_module
from gpt_image_nodes.nodes.workflow.console import Progress
from gpt_image_nodes.nodes.workflow.executor import NodeEvent
from gpt_image_nodes.nodes.workflow.files import png_with_metadata
from gpt_image_nodes.nodes.workflow.graph import Workflow as GraphWorkflow

TEXT_TO_IMAGE = Path(gpt_image_nodes.__file__).resolve().parent / "workflows" / "api" / "text_to_image.json"
ITEMS = [BatchItem("red", {"1.prompt": "a red circle on blue"}), BatchItem("green", {"1.prompt": "a green circle on blue"})]


def make(tmp_path: Path, cache: str | None = "cache") -> Executor:
    return Executor(ClientPool(retry=RetryPolicy(max_retries=1, initial_backoff=0.02)),
                    cache=ResultCache(tmp_path / cache) if cache else None, concurrency=2, input_dir=tmp_path / "in")


def batch(ex: Executor, workflow, items, out):
    async def go():
        try:
            return await run_batch(ex, workflow, items, out)
        finally:
            await ex.aclose()
    return asyncio.run(go())


def load_edit() -> Workflow:
    return Workflow({
        "1": {"class_type": "LoadImage", "inputs": {"image": "pic.png", "upload": "image"}},
        "2": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["1", 0], "prompt": "make it grayscale", "quality": "low"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "edited"}},
    })


def picture(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path)


# -- 1. the done-marker's fingerprint covers inputs files and the resolved endpoint ------------------

def test_a_replaced_input_image_runs_the_batch_items_again(srv_env, tmp_path):
    picture(tmp_path / "in" / "pic.png", (200, 30, 30))
    items = [BatchItem("a", {"2.prompt": "make it grayscale"}), BatchItem("b", {"2.prompt": "mirror it"})]
    out = tmp_path / "out"
    first = batch(make(tmp_path), load_edit(), items, out)
    assert first.ok and sorted(first.done) == ["a", "b"] and srv_env.stats["requests"] == 2

    same = batch(make(tmp_path), load_edit(), items, out)
    assert sorted(same.already_done) == ["a", "b"] and same.requests == 0 and srv_env.stats["requests"] == 2

    stat = (tmp_path / "in" / "pic.png").stat()
    picture(tmp_path / "in" / "pic.png", (30, 30, 200))  # same name, same size, new pixels
    os.utime(tmp_path / "in" / "pic.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    assert (tmp_path / "in" / "pic.png").stat().st_size == stat.st_size
    again = batch(make(tmp_path), load_edit(), items, out)
    assert again.ok and sorted(again.done) == ["a", "b"] and not again.already_done
    assert again.requests == 2 and srv_env.stats["requests"] == 4
    with Image.open(next(p for p in again.saved if p.name == "edited_00002_.png")) as img:
        assert img.size == (64, 48)

    settled = batch(make(tmp_path), load_edit(), items, out)
    assert sorted(settled.already_done) == ["a", "b"] and srv_env.stats["requests"] == 4


def test_switching_the_backend_runs_the_batch_items_again(srv_env, canary_key, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.delenv("GPT_IMAGE_API_KEY")  # backend "auto" without a key: the offline backend
    offline = batch(make(tmp_path), TEXT_TO_IMAGE, ITEMS, out)
    assert offline.ok and offline.requests == 2 and srv_env.stats["requests"] == 0
    assert sorted(batch(make(tmp_path), TEXT_TO_IMAGE, ITEMS, out).already_done) == ["green", "red"]

    monkeypatch.setenv("GPT_IMAGE_API_KEY", canary_key)  # the same workflow now reaches the gateway
    remote = batch(make(tmp_path), TEXT_TO_IMAGE, ITEMS, out)
    assert remote.ok and sorted(remote.done) == ["green", "red"] and not remote.already_done
    assert srv_env.stats["requests"] == 2
    assert sorted(batch(make(tmp_path), TEXT_TO_IMAGE, ITEMS, out).already_done) == ["green", "red"]
    assert srv_env.stats["requests"] == 2


# -- 2. the done-marker lists the item's files, whatever the --out ----------------------------------

def test_the_done_marker_lists_files_with_a_relative_out(srv_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = batch(make(tmp_path), TEXT_TO_IMAGE, ITEMS, Path("out"))
    assert report.ok
    for key in ("red", "green"):
        marker = json.loads((tmp_path / "out" / key / DONE_MARKER).read_text())
        assert marker["files"] == ["text_to_image_00001_.png"]
    absolute = batch(make(tmp_path), TEXT_TO_IMAGE, [BatchItem("blue", {"1.prompt": "a blue circle"})], tmp_path / "out")
    assert json.loads((tmp_path / "out" / "blue" / DONE_MARKER).read_text())["files"] == ["text_to_image_00001_.png"]
    assert absolute.ok


# -- 3. saved PNGs: the fast encoder, metadata Pillow (and ComfyUI) can read -------------------------

def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        tag, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert int.from_bytes(data[pos + 8 + n:pos + 12 + n], "big") == zlib.crc32(tag + payload) & 0xFFFFFFFF
        out.append((tag, payload))
        pos += 12 + n
    assert pos == len(data)
    return out


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_png_with_metadata_is_the_fast_png_plus_text_chunks(mode):
    img = Image.effect_noise((97, 61), 60).convert(mode)
    meta = {"prompt": {"1": {"class_type": "GPTImage2TextToImage", "inputs": {"prompt": "ein Fuchs \u00e9"}}}, "workflow": "plain text"}
    data = png_with_metadata(img, meta)
    tags = [tag for tag, _ in chunks(data)]
    assert tags[:3] == [b"IHDR", b"tEXt", b"tEXt"] and tags[-1] == b"IEND"
    without = b"".join([data[:8]] + [codecs.png_chunk(t, p) for t, p in chunks(data) if t != b"tEXt"])
    assert without == codecs.png_bytes(img)  # exactly our encoder's bytes, no Pillow re-encode
    with Image.open(io.BytesIO(data)) as back:
        assert back.mode == mode and back.tobytes() == img.tobytes()
        assert json.loads(back.text["prompt"]) == meta["prompt"] and back.text["workflow"] == "plain text"


def test_png_with_metadata_keeps_text_pillow_cannot_put_in_latin_1():
    img = Image.new("RGB", (8, 8), (1, 2, 3))
    data = png_with_metadata(img, {"note": "生成中 – done", "plain": "ok", "n": 3})
    assert [t for t, _ in chunks(data)][1:4] == [b"iTXt", b"tEXt", b"tEXt"]
    with Image.open(io.BytesIO(data)) as back:
        assert back.text == {"note": "生成中 – done", "plain": "ok", "n": "3"}
        assert back.convert("RGB").tobytes() == img.tobytes()
    assert png_with_metadata(img) == codecs.png_bytes(img)
    odd = Image.new("P", (4, 4), 3)
    with Image.open(io.BytesIO(png_with_metadata(odd, {"a": "b"}))) as back:
        assert back.text == {"a": "b"} and back.size == (4, 4)


# -- 4. one preparation (copy, validation, sort) per run and per batch item --------------------------

def test_each_run_and_each_batch_item_is_prepared_and_sorted_once(srv_env, tmp_path, monkeypatch):
    calls = {"order": 0, "validate": 0, "endpoint": 0}

    def counting(name, original):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(GraphWorkflow, "order", counting("order", GraphWorkflow.order))
    monkeypatch.setattr(GraphWorkflow, "validate", counting("validate", GraphWorkflow.validate))
    monkeypatch.setattr(executor_module.Executor, "endpoint", counting("endpoint", executor_module.Executor.endpoint))
    report = make(tmp_path, cache=None).run_sync(TEXT_TO_IMAGE)
    assert report.ok and report.requests == 1
    # One validation, one sort; the endpoint is resolved once to check it, once for the cache key.
    assert calls == {"order": 1, "validate": 1, "endpoint": 1}

    calls.update(order=0, validate=0, endpoint=0)
    report = batch(make(tmp_path), TEXT_TO_IMAGE, ITEMS, tmp_path / "out")
    assert report.ok and report.requests == 2
    assert calls == {"order": 2, "validate": 2, "endpoint": 4}  # per item: prepare + cache key


# -- 5. without a terminal, streamed text is logged by the line, not by the fragment ------------------

def feed(progress: Progress, *events: tuple) -> None:
    for kind, text, progress_kind in events:
        progress(NodeEvent("1", "GPTImage2TextToImage", kind, text, 1.0, None, progress_kind))


def test_plain_progress_buffers_streamed_text_into_lines():
    wf = Workflow(json.loads(TEXT_TO_IMAGE.read_text()))
    stream = io.StringIO()
    progress = Progress(wf, stream)
    assert not progress.live
    feed(progress, ("start", "", ""), ("progress", "sending request", "request"), ("progress", "正在", "text"),
         ("progress", "生成图片...", "text"), ("progress", "\n生成中 25%", "text"), ("progress", "\n生成", "text"),
         ("progress", "中 50%\n", "text"), ("progress", "retrying in 1 s (HTTP 502)", "retry"),
         ("progress", "生成中 75%", "text"), ("progress", "image 1 received", "image"), ("done", "1 request", ""))
    label = 'node 1 TextToImage "Red circle"'
    assert stream.getvalue().splitlines() == [
        f"{label}: started",
        f"{label}: 正在生成图片...",
        f"{label}: 生成中 25%",
        f"{label}: 生成中 50%",
        f"{label}: retrying in 1 s (HTTP 502)",
        f"{label}: 生成中 75%",
        f"{label}: done in 1.0 s (1 request)",
    ]


def test_plain_progress_keeps_images_of_a_batch_and_items_apart():
    wf = Workflow(json.loads(TEXT_TO_IMAGE.read_text()))
    stream = io.StringIO()
    progress = Progress(wf, stream)
    for prefix in ("a", "b"):
        progress(NodeEvent("1", "GPTImage2TextToImage", "start", "", 0.0), prefix)
    for text in ("[1/2] 生成", "[2/2] 正在", "[1/2] 中 25%\n", "[2/2] 生成\n"):
        progress(NodeEvent("1", "GPTImage2TextToImage", "progress", text, 0.5, None, "text"), "a")
    progress(NodeEvent("1", "GPTImage2TextToImage", "progress", "half", 0.5, None, "text"), "b")
    progress(NodeEvent("1", "GPTImage2TextToImage", "error", "boom", 2.0), "b")
    progress(NodeEvent("1", "GPTImage2TextToImage", "progress", "[1/2] tail", 0.5, None, "text"), "a")
    progress(NodeEvent("1", "GPTImage2TextToImage", "done", "", 2.0), "a")
    label = 'node 1 TextToImage "Red circle"'
    assert stream.getvalue().splitlines() == [
        f"[a] {label}: started",
        f"[b] {label}: started",
        f"[a] {label}: [1/2] 生成中 25%",
        f"[a] {label}: [2/2] 正在生成",
        f"[b] {label}: half",
        f"[b] {label}: FAILED: boom",
        f"[a] {label}: [1/2] tail",
        f"[a] {label}: done in 2.0 s",
    ]
    quiet = io.StringIO()
    feed(Progress(wf, quiet, quiet=True), ("start", "", ""), ("progress", "x\n", "text"), ("done", "", ""))
    assert quiet.getvalue() == ""
