"""Running chains through the executor: streaming snapshots, the cache, failures keep results."""

from __future__ import annotations

import asyncio
import os

import pytest

from gpt_image_nodes.nodes.backend import shared_offline_server
from gpt_image_nodes.ui import chain as C
from gpt_image_nodes.ui.connection import session_settings
from gpt_image_nodes.ui.runner import run_chain, scope
from gpt_image_nodes.ui.session import SessionStore
from testkit import three_step_chain

ENV = {"GPT_IMAGE_CONFIG": "/nonexistent/gpt-image-config.json"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def session(tmp_path, monkeypatch):
    for name in ("GPT_IMAGE_API_KEY", "GPT_IMAGE_BACKEND", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GPT_IMAGE_CONFIG", ENV["GPT_IMAGE_CONFIG"])
    monkeypatch.setenv("GPT_IMAGE_CACHE_DIR", str(tmp_path / "cache"))  # each test starts cold
    store = SessionStore(tmp_path / "sessions")
    yield store.get("test-session")
    store.close_all()


@pytest.fixture
def offline_srv():
    """The process's shared offline server (what an offline session talks to), faults cleared."""
    server = shared_offline_server()
    server.clear_faults()
    yield server
    server.latency = 0.0
    server.clear_faults()


def run(chain, session, mode="all", k=None):
    async def collect():
        return [snap async for snap in run_chain(chain, session, session_settings({}, ENV), mode, k)]
    return asyncio.run(collect())


def test_scope():
    chain = three_step_chain()
    assert scope(chain, "all") == [0, 1, 2] and scope(chain, "step", 1) == [1] and scope(chain, "from", 1) == [1, 2]


def test_run_streams_progress_then_reruns_from_cache(session, offline_srv):
    offline_srv.latency = 0.3
    before = offline_srv.stats["requests"]
    snaps = run(three_step_chain(), session)
    final = snaps[-1].chain
    assert snaps[-1].finished and snaps[-1].requests == 3 and offline_srv.stats["requests"] == before + 3
    running = [s.chain[0]["result"] for s in snaps if (s.chain[0].get("result") or {}).get("status") == "running"]
    assert any(r["progress"] for r in running)  # progress text streamed while the request ran
    assert [s["result"]["status"] for s in final] == ["done"] * 3
    for step in final[:2]:
        assert step["result"]["images"] and all(open(p, "rb").read(8) == PNG for p in step["result"]["images"])
    assert "image" in final[2]["result"]["text"].lower()

    offline_srv.latency = 0.0
    again = run(final, session)[-1]
    assert again.requests == 0 and again.cache_hits == 3 and offline_srv.stats["requests"] == before + 3
    assert [s["result"]["status"] for s in again.chain] == ["cached"] * 3
    assert again.chain[0]["result"]["images"] == final[0]["result"]["images"]  # same pixels, same file


def test_a_failed_step_keeps_earlier_results(session, offline_srv):
    done = run(three_step_chain(), session)[-1].chain
    done[1]["prompt"] = "make it sunny"  # a new request for step 2 ...
    offline_srv.inject("status", 1, status=400, message="Invalid image format.")  # ... which fails
    snap = run(done, session, "from", 1)[-1]
    steps = snap.chain
    assert steps[0]["result"]["images"] == done[0]["result"]["images"]  # still there (read from the cache)
    assert steps[0]["result"]["status"] == "cached"
    assert steps[1]["result"]["status"] == "error" and "Invalid image format" in steps[1]["result"]["error"]
    assert steps[2]["result"]["status"] == "skipped" and not steps[2]["result"]["images"]
    assert "Failed" in snap.message

    one = run(steps, session, "step", 1)[-1]  # run one step: its input comes from the cache
    assert one.requests == 1 and one.chain[1]["result"]["status"] == "done"
    assert one.chain[2]["result"]["status"] == "skipped"  # not part of this run: left as it was


def test_a_chain_that_cannot_run_says_why(session, offline_srv):
    chain = C.add_step([], "EditImage")
    snaps = run(chain, session)
    assert len(snaps) == 1 and snaps[0].finished and "needs an input image" in snaps[0].message


def test_run_one_step_while_a_later_step_is_unfinished(session, offline_srv):
    """Only the steps a run needs are built and checked: an empty later step is no obstacle."""
    chain = three_step_chain()
    chain[1].update(prompt="", inputs=[])  # step 2: no prompt, no input image yet
    before = offline_srv.stats["requests"]
    one = run(chain, session, "step", 0)[-1]
    assert one.finished and one.message.startswith("Done") and one.requests == 1
    assert one.chain[0]["result"]["status"] == "done" and one.chain[0]["result"]["images"]
    assert one.chain[1]["result"] is None and one.chain[2]["result"] is None  # not part of the run
    assert offline_srv.stats["requests"] == before + 1
    snaps = run(chain, session, "from", 1)  # a run that needs step 2 still says why it can't
    assert len(snaps) == 1 and "Step 2 (EditImage) needs an input image" in snaps[0].message
    chain[1]["inputs"] = [{"step": 0, "pick": None}]
    snaps = run(chain, session, "step", 1)  # checked before anything is sent; no step is touched
    assert len(snaps) == 1 and snaps[0].message.startswith("Not run:") and "prompt is empty" in snaps[0].message
    assert snaps[0].chain[1]["result"] is None and offline_srv.stats["requests"] == before + 1


def test_a_failed_upload_says_why_in_the_run_message(session, offline_srv, tmp_path):
    """A LoadImage failure is not a step: its reason must reach the message, not only the
    skipped step's "not run: node 2 (LoadImage) failed"."""
    from PIL import Image

    from gpt_image_nodes.ui.steps import attach_upload

    Image.new("RGB", (80, 60), (10, 200, 90)).save(tmp_path / "photo.png")
    chain = attach_upload(C.add_step([], "EditImage"), 0, str(tmp_path / "photo.png"), session)
    chain[0]["prompt"] = "make it black and white"
    upload = chain[0]["uploads"][0]
    with open(upload, "r+b") as fh:
        fh.truncate(40)  # the session's copy is damaged after it was attached
    final = run(chain, session)[-1]
    assert final.finished and final.requests == 0
    assert final.chain[0]["result"]["status"] == "skipped" and "LoadImage" in final.chain[0]["result"]["error"]
    assert final.message.startswith("Failed") and "LoadImage" in final.message and "could not read" in final.message
    assert os.path.basename(upload) in final.message


def test_results_are_written_off_the_event_loop(session, offline_srv, monkeypatch):
    """PNG encoding of a result (tens of ms for a large image) must not stall every session."""
    import threading

    from gpt_image_nodes.ui import runner

    seen: list[bool] = []
    real = runner.save_png

    def spy(*args, **kwargs):
        seen.append(threading.current_thread() is threading.main_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "save_png", spy)
    final = run(three_step_chain(), session)[-1]
    assert final.message.startswith("Done") and len(seen) == 2 and not any(seen)


def test_an_uploaded_image_feeds_an_edit(session, offline_srv, tmp_path):
    from PIL import Image

    from gpt_image_nodes.ui.steps import attach_upload

    Image.new("RGB", (80, 60), (10, 200, 90)).save(tmp_path / "photo.jpg", quality=92)
    chain = attach_upload(C.add_step([], "EditImage"), 0, str(tmp_path / "photo.jpg"), session)
    chain[0]["prompt"] = "make it black and white"
    assert chain[0]["inputs"] == [{"upload": chain[0]["uploads"][0]}]
    final = run(chain, session)[-1]
    assert final.requests == 1 and final.chain[0]["result"]["status"] == "done"


def test_pick_one_image_of_n_to_pass_on(session, offline_srv):
    from gpt_image_nodes.nodes.workflow import api_to_ui

    chain = C.add_step([], "TextToImage")
    chain[0].update(prompt="two kites", n=2)
    chain = C.add_step(chain, "EditImage")
    assert chain[1]["inputs"] == [{"step": 0, "pick": 0}]  # the first image by default
    chain[1].update(prompt="make it black and white", inputs=[{"step": 0, "pick": 1}])
    api = C.chain_to_api(chain)
    assert any(n["class_type"] == "ImageFromBatch" and n["inputs"]["batch_index"] == 1 for n in api.values())
    assert any(n["type"] == "ImageFromBatch" for n in api_to_ui(api)["nodes"])  # ComfyUI opens it
    final = run(chain, session)[-1]
    assert final.requests == 2 and len(final.chain[0]["result"]["images"]) == 2
    assert len(final.chain[1]["result"]["images"]) == 1  # one edit request, of the picked image
    assert C.api_to_chain(api, [])[0][1]["inputs"] == [{"step": 0, "pick": 1}]


def test_local_sessions_share_the_users_cache_hosted_ones_do_not(tmp_path, offline_srv, monkeypatch):
    """Locally the canvas is one person's: a new tab (or a restart) re-running a chain pays
    nothing. Hosted, every visitor pays for their own results and sees no one else's."""
    for name in ("GPT_IMAGE_API_KEY", "GPT_IMAGE_BACKEND", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GPT_IMAGE_CONFIG", ENV["GPT_IMAGE_CONFIG"])
    monkeypatch.setenv("GPT_IMAGE_CACHE_DIR", str(tmp_path / "cache"))
    store = SessionStore(tmp_path / "sessions")
    try:
        before = offline_srv.stats["requests"]
        assert run(three_step_chain(), store.get("tab-1"))[-1].requests == 3
        assert run(three_step_chain(), store.get("tab-2"))[-1].requests == 0
        assert offline_srv.stats["requests"] == before + 3
        monkeypatch.setenv("SPACE_ID", "someone/space")
        assert run(three_step_chain(), store.get("visitor-a"))[-1].requests == 3
        assert run(three_step_chain(), store.get("visitor-b"))[-1].requests == 3
    finally:
        store.close_all()
