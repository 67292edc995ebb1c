"""Batch mode: one workflow over many items, interrupted and resumed without paying twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import gpt_image_nodes
from gpt_image_nodes.nodes import RetryPolicy
from gpt_image_nodes.nodes.node_types import ClientPool
from gpt_image_nodes.nodes.workflow import DONE_MARKER, Executor, ResultCache, WorkflowError, load_batch_items, run_batch

TEXT_TO_IMAGE = Path(gpt_image_nodes.__file__).resolve().parent / "workflows" / "api" / "text_to_image.json"
COLOURS = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "gold"]


def executor(tmp_path: Path, cache: bool = True) -> Executor:
    return Executor(ClientPool(retry=RetryPolicy(max_retries=1, initial_backoff=0.02)),
                    cache=ResultCache(tmp_path / "cache") if cache else None, concurrency=4)


def twenty_items(tmp_path: Path) -> Path:
    rows = ["1.prompt,1.seed"] + [f"a {COLOURS[i % 10]} circle on {'white' if i < 10 else 'black'},{i}" for i in range(20)]
    path = tmp_path / "items.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def run(ex: Executor, items, out: Path, **kw):
    async def go():
        try:
            return await run_batch(ex, TEXT_TO_IMAGE, items, out, **kw)
        finally:
            await ex.aclose()
    return asyncio.run(go())


def test_an_interrupted_batch_of_20_resumes_with_20_requests_in_all(srv_env, tmp_path):
    items = load_batch_items(twenty_items(tmp_path))
    assert [i.key for i in items][:2] == ["0001", "0002"] and items[3].overrides == {"1.prompt": "a green circle on white", "1.seed": "3"}
    out = tmp_path / "out"
    finished: list[str] = []
    first = run(executor(tmp_path), items, out, stop_check=lambda: len(finished) >= 10,
                on_item=lambda key, status, report: finished.append(key))
    # Stopping lets requests already sent finish (they are paid for), and starts nothing new.
    assert first.cancelled and 10 <= len(first.done) < 20 and not first.failed
    assert srv_env.stats["requests"] == first.requests == len(first.done)
    assert all((out / key / DONE_MARKER).is_file() for key in first.done)

    # A new process: a fresh executor and a cache that knows nothing (done-markers alone resume).
    second = run(executor(tmp_path / "other", cache=False), items, out)
    assert second.ok and sorted(second.already_done) == sorted(first.done)
    assert srv_env.stats["requests"] == 20
    assert sorted(p.parent.name for p in out.glob(f"*/{DONE_MARKER}")) == [i.key for i in items]
    assert all(len(list((out / i.key).glob("text_to_image_*.png"))) == 1 for i in items)

    third = run(executor(tmp_path), items, out)
    assert third.ok and len(third.already_done) == 20 and third.requests == 0 and srv_env.stats["requests"] == 20


def test_a_changed_item_is_run_again_and_the_cache_covers_the_rest(srv_env, tmp_path):
    path = tmp_path / "items.jsonl"
    rows = [{"id": "fox", "1.prompt": "a red fox on green"}, {"id": "sky/2", "1.prompt": "a blue sky", "1.n": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items = load_batch_items(path)
    assert [i.key for i in items] == ["fox", "sky_2"]
    out = tmp_path / "out"
    assert run(executor(tmp_path), items, out).requests == 2
    items[0].overrides["1.quality"] = "medium"
    report = run(executor(tmp_path), items, out)
    assert report.done == ["fox"] and report.already_done == ["sky_2"] and srv_env.stats["requests"] == 3


def test_batch_items_are_all_validated_before_any_request(srv_env, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,1.prompt,1.n\na,a red circle,1\nb,a blue square,two\n")
    with pytest.raises(WorkflowError, match=r"item b: node 1 \(GPTImage2TextToImage\): input 'n' must be a whole number"):
        run(executor(tmp_path), load_batch_items(path), tmp_path / "out")
    assert srv_env.stats["requests"] == 0
    path.write_text("id,1.prompt\na,x\na,y\n")
    with pytest.raises(WorkflowError, match="used twice"):
        load_batch_items(path)
    (tmp_path / "bad.jsonl").write_text('{"1.prompt": "ok"}\n[1, 2]\n')
    with pytest.raises(WorkflowError, match="line 2"):
        load_batch_items(tmp_path / "bad.jsonl")


def test_a_failed_item_is_reported_and_retried_next_time(srv_env, tmp_path):
    items = load_batch_items(twenty_items(tmp_path))[:3]
    ex = Executor(ClientPool(retry=RetryPolicy(max_retries=0)), cache=ResultCache(tmp_path / "cache"), concurrency=1)
    srv_env.inject("slow", 1, delay=0.0)
    srv_env.inject("status", 1, status=400, message="Invalid image format.")
    report = run(ex, items, tmp_path / "out")
    assert list(report.failed) == ["0002"] and report.failed["0002"].startswith("node 1 (GPTImage2TextToImage): ")
    assert "Invalid image format." in report.failed["0002"]
    assert sorted(report.done) == ["0001", "0003"] and not (tmp_path / "out" / "0002" / DONE_MARKER).exists()
    srv_env.reset()
    again = run(executor(tmp_path), items, tmp_path / "out")
    assert again.ok and again.done == ["0002"] and srv_env.stats["requests"] == 1
