"""The headless runner, in-process through ``main`` and once as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

import gpt_image_nodes
from gpt_image_nodes.nodes.cli import main
from gpt_image_nodes.nodes.workflow import DONE_MARKER

WORKFLOWS = Path(gpt_image_nodes.__file__).resolve().parent / "workflows"
CHAIN_UI = WORKFLOWS / "chain_edit_edit_describe.json"


@pytest.fixture
def env(srv_env):
    return srv_env


def test_run_then_rerun_from_the_disk_cache(env, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(CHAIN_UI), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "4 requests sent, 0 cache hits" in captured.out and env.stats["requests"] == 4
    assert "node 4 (GPTImage2Describe) says: A 1024×1024 image" in captured.out
    assert 'node 3 EditImage "Mirror": done' in captured.err and "生成中" in captured.err  # streamed text shown
    assert sorted(p.name for p in out.iterdir()) == ["GPTImage2Describe_4_00001_.txt", "chain_edit_edit_describe_00001_.png"]
    with Image.open(out / "chain_edit_edit_describe_00001_.png") as img:
        assert img.size == (1024, 1024) and len(set(img.getpixel((500, 500)))) == 1  # grayscale, mirrored

    assert main(["run", str(CHAIN_UI), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "0 requests sent, 4 cache hits" in captured.out and captured.err == "" and env.stats["requests"] == 4

    assert main(["run", str(CHAIN_UI), "--out", str(out), "-q", "--set", "Mirror.prompt=rotate it", "--set", '4.question="What colours?"']) == 0
    assert "2 requests sent, 2 cache hits" in capsys.readouterr().out and env.stats["requests"] == 6
    assert main(["run", str(CHAIN_UI), "--out", str(out), "-q", "--no-cache"]) == 0
    assert env.stats["requests"] == 10


@pytest.mark.parametrize("args, message", [
    (["--set", "2.n=two"], "node 2 (GPTImage2EditImage): input 'n' must be a whole number"),
    (["--set", "2.prompt="], "node 2 (GPTImage2EditImage): input 'prompt': The prompt is empty"),
    (["--set", "nothing"], "must look like NODE.INPUT=VALUE"),
    (["--set", "9.prompt=x"], "There is no node '9'"),
])
def test_invalid_runs_exit_2_naming_the_node_and_send_nothing(args, message, env, tmp_path, capsys):
    assert main(["run", str(CHAIN_UI), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Nothing was sent" in err and "Traceback" not in err
    assert env.stats["requests"] == 0 and not (tmp_path / "out").exists()


def test_an_unknown_node_type_and_usage_errors_exit_2(env, tmp_path, capsys):
    wf = json.loads((WORKFLOWS / "api" / "text_to_image.json").read_text())
    wf["7"] = {"class_type": "KSampler", "inputs": {}}
    (tmp_path / "wf.json").write_text(json.dumps(wf))
    assert main(["run", str(tmp_path / "wf.json")]) == 2
    assert "node 7 (KSampler): unknown node type" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run"]) == 2 and main([]) == 2
    assert main(["--help"]) == 0 and "run,serve,canvas" in capsys.readouterr().out
    assert main(["serve", "--help"]) == 0 and "--latency" in capsys.readouterr().out
    assert env.stats["requests"] == 0


def test_a_failed_node_exits_1_and_keeps_what_finished(env, tmp_path, capsys):
    wf = {
        "1": {"class_type": "GPTImage2TextToImage", "inputs": {"prompt": "a red circle on blue", "size": "1024x1024"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "first"}},
        "3": {"class_type": "GPTImage2EditImage", "inputs": {"image": ["1", 0], "prompt": "make it grayscale"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "edited"}},
    }
    (tmp_path / "wf.json").write_text(json.dumps(wf))
    env.inject("slow", 1, delay=0.0)  # request 1 is answered, request 2 is refused
    env.inject("status", 1, status=400, message="Invalid image format.")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "wf.json"), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "error: node 3 (GPTImage2EditImage) failed: " in captured.err and "Invalid image format." in captured.err
    assert "Not run because of it: node 4 (SaveImage)" in captured.err and "Traceback" not in captured.err
    assert [p.name for p in out.iterdir()] == ["first_00001_.png"]
    assert main(["run", str(tmp_path / "wf.json"), "--out", str(out), "-q"]) == 0
    assert "1 request sent, 1 cache hit" in capsys.readouterr().out and env.stats["requests"] == 3


def test_backend_offline_needs_no_key(env, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GPT_IMAGE_API_KEY")
    wf = WORKFLOWS / "api" / "describe_image.json"
    assert main(["run", str(wf), "--out", str(tmp_path / "out"), "--backend", "offline", "-q"]) == 0
    assert "2 requests sent" in capsys.readouterr().out and env.stats["requests"] == 0  # the built-in server answered
    assert main(["run", str(wf), "--out", str(tmp_path / "out"), "--backend", "remote", "-q"]) == 1
    assert "No API key is configured" in capsys.readouterr().err


def test_ctrl_c_during_a_batch_then_resume(env, tmp_path, capsys):
    env.latency = 0.1
    items = tmp_path / "items.csv"
    items.write_text("id,Red circle.prompt\n" + "".join(f"item{i:02d},a red circle on blue number {i}\n" for i in range(20)))
    out = tmp_path / "out"
    args = ["run", str(WORKFLOWS / "text_to_image.json"), "--out", str(out), "--batch", str(items), "--concurrency", "2", "-q"]

    def press_ctrl_c_after_10() -> None:
        deadline = time.monotonic() + 20
        while len(list(out.glob(f"*/{DONE_MARKER}"))) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=press_ctrl_c_after_10)
    watcher.start()
    assert main(args) == 130
    watcher.join()
    first = env.stats["requests"]
    assert 10 <= first < 20 and len(list(out.glob(f"*/{DONE_MARKER}"))) == first
    assert "Run the same command again" in capsys.readouterr().err
    env.latency = 0.0
    assert main(args) == 0
    assert f"{20 - first} item(s) done now, {first} already done" in capsys.readouterr().out
    assert env.stats["requests"] == 20 and len(list(out.glob("item*/text_to_image_00001_.png"))) == 20


def test_as_a_real_subprocess(env, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gpt_image_nodes.nodes.cli", "run", str(WORKFLOWS / "api" / "merge_two_generated.json"),
         "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c2"), "--concurrency", "2"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr
    assert "3 requests sent" in proc.stdout and "merge_two_generated_00001_.png" in proc.stdout
    assert 'node 3 MultiMerge "Merge": done' in proc.stderr
    assert env.stats["requests"] == 3 and (tmp_path / "out" / "merge_two_generated_00001_.png").is_file()
    assert list((tmp_path / "c2").glob("*/*.entry"))


def test_canvas_is_delegated_and_explains_a_missing_gradio(monkeypatch, capsys):
    assert main(["canvas", "--help"]) == 0 and "gpt-image-nodes canvas" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if gradio were not installed
    monkeypatch.delitem(sys.modules, "gpt_image_nodes.ui.app", raising=False)
    assert main(["canvas", "--port", "0"]) == 2
    assert "The canvas needs gradio: pip install 'gpt-image-nodes[canvas]'" in capsys.readouterr().err
