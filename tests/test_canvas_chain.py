"""The canvas's pure parts: chain edits, chain <-> workflow, form reading, connection policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpt_image_nodes.nodes.errors import ConfigurationError
from gpt_image_nodes.nodes.workflow import load_workflow
from gpt_image_nodes.ui import chain as C
from gpt_image_nodes.ui.connection import OFFLINE_BANNER, banner, check_base_url, session_settings
from gpt_image_nodes.ui.session import SessionStore, import_upload
from gpt_image_nodes.ui.steps import FIELDS, WORKFLOWS_DIR, read_form, slot_views, status_markdown
from testkit import three_step_chain

OFFLINE_ENV = {"GPT_IMAGE_CONFIG": "/nonexistent/gpt-image-config.json"}


def test_new_steps_are_fed_from_the_latest_image_step():
    chain = three_step_chain("a lighthouse", "make it night")
    assert [s["type"] for s in chain] == ["TextToImage", "EditImage", "Describe"]
    assert chain[1]["inputs"] == [{"step": 0, "pick": None}]
    assert chain[2]["inputs"] == [{"step": 1, "pick": None}]
    assert chain[2]["prompt"]  # Describe starts with the default question


def test_remove_duplicate_and_move_keep_references_pointing_back():
    chain = three_step_chain("a lighthouse", "make it night")
    dup = C.duplicate_step(chain, 1)
    assert [s["type"] for s in dup] == ["TextToImage", "EditImage", "EditImage", "Describe"]
    assert dup[2]["inputs"] == [{"step": 0, "pick": None}] and dup[3]["inputs"] == [{"step": 1, "pick": None}]
    removed = C.remove_step(chain, 0)
    assert removed[0]["inputs"] == [] and removed[1]["inputs"] == [{"step": 0, "pick": None}]
    moved = C.move_step(chain, 2, -1)  # Describe above its source: the reference is dropped
    assert [s["type"] for s in moved] == ["TextToImage", "Describe", "EditImage"]
    assert moved[1]["inputs"] == [] and moved[2]["inputs"] == [{"step": 0, "pick": None}]
    assert C.move_step(chain, 0, -1) == chain  # out of range: unchanged
    with pytest.raises(C.ChainError):
        C.add_step([C.new_step("TextToImage")] * C.MAX_STEPS, "Describe")


def test_chain_to_api_is_a_comfyui_workflow_the_executor_accepts():
    chain = three_step_chain("a lighthouse", "make it night")
    api = C.chain_to_api(chain)
    assert {k: v["class_type"] for k, v in api.items()} == {
        "1": "GPTImage2TextToImage", "2": "GPTImage2EditImage", "3": "GPTImage2Describe",
        "4": "PreviewImage", "5": "PreviewImage"}
    assert api["2"]["inputs"]["image"] == ["1", 0] and api["3"]["inputs"]["image"] == ["2", 0]
    assert "backend" not in api["1"]["inputs"]  # exports carry no connection
    wf = load_workflow(api)
    wf.validate()
    assert load_workflow(json.dumps(wf.to_ui())).to_api().keys() == api.keys()
    run = C.chain_to_api(chain, {"backend": "offline"})
    assert all(run[k]["inputs"]["backend"] == "offline" for k in "123")


def test_uploads_become_load_image_and_picks_image_from_batch(tmp_path):
    chain = C.add_step([], "TextToImage")
    chain[0]["n"] = 3
    chain.append({**C.new_step("MultiMerge"), "uploads": [str(tmp_path / "upload-a.png")],
                  "inputs": [{"upload": str(tmp_path / "upload-a.png")}, {"step": 0, "pick": 2}]})
    api = C.chain_to_api(chain)
    merge = api["2"]["inputs"]
    assert api[merge["image_1"][0]] == {"class_type": "LoadImage", "inputs": {"image": "upload-a.png"}, "_meta": {"title": "LoadImage"}}
    assert api[merge["image_2"][0]]["inputs"] == {"image": ["1", 0], "batch_index": 2, "length": 1}
    (tmp_path / "upload-a.png").write_bytes(b"x")
    back, notes = C.api_to_chain(api, [tmp_path])
    assert back[1]["inputs"] == [{"upload": str((tmp_path / "upload-a.png").resolve())}, {"step": 0, "pick": 2}]
    assert not notes


def test_chain_to_api_only_builds_the_steps_asked_for():
    """Running step 1 must not fail on step 2: an unfinished later step is not built at all."""
    chain = three_step_chain("a lighthouse", "make it night")
    chain[1].update(prompt="", inputs=[])  # step 2 is unfinished: no prompt, no input image
    with pytest.raises(C.ChainError, match="Step 2 .* needs an input image"):
        C.chain_to_api(chain)
    api = C.chain_to_api(chain, {"backend": "offline"}, only={0})
    assert {k: v["class_type"] for k, v in api.items()} == {"1": "GPTImage2TextToImage", "4": "PreviewImage"}
    load_workflow(api).validate()
    with pytest.raises(C.ChainError, match="Step 2 .* needs an input image"):
        C.chain_to_api(chain, only={0, 1})
    with pytest.raises(C.ChainError, match="not part of this run"):
        C.chain_to_api(three_step_chain("a lighthouse", "make it night"), only={1})  # step 2 reads step 1, which is left out


def test_connection_inputs_go_into_every_step_they_belong_to():
    conn = {"backend": "remote", "base_url": "https://gw.example.com", "model": "m", "stream": False, "api_key": "sk-x"}
    api = C.chain_to_api(three_step_chain("a lighthouse", "make it night"), conn)
    for k in "123":
        assert {n: api[k]["inputs"][n] for n in ("backend", "base_url", "model", "stream")} == {
            "backend": "remote", "base_url": "https://gw.example.com", "model": "m", "stream": False}
        assert "api_key" not in api[k]["inputs"]  # not a node input: never written into a workflow


def test_chain_round_trips_through_api_format():
    chain = three_step_chain("a lighthouse", "make it night")
    chain[0].update(size="1536x1024", quality="high", n=1, seed=7)
    back, notes = C.api_to_chain(C.chain_to_api(chain), [])
    strip = lambda c: [{k: v for k, v in s.items() if k != "result"} for s in c]  # noqa: E731
    assert strip(back) == strip(chain) and notes == []


@pytest.mark.parametrize("path", sorted(WORKFLOWS_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_example_workflow_opens_as_a_chain(path: Path):
    chain, _ = C.api_to_chain(load_workflow(path).to_api(), [])
    assert 1 <= len(chain) <= C.MAX_STEPS
    C.chain_to_api(chain)  # and converts back


def test_api_to_chain_refuses_what_it_cannot_show():
    with pytest.raises(C.ChainError, match="none of the four"):
        C.api_to_chain({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}, [])
    chain, notes = C.api_to_chain({"1": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["9", 0], "prompt": "p"}},
                                   "9": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}}}, [])
    assert chain[0]["inputs"] == [] and "missing.png" in notes[0]


def test_load_image_names_resolve_as_the_executor_reads_them(tmp_path):
    """ComfyUI's file pickers write "cat.png [input]"; the executor strips the suffix, so does the canvas."""
    (tmp_path / "cat.png").write_bytes(b"x")
    (tmp_path.parent / "outside.png").write_bytes(b"x")

    def open_with(name: str) -> tuple[list[dict], list[str]]:
        return C.api_to_chain({"1": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["2", 0], "prompt": "p"}},
                               "2": {"class_type": "LoadImage", "inputs": {"image": name}}}, [tmp_path])

    for name in ("cat.png", "cat.png [input]", str(tmp_path / "cat.png")):
        chain, notes = open_with(name)
        assert chain[0]["inputs"] == [{"upload": str((tmp_path / "cat.png").resolve())}] and not notes, name
    for name in ("../outside.png", str(tmp_path.parent / "outside.png"), "", "cat\x00.png", "dog.png [input]"):
        chain, notes = open_with(name)
        assert chain[0]["inputs"] == [] and len(notes) == 1 and "not found" in notes[0], name


def test_api_to_chain_refuses_a_cycle_and_reads_in_dependency_order():
    cyclic = {"1": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["2", 0], "prompt": "a"}},
              "2": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["1", 0], "prompt": "b"}}}
    with pytest.raises(C.ChainError, match="^The workflow has a cycle, so it cannot be shown as a chain.$"):
        C.api_to_chain(cyclic, [])
    backwards = {"1": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["10", 0], "prompt": "then edit"}},
                 "10": {"class_type": "GPTImage2TextToImage", "inputs": {"prompt": "first draw"}},
                 "2": {"class_type": "GPTImage2TextToImage", "inputs": {"prompt": "unrelated", "bogus": ["99", 0]}}}
    chain, _ = C.api_to_chain(backwards, [])
    assert [s["prompt"] for s in chain] == ["unrelated", "first draw", "then edit"]  # ties: numeric id
    assert chain[2]["inputs"] == [{"step": 1, "pick": None}]
    with pytest.raises(C.ChainError, match="'inputs' must be an object"):
        C.api_to_chain({"1": {"class_type": "GPTImage2TextToImage", "inputs": ["not", "a", "dict"]}}, [])


def test_chain_usage_sums_fields_and_leaves_absent_ones_out():
    from gpt_image_nodes.ui.runner import chain_usage

    chain = three_step_chain("a lighthouse", "make it night")
    chain[0]["result"] = {"usage": {"prompt_tokens": 3, "total_tokens": 10, "completion_tokens_details": {"image_tokens": 7}}}
    chain[1]["result"] = {"usage": {"prompt_tokens": 4, "total_tokens": 6, "completion_tokens_details": {"image_tokens": 2, "reasoning_tokens": 1}}}
    assert chain_usage(chain) == {"prompt_tokens": 7, "total_tokens": 16,
                                  "completion_tokens_details": {"image_tokens": 9, "reasoning_tokens": 1}}
    assert chain_usage(three_step_chain("a lighthouse", "make it night")) == {}


def test_read_form_applies_edits_and_refuses_forward_references():
    chain = three_step_chain("a lighthouse", "make it night")
    values = []
    for k, step in enumerate(chain):
        row = {"type": step["type"], "prompt": f"p{k}", "size": "1024x1024", "quality": "low", "n": 2, "seed": 5, "inputs": ["step:2:all"] if k == 1 else ([] if k == 0 else ["step:1:all"])}
        values += [row[f] for f in FIELDS]
    out = read_form(chain, values)
    assert [s["prompt"] for s in out] == ["p0", "p1", "p2"]
    assert out[0]["n"] == 2 and out[0]["size"] == "1024x1024" and out[0]["seed"] == 5
    assert out[1]["inputs"] == []  # step 3 is not earlier than step 2
    values[2 * len(FIELDS) + FIELDS.index("inputs")] = ["step:1:all", "step:0:all"]
    assert read_form(chain, values)[2]["inputs"] == [{"step": 0, "pick": None}]  # newest choice wins
    assert out[2]["inputs"] == [{"step": 1, "pick": None}]
    assert C.output_count(out, 1) == 2  # n=2 edit of a single image


def test_slot_views_show_only_the_chain_and_describe_has_no_size():
    views = slot_views(three_step_chain("a lighthouse", "make it night"))
    assert [v["group"]["visible"] for v in views] == [True] * 3 + [False] * (C.MAX_STEPS - 3)
    assert views[2]["size"]["visible"] is False and views[2]["prompt"]["label"] == "Question"
    assert views[1]["inputs"]["choices"] == [("Step 1 (TextToImage)", "step:0:all")]
    assert status_markdown({"result": {"status": "cached", "usage": {"total_tokens": 9}}}).startswith("**From cache**")
    assert "boom" in status_markdown({"result": {"status": "error", "error": "boom"}})


def test_threads_saving_the_same_image_at_once_all_get_the_whole_file(tmp_path):
    """Each writer has its own temporary file: none reads another's half-written one or loses
    the rename race, and none is left behind."""
    import threading

    from gpt_image_nodes.ui.session import save_png

    arr = np.random.default_rng(1).integers(0, 255, (256, 384, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    for round_ in range(5):
        folder = tmp_path / f"round-{round_}"
        folder.mkdir()
        start, results, errors = threading.Barrier(12), [], []

        def save() -> None:
            start.wait()
            try:
                results.append(save_png(img, folder, "result"))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=save) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(set(results)) == 1
        assert [p.name for p in folder.iterdir()] == [results[0].name]
        assert np.array_equal(np.asarray(Image.open(results[0])), arr)


def test_uploads_are_stored_as_lossless_png(tmp_path):
    store = SessionStore(tmp_path / "root")
    session = store.get("abc")
    arr = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "in.webp", lossless=True)
    png = import_upload(tmp_path / "in.webp", session.inputs)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.parent == session.inputs
    assert np.array_equal(np.asarray(Image.open(png)), arr)
    assert import_upload(tmp_path / "in.webp", session.inputs) == png  # content-addressed
    store.close("abc")
    assert not session.root.exists()


def test_hosted_base_urls_must_be_allow_listed():
    local = dict(OFFLINE_ENV)
    assert check_base_url("http://127.0.0.1:9/v1", local) == "http://127.0.0.1:9"
    hosted = {**OFFLINE_ENV, "SPACE_ID": "me/canvas"}
    assert check_base_url("https://api.yisu.com/v1/chat/completions", hosted) == "https://api.yisu.com"
    for bad in ("http://127.0.0.1:8000", "http://169.254.169.254", "https://evil.example.com"):
        with pytest.raises(ConfigurationError, match="may not send requests"):
            check_base_url(bad, hosted)
    listed = {**hosted, "GPT_IMAGE_ALLOWED_HOSTS": "gw.example.com, 10.0.0.5, *.corp.example"}
    assert check_base_url("https://gw.example.com", listed) and check_base_url("http://10.0.0.5", listed)
    with pytest.raises(ConfigurationError):
        check_base_url("https://api.yisu.com", listed)  # the list replaces the default
    with pytest.raises(ConfigurationError):
        check_base_url("http://localhost:1", {**hosted, "GPT_IMAGE_ALLOWED_HOSTS": "*"})


def test_session_settings_and_banner():
    s = session_settings({}, OFFLINE_ENV)
    assert s.offline and banner(s) == OFFLINE_BANNER
    typed = {"api_key": "sk-typed-123456789", "base_url": "https://gw.example.com", "model": ""}
    s = session_settings(typed, OFFLINE_ENV)
    assert s.backend == "remote" and s.base_url == "https://gw.example.com"
    assert "key you entered" in banner(s, typed) and "sk-typed" not in banner(s, typed)
    # Hosted, the server's own key never follows a visitor's base URL.
    server_key = {**OFFLINE_ENV, "SPACE_ID": "me/canvas", "GPT_IMAGE_API_KEY": "sk-server-123456789"}
    s = session_settings({"base_url": "https://gw.example.com"}, server_key)
    assert s.base_url == "https://api.yisu.com" and s.api_key == "sk-server-123456789"
