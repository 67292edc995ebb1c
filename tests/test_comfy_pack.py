"""The ComfyUI node pack, loaded the way ComfyUI loads it, run against a real offline server.

No ComfyUI here: the pack is imported with ComfyUI's loader recipe (``spec_from_file_location``
under the mangled folder path, decoy top-level ``nodes``/``utils``), and ComfyUI's hooks are
small fakes with ComfyUI's semantics (tests/test_comfyui_real.py runs the real thing).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import json
import logging
import secrets
import string
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# ComfyUI brings torch; here it is a test dependency that .ci/run installs (CPU build).
torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0 for the CPU build)")

from gpt_image_nodes.nodes.offline import OfflineServer

ROOT = Path(__file__).resolve().parents[1]
# ComfyUI: sys_module_name = <custom_nodes>/<folder> with "." replaced by "_x_".
PACK_NAME = "/tmp/x/custom_nodes/gpt-image.nodes-v2".replace(".", "_x_")
CANARY = "sk-canary-" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))
NAMES = ("GPTImage2TextToImage", "GPTImage2EditImage", "GPTImage2MultiMerge", "GPTImage2Describe")


# -- loading --------------------------------------------------------------------------------------

def _load_pack() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(PACK_NAME, ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def decoys():
    saved = {name: sys.modules.get(name) for name in ("nodes", "utils")}
    made = {name: types.ModuleType(name) for name in saved}
    for name, module in made.items():
        module.COMFYUI_DECOY = True
        sys.modules[name] = module
    yield made
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


@pytest.fixture(scope="module")
def pack(decoys):
    module = _load_pack()
    yield module
    for name in [n for n in sys.modules if n == PACK_NAME or n.startswith(PACK_NAME + ".")]:
        del sys.modules[name]


def sub(name: str) -> types.ModuleType:
    return sys.modules[f"{PACK_NAME}.{name}"]


@pytest.fixture(scope="module")
def srv():
    server = OfflineServer(api_key=CANARY).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path, caplog, pack, srv):
    """The canary key comes from the environment, never a config file; fast retries; fresh pool."""
    monkeypatch.setenv("GPT_IMAGE_API_KEY", CANARY)
    monkeypatch.setenv("GPT_IMAGE_CONFIG", str(tmp_path / "absent.json"))
    for name in ("GPT_IMAGE_BASE_URL", "GPT_IMAGE_MODEL", "GPT_IMAGE_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    # The nodes name the offline server in their base_url widget: the user trusts that host.
    monkeypatch.setenv("GPT_IMAGE_ALLOWED_HOSTS", "127.0.0.1")
    caplog.set_level(logging.DEBUG)
    nt = sub("nodes.node_types")
    fast = sub("nodes.retry").RetryPolicy(max_retries=2, initial_backoff=0.01, max_backoff=0.02)
    sub("nodes.comfy.nodes").set_client_pool(nt.ClientPool(retry=fast))
    srv.reset()
    srv.latency = 0.0
    yield
    srv.clear_faults()
    srv.latency = 0.0
    sub("nodes.comfy.nodes").set_client_pool(None)
    sub("nodes.comfy.runtime").set_hooks(None)
    for record in caplog.records:  # the key never reaches a log record
        text = record.getMessage() + (caplog.handler.formatter or logging.Formatter()).format(record)
        assert CANARY not in text


class FakeComfy:
    """comfy.model_management / comfy.utils / server with ComfyUI's semantics, in sys.modules."""

    def __init__(self, monkeypatch) -> None:
        self.flag = False
        self.texts: list[tuple[str, str]] = []
        self.bars: list[tuple[int, int]] = []
        fake = self

        class InterruptProcessingException(Exception):
            pass

        def throw_if_interrupted():  # ComfyUI's: raises *and clears* the flag
            if fake.flag:
                fake.flag = False
                raise InterruptProcessingException()

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.node_id = total, node_id

            def update_absolute(self, value, total=None, preview=None):
                throw_if_interrupted()  # what ComfyUI's global progress hook does first
                fake.bars.append((value, total or self.total))

        class Server:
            def send_progress_text(self, text, node_id, sid=None):
                fake.texts.append((node_id, text))

        self.Interrupt = InterruptProcessingException
        mm = types.SimpleNamespace(
            processing_interrupted=lambda: fake.flag,
            interrupt_current_processing=lambda value=True: setattr(fake, "flag", value),
            throw_exception_if_processing_interrupted=throw_if_interrupted,
            InterruptProcessingException=InterruptProcessingException,
        )
        monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
        monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
        monkeypatch.setitem(sys.modules, "comfy.utils", types.SimpleNamespace(ProgressBar=ProgressBar))
        monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=Server())))


@pytest.fixture
def comfy(monkeypatch):
    fake = FakeComfy(monkeypatch)
    yield fake
    assert all(CANARY not in text for _, text in fake.texts)  # nor in the node's text


# -- helpers --------------------------------------------------------------------------------------

def run(pack, name: str, **inputs):
    node = pack.NODE_CLASS_MAPPINGS[name]()
    return asyncio.run(node.execute(unique_id="7", **inputs))


def remote(srv, **kw):
    return {"backend": "remote", "base_url": srv.url, "model": "", "stream": True, **kw}


def solid(*colours, size=(48, 40)) -> torch.Tensor:
    """A batch of solid images, values exact multiples of 1/255 (uint8 -> float, as ComfyUI)."""
    pixels = np.stack([np.broadcast_to(np.array(c, np.uint8), (size[1], size[0], 3)) for c in colours])
    return torch.from_numpy(pixels.copy()).float() / 255.0


def noise(h=40, w=48, seed=1) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)).float() / 255.0


def assert_clean(exc: BaseException) -> None:
    """A clear message (not just a type), and no key anywhere in the exception chain."""
    assert len(str(exc)) > 20 and str(exc) != type(exc).__name__
    while exc is not None:
        assert CANARY not in str(exc) and CANARY not in repr(exc) and CANARY not in repr(exc.args)
        exc = exc.__cause__ or exc.__context__


# -- loading and node definitions -----------------------------------------------------------------

def test_loads_like_comfyui_under_an_awkward_name(pack, decoys):
    assert list(pack.NODE_CLASS_MAPPINGS) == list(NAMES)
    specs = sub("nodes.node_types").NODE_TYPES
    assert pack.NODE_DISPLAY_NAME_MAPPINGS == {n: specs[n].display_name for n in NAMES}
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["GPTImage2TextToImage"] == "GPT Image 2 · Text to Image"
    assert (ROOT / pack.WEB_DIRECTORY / "gpt_image_nodes.js").is_file()
    for name, module in decoys.items():  # ComfyUI's own top-level modules are left alone
        assert sys.modules[name] is module and not hasattr(module, "NODE_CLASS_MAPPINGS")


def test_import_is_light_and_has_no_side_effects():
    """In a fresh interpreter: no torch, no threads, no client, no server, no env change."""
    code = f"""
import importlib.util, os, sys, threading, types
sys.modules['nodes'] = types.ModuleType('nodes'); sys.modules['utils'] = types.ModuleType('utils')
env, path = dict(os.environ), list(sys.path)
spec = importlib.util.spec_from_file_location({PACK_NAME!r}, {str(ROOT / '__init__.py')!r})
m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m)
assert len(m.NODE_CLASS_MAPPINGS) == 4
assert 'torch' not in sys.modules and 'gradio' not in sys.modules, 'heavy import'
assert threading.active_count() == 1, threading.enumerate()
assert sys.modules[{PACK_NAME!r} + '.nodes.comfy.nodes']._pool is None
assert dict(os.environ) == env and sys.path == path
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_input_types_outputs_and_class_attributes(pack):
    specs = sub("nodes.node_types").NODE_TYPES
    for name in NAMES:
        cls, spec = pack.NODE_CLASS_MAPPINGS[name], specs[name]
        types_ = cls.INPUT_TYPES()
        json.dumps(types_)  # /object_info serialises it
        assert types_["hidden"] == {"unique_id": "UNIQUE_ID"}
        flat = {**types_["required"], **types_["optional"]}
        assert list(flat) == [s.name for s in spec.inputs]  # required first, then optional, in order
        for key, (kind, options) in flat.items():
            assert options.get("tooltip"), f"{name}.{key} has no tooltip"
            assert "key" not in key.lower()  # the API key is never a widget
        assert flat["prompt" if "prompt" in flat else "question"][1]["multiline"] is True
        assert flat["seed"][0] == "INT" and flat["seed"][1]["control_after_generate"] is True
        assert {"backend", "base_url", "model", "stream"} <= set(types_["optional"])
        assert flat["backend"][0] == ["auto", "remote", "offline"] and flat["base_url"][1]["default"] == ""
        assert cls.RETURN_TYPES == tuple(o.kind for o in spec.outputs)
        assert len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(cls.OUTPUT_TOOLTIPS)
        assert cls.CATEGORY == "GPT Image 2" and cls.DESCRIPTION == spec.description and cls.API_NODE is False
        assert cls.OUTPUT_NODE is (name == "GPTImage2Describe")
        assert cls.FUNCTION == "execute" and asyncio.iscoroutinefunction(getattr(cls, cls.FUNCTION))
    assert "mask" in pack.NODE_CLASS_MAPPINGS["GPTImage2EditImage"].INPUT_TYPES()["optional"]
    merge = pack.NODE_CLASS_MAPPINGS["GPTImage2MultiMerge"].INPUT_TYPES()
    assert {"image_1", "image_2"} <= set(merge["required"])
    assert [f"image_{i}" for i in range(3, 9)] == [k for k in merge["optional"] if k.startswith("image_")]


# -- tensors --------------------------------------------------------------------------------------

def test_tensor_conversions(pack):
    t = sub("nodes.comfy.tensors")
    x = torch.tensor([[[[0.0, 0.5 / 255, 1.5 / 255], [-3.0, 2.0, 254.5 / 255]]]])  # [1,1,2,3]
    assert np.asarray(t.image_to_pils(x)[0]).tolist() == [[[0, 0, 2], [0, 255, 254]]]  # round half even
    assert t.image_to_pils(x[0])[0].size == (2, 1)  # [H,W,C] is a batch of one
    assert t.image_to_pils(torch.rand(2, 5, 4, 4))[1].mode == "RGBA"
    masks = t.mask_to_pils(torch.ones(6, 7))
    assert len(masks) == 1 and masks[0].mode == "L" and masks[0].size == (7, 6)
    assert len(t.mask_to_pils(torch.zeros(3, 6, 7))) == 3
    u8 = np.random.default_rng(0).integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    back = t.pils_to_image([Image.fromarray(p) for p in u8])
    assert back.dtype == torch.float32 and tuple(back.shape) == (2, 6, 7, 3)
    assert np.array_equal(t.to_uint8(back.numpy()), u8)
    assert "torch" not in t.__dict__  # imported inside functions only


@pytest.mark.parametrize("bad, words", [
    (torch.full((1, 4, 4, 3), float("nan")), ["'image'", "NaN"]),
    (torch.tensor([[[[0.1, float("inf"), 0.2]]]]), ["'image'", "infinite"]),
    (torch.rand(1, 4, 4, 2), ["'image'", "shape"]),
])
def test_bad_tensors_are_refused_with_the_input_name(pack, srv, bad, words):
    with pytest.raises(sub("nodes.errors").InvalidInputError) as info:
        run(pack, "GPTImage2EditImage", image=bad, prompt="invert", size="auto", quality="low", n=1, seed=0, **remote(srv))
    assert all(w in str(info.value) for w in words), str(info.value)
    assert srv.stats["requests"] == 0


# -- running the four nodes -----------------------------------------------------------------------

def test_text_to_image_n2_with_progress(pack, srv, comfy):
    images, text, usage = run(pack, "GPTImage2TextToImage", prompt="a red cat", size="1024x1024", quality="low", n=2, seed=0, **remote(srv))
    assert images.dtype == torch.float32 and tuple(images.shape) == (2, 1024, 1024, 3)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert srv.stats["requests"] == 1 and isinstance(text, str) and isinstance(json.loads(usage), dict)
    shown = [t for node, t in comfy.texts if node == "7"]
    assert any("正在生成图片" in t for t in shown), shown  # streamed text reaches the node
    assert shown[-1].startswith("Done: 2 image(s) (1024x1024)")
    values = [v for v, _ in comfy.bars]
    assert values == sorted(values) and comfy.bars[-1][0] == comfy.bars[-1][1]  # monotonic, ends full


def test_edit_batch_of_three_is_three_requests_in_order(pack, srv, comfy):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images, _, usage = run(pack, "GPTImage2EditImage", image=solid(*colours), prompt="invert the colours", size="auto", quality="low", n=1, seed=0, **remote(srv, stream=False))
    assert srv.stats["requests"] == 3 and tuple(images.shape) == (3, 40, 48, 3)
    for out, colour in zip(images, colours):  # inverted, in input order
        assert np.allclose(out.mean(dim=(0, 1)).numpy(), 1 - np.array(colour) / 255, atol=0.02)
    assert json.loads(usage)["total_tokens"] > 0  # summed over the 3 requests (JSON answers carry usage)
    assert any(t.startswith("[3/3]") or "\n[3/3]" in t for _, t in comfy.texts)


def test_edit_with_mask_changes_only_the_masked_pixels(pack, srv):
    image = noise()
    mask = torch.zeros(40, 48)
    mask[10:30, 12:36] = 1.0
    out, _, _ = run(pack, "GPTImage2EditImage", image=image, prompt="invert", size="auto", quality="low", n=2, seed=0, mask=mask, **remote(srv))
    assert tuple(out.shape) == (2, 40, 48, 3)
    inside = mask.bool()
    for edited in out:
        assert torch.equal(edited[~inside], image[0][~inside])  # exactly the input's pixels
        assert (edited[inside] - image[0][inside]).abs().mean() > 0.2


def test_multi_merge_sends_images_in_input_order(pack, srv):
    red, green, blue, yellow = ((255, 0, 0),), ((0, 255, 0),), ((0, 0, 255),), ((255, 255, 0),)
    images, _, _ = run(pack, "GPTImage2MultiMerge", image_1=solid(*red), image_2=solid(*green), prompt="combine", size="1024x1024", quality="low", n=1, seed=0,
                       image_3=solid(*blue), image_5=solid(*yellow), **remote(srv))
    assert tuple(images.shape) == (1, 1024, 1024, 3) and srv.stats["requests"] == 1
    content = json.loads(srv.bodies[-1])["messages"][0]["content"]
    urls = [part["image"] for part in content if part.get("type") == "image"]
    sent = [Image.open(io.BytesIO(base64.b64decode(u.partition(",")[2]))).convert("RGB").getpixel((0, 0)) for u in urls]
    assert sent == [red[0], green[0], blue[0], yellow[0]]


def test_describe_is_an_output_node_and_returns_text(pack, srv, comfy):
    result = run(pack, "GPTImage2Describe", image=solid((230, 20, 20)), question="What colour?", seed=0, **remote(srv))
    description, usage = result["result"]
    assert result["ui"] == {"text": [description]} and "red" in description.lower()
    assert comfy.texts[-1] == ("7", description)  # the answer stays on the node
    batch = run(pack, "GPTImage2Describe", image=solid((230, 20, 20), (20, 20, 230)), question="", seed=0, **remote(srv))
    assert batch["result"][0].startswith("[1] ") and "\n\n[2] " in batch["result"][0]
    assert srv.stats["requests"] == 3 and CANARY not in description + usage + batch["result"][0]


def test_offline_backend_needs_no_key(pack, monkeypatch):
    monkeypatch.delenv("GPT_IMAGE_API_KEY")
    images, _, _ = run(pack, "GPTImage2TextToImage", prompt="a boat", size="1024x1024", quality="low", n=1, seed=0, backend="offline", base_url="", model="", stream=False)
    assert tuple(images.shape) == (1, 1024, 1024, 3)


def test_the_client_pool_is_reused(pack, srv):
    nodes = sub("nodes.comfy.nodes")
    nodes.set_client_pool(None)
    for _ in range(2):
        run(pack, "GPTImage2TextToImage", prompt="x", size="1024x1024", quality="low", n=1, seed=0, **remote(srv))
    pool = nodes.client_pool()
    assert pool is nodes.client_pool() and pool("remote", srv.url, "") is pool("remote", srv.url, "")


def test_connections_are_closed_when_the_prompt_loop_ends(pack, srv):
    """ComfyUI runs each prompt in its own asyncio.run(): nothing may outlive that loop."""
    for _ in range(3):
        run(pack, "GPTImage2EditImage", image=solid((1, 2, 3), (4, 5, 6)), prompt="invert", size="auto", quality="low", n=1, seed=0, **remote(srv))
    client = sub("nodes.comfy.nodes").client_pool()("remote", srv.url, "")
    assert len(client._loops) == 0 and not sub("nodes.comfy.runtime")._closers


# -- cancel ---------------------------------------------------------------------------------------

def _cancel_after(seconds: float, flip) -> None:
    timer = threading.Timer(seconds, flip)
    timer.daemon = True
    timer.start()


def test_comfyui_cancel_stops_within_a_second(pack, srv, comfy):
    srv.latency = 5.0
    _cancel_after(0.3, lambda: setattr(comfy, "flag", True))
    start = time.monotonic()
    with pytest.raises(comfy.Interrupt):  # ComfyUI's own exception: shown as interrupted
        run(pack, "GPTImage2TextToImage", prompt="slow", size="1024x1024", quality="low", n=1, seed=0, **remote(srv))
    assert time.monotonic() - start < 1.5
    assert comfy.texts[-1] == ("7", "Cancelled.")


def test_cancel_outside_comfyui_via_overridden_hooks(pack, srv):
    runtime = sub("nodes.comfy.runtime")
    flag = threading.Event()

    class Host(runtime.Hooks):
        def interrupted(self) -> bool:
            return flag.is_set()

    runtime.set_hooks(Host())
    srv.latency = 5.0
    _cancel_after(0.3, flag.set)
    start = time.monotonic()
    with pytest.raises(sub("nodes.errors").CancelledError) as info:
        run(pack, "GPTImage2EditImage", image=solid((1, 2, 3), (4, 5, 6)), prompt="slow", size="auto", quality="low", n=1, seed=0, **remote(srv))
    assert time.monotonic() - start < 1.5
    assert_clean(info.value)


def test_an_interrupt_consumed_by_the_progress_bar_is_not_lost(pack, comfy):
    runtime = sub("nodes.comfy.runtime")
    progress = runtime.NodeProgress(runtime.hooks(), "7")
    comfy.flag = True
    before = list(comfy.bars)
    progress(sub("nodes.client").ProgressEvent("status", "sending request"))
    assert comfy.bars == before and comfy.flag  # the bar is not touched while interrupted
    # A race (flag set between our check and the bar's hook) is caught by the guard:
    progress._guard(lambda: progress._bar.update_absolute(1))
    assert progress.cancelled() and comfy.flag  # remembered, and put back for sibling nodes


# -- errors ---------------------------------------------------------------------------------------

T2I = dict(prompt="a cat", size="1024x1024", quality="low", n=1, seed=0)


def _inject(kind, **params):
    return lambda srv: srv.inject(kind, 10 if kind == "status" else 1, **params)


@pytest.mark.parametrize("case, change, error, words, requests", [
    ("bad size", {"size": "999x999"}, "InvalidInputError", ["size", "1024x1024"], 0),
    ("bad quality", {"quality": "ultra"}, "InvalidInputError", ["quality", "low"], 0),
    ("bad n", {"n": 0}, "InvalidInputError", ["n"], 0),
    ("500 after retries", _inject("status", status=500), "ServerError", ["500", "3 attempts"], 3),
    ("no image", _inject("no_image"), "NoImageError", ["no", "image"], 1),
    ("refusal", _inject("refusal"), "ContentFilterError", ["refused"], 1),
])
def test_error_paths_raise_clear_errors(pack, srv, comfy, case, change, error, words, requests):
    inputs = {**T2I, **remote(srv)}
    if callable(change):
        change(srv)
    else:
        inputs.update(change)
    with pytest.raises(getattr(sub("nodes.errors"), error)) as info:
        run(pack, "GPTImage2TextToImage", **inputs)
    assert all(w.lower() in str(info.value).lower() for w in words), str(info.value)
    assert srv.stats["requests"] == requests
    assert_clean(info.value)
    if requests:
        assert comfy.texts[-1][1].startswith("Failed: ")  # the reason also shows on the node
    if requests > 1:
        assert any("retrying in" in text for _, text in comfy.texts)  # retries show while they happen


def test_wrong_key_is_a_clear_401_without_the_key(pack, comfy):
    with OfflineServer(api_key="sk-the-right-key-0123456789") as other:
        with pytest.raises(sub("nodes.errors").AuthenticationError) as info:
            run(pack, "GPTImage2TextToImage", **T2I, **remote(other))
        assert other.stats["requests"] == 1  # 401 is not retried
    assert "key" in str(info.value).lower()
    assert_clean(info.value)
    assert all(CANARY not in text for _, text in comfy.texts)


def test_missing_key_says_where_to_put_it(pack, srv, monkeypatch):
    monkeypatch.delenv("GPT_IMAGE_API_KEY")
    with pytest.raises(sub("nodes.errors").ConfigurationError) as info:
        run(pack, "GPTImage2TextToImage", **T2I, **remote(srv))
    assert "GPT_IMAGE_API_KEY" in str(info.value) and srv.stats["requests"] == 0


def test_wrong_mask_size_is_refused_before_sending(pack, srv):
    with pytest.raises(sub("nodes.errors").InvalidInputError) as info:
        run(pack, "GPTImage2EditImage", image=noise(), prompt="invert", size="auto", quality="low", n=1, seed=0, mask=torch.ones(20, 20), **remote(srv))
    assert "mask" in str(info.value) and "20x20" in str(info.value) and srv.stats["requests"] == 0


def test_merge_needs_two_images_and_names_bad_ones(pack, srv):
    errors = sub("nodes.errors")
    with pytest.raises(errors.InvalidInputError, match="image_2"):
        run(pack, "GPTImage2MultiMerge", image_1=noise(), image_2=None, prompt="x", size="auto", quality="low", n=1, seed=0, **remote(srv))
    bad = noise()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(errors.InvalidInputError, match="'image_3'"):
        run(pack, "GPTImage2MultiMerge", image_1=noise(), image_2=noise(), image_3=bad, prompt="x", size="auto", quality="low", n=1, seed=0, **remote(srv))
    assert srv.stats["requests"] == 0
