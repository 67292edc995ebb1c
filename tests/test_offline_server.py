"""The offline server over real HTTP (httpx against a started server; no mocks)."""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from gpt_image_nodes.nodes.offline import (
    ANSWER_SHAPES, FAULT_KINDS, STREAM_SHAPES, OfflineServer, run_server_cli)
from gpt_image_nodes.nodes.offline import painter
from gpt_image_nodes.nodes.protocol import CHAT_COMPLETIONS_PATH, DEFAULT_MODEL, MAX_N
from testkit import png_header_only

KEY = "sk-offline-test-key"
CHAT = CHAT_COMPLETIONS_PATH

# The seed's examples, verbatim (whitespace included) where they are complete.
SEED_TEXT_TO_IMAGE = """{
"model":"gpt-5.4-image-2",
"messages":[
{
"role":"user",
"content":"生成一只坐在月球上的橘猫,超写实风格"
}
]
}""".encode()
SEED_STREAM = ('{"model":"gpt-5.4-image-2","stream":true,"messages":'
               '[{"role":"user","content":"生成一辆未来概念跑车"}]}')


# -- helpers ---------------------------------------------------------------------------------
def solid(rgb, size=(64, 48)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def marked(size=(64, 48)) -> Image.Image:
    """Asymmetric test picture: a horizontal gradient with a red block at the top-left."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 2] = 90
    arr[: h // 4, : w // 4] = (255, 0, 0)
    return Image.fromarray(arr, "RGB")


def data_url(img: Image.Image, fmt="PNG", mime=None) -> str:
    buf = io.BytesIO()
    img.save(buf, fmt)
    b64 = base64.b64encode(buf.getvalue()).decode()
    return f"data:{mime or 'image/' + fmt.lower()};base64,{b64}"


def body(prompt, images=(), **fields) -> dict:
    content = prompt if not images else [{"type": "text", "text": prompt}] + [
        {"type": "image", "image": url} for url in images]
    return {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": content}], **fields}


def from_url(url: str, client: httpx.Client | None = None) -> bytes:
    if url.startswith("data:"):
        return base64.b64decode(url.split(",", 1)[1], validate=True)
    assert client is not None
    return client.get(url).content


def images_in(doc: dict, client: httpx.Client | None = None) -> list[bytes]:
    """A small reader for every non-streaming answer shape."""
    out: list[bytes] = []
    for choice in doc["choices"]:
        msg = choice["message"]
        content = msg.get("content")
        for part in content if isinstance(content, list) else []:
            if part["type"] == "image_base64":
                out.append(base64.b64decode(part["image_base64"], validate=True))
            elif part["type"] == "image_url":
                out.append(from_url(part["image_url"]["url"]))
        for entry in msg.get("images") or []:
            out.append(from_url(entry["image_url"]["url"]))
        if isinstance(content, str):
            out += [from_url(u, client) for u in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", content)]
    return out


def sse_data(raw: str) -> list[str]:
    """Data of each SSE event: CRLF, comments, event/id fields, seed-style continuation lines."""
    events, data = [], []
    for line in raw.replace("\r\n", "\n").split("\n"):
        if not line:
            if data:
                events.append("\n".join(data))
            data = []
        elif line.startswith(":") or line.split(":", 1)[0] in ("event", "id", "retry"):
            continue
        else:
            data.append(line[5:].lstrip(" ") if line.startswith("data:") else line)
    if data:
        events.append("\n".join(data))
    return events


def stream_chunks(raw: str) -> tuple[list[dict], bool]:
    events = sse_data(raw)
    done = bool(events) and events[-1] == "[DONE]"
    return [json.loads(e) for e in events if e != "[DONE]"], done


def stream_images(chunks: list[dict]) -> list[bytes]:
    out = []
    for chunk in chunks:
        for choice in chunk.get("choices", []):
            delta = choice.get("delta", {})
            if "image_base64" in delta:
                out.append(base64.b64decode(delta["image_base64"], validate=True))
            for entry in delta.get("images") or []:
                out.append(from_url(entry["image_url"]["url"]))
            out += [from_url(u) for u in re.findall(r"!\[[^\]]*\]\((data:[^)]+)\)",
                                                    delta.get("content") or "")]
    return out


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def srv():
    with OfflineServer(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(srv):
    srv.reset()
    srv.configure(latency=0.0, answer_shape="seed", stream_shape="seed", usage_shape="standard",
                  link_base=None, link_via_redirect=False)
    yield


@pytest.fixture()
def client(srv):
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=10) as c:
        yield c


# -- the seed's examples ---------------------------------------------------------------------
def test_seed_text_to_image_exact_body(srv, client):
    r = client.post(CHAT, content=SEED_TEXT_TO_IMAGE, headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert re.fullmatch(r"chatcmpl_img_[0-9a-f]+", doc["id"])
    assert doc["object"] == "chat.completion" and doc["model"] == DEFAULT_MODEL
    assert isinstance(doc["created"], int)
    (choice,) = doc["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    (part,) = choice["message"]["content"]
    assert part["type"] == "image_base64"
    img = Image.open(io.BytesIO(base64.b64decode(part["image_base64"])))
    assert img.format == "PNG" and img.size == (1024, 1024)
    usage = doc["usage"]
    assert usage["completion_tokens"] == 1560
    assert usage["total_tokens"] == usage["prompt_tokens"] + 1560
    assert srv.bodies[-1] == SEED_TEXT_TO_IMAGE
    assert srv.requests[-1]["mode"] == "text_to_image"
    assert srv.requests[-1]["prompt"] == "生成一只坐在月球上的橘猫,超写实风格"


def test_seed_edit_and_ids_unique(srv, client):
    url = data_url(marked((80, 60)))
    docs = [client.post(CHAT, json=body("给这只猫戴上墨镜", [url])).json() for _ in "ab"]
    assert docs[0]["id"] != docs[1]["id"]
    assert all(d["id"].startswith("chatcmpl_img_edit_") for d in docs)
    (png,) = images_in(docs[0])
    assert Image.open(io.BytesIO(png)).size == (80, 60)  # auto: the input's size
    summary = srv.requests[-1]
    assert summary["mode"] == "edit_image" and summary["image_mimes"] == ["image/png"]
    assert docs[0]["usage"]["prompt_tokens"] == len("给这只猫戴上墨镜") // 4 + 85


def test_seed_multi_merge_keeps_order(srv, client):
    urls = [data_url(solid((230, 20, 20))), data_url(solid((20, 20, 230)))]
    doc = client.post(CHAT, json=body("将两张图片中的人物合并到同一个场景中", urls))
    doc = doc.json()
    assert doc["id"].startswith("chatcmpl_img_edit_")
    px = pixels(images_in(doc)[0])
    assert px.shape == (1024, 1024, 3)
    assert px[512, 100, 0] > 200 and px[512, 100, 2] < 50  # left: first image (red)
    assert px[512, 920, 2] > 200 and px[512, 920, 0] < 50  # right: second image (blue)
    assert srv.stats["by_mode"]["multi_merge"] == 1


def test_seed_describe_names_red(srv, client):
    url = data_url(solid((220, 30, 30)), "JPEG")
    doc = client.post(CHAT, json=body("请描述这张图片", [url])).json()
    assert doc["id"].startswith("chatcmpl_vision_")
    text = doc["choices"][0]["message"]["content"]
    assert isinstance(text, str) and "red" in text and "64×48" in text
    assert srv.requests[-1]["mode"] == "describe" and srv.requests[-1]["image_formats"] == ["jpeg"]


def test_openai_style_image_part_and_gif_input(client):
    gif = data_url(solid((20, 200, 40)).convert("P"), "GIF")
    msg = [{"type": "text", "text": "What is in this picture?"},
           {"type": "image_url", "image_url": {"url": gif}}]
    doc = client.post(CHAT, json={"model": DEFAULT_MODEL,
                                  "messages": [{"role": "user", "content": msg}]}).json()
    assert "green" in doc["choices"][0]["message"]["content"]


def test_seed_stream(srv, client):
    r = client.post(CHAT, content=SEED_STREAM.encode())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    chunks, done = stream_chunks(r.text)
    assert done
    assert chunks[0] == {"choices": [{"delta": {"content": "正在生成图片..."}}]}
    assert len(stream_images(chunks)) == 1 and srv.stats["ok"] == 1


# -- errors ----------------------------------------------------------------------------------
def test_auth(srv, client):
    for value in ("Bearer wrong", "", "Basic x", f"Bearer {KEY}x"):
        headers = {"Authorization": value}
        r = client.post(CHAT, json=body("a cat"), headers=headers)
        assert r.status_code == 401
        assert r.json() == {"error": {"message": "Invalid API key.", "type": "authentication_error",
                                      "code": "invalid_api_key"}}
    with OfflineServer() as open_srv:  # api_key=None: any bearer token, but one is needed
        any_key = {"Authorization": "Bearer anything"}
        assert httpx.post(open_srv.url + CHAT, json=body("x"), headers=any_key).status_code == 200
        assert httpx.post(open_srv.url + CHAT, json=body("x")).status_code == 401


@pytest.mark.parametrize("fields,code", [
    ({"size": "512x512"}, "invalid_size"), ({"quality": "ultra"}, "invalid_quality"),
    ({"n": 0}, "invalid_n"), ({"n": MAX_N + 1}, "invalid_n"), ({"n": "2"}, "invalid_n"),
    ({"n": True}, "invalid_n"), ({"n": 1.5}, "invalid_n"),
])
def test_invalid_fields(client, fields, code):
    r = client.post(CHAT, json=body("a cat", **fields))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code


@pytest.mark.parametrize("url", [
    "data:image/png;base64,!!!!",
    "data:image/png;base64," + base64.b64encode(b"not an image").decode(),
    data_url(solid((1, 2, 3)), "BMP", "image/png"), "https://example.com/cat.png",
    data_url(solid((1, 2, 3)), "PNG", "image/tiff"),
    "data:image/png;base64," + base64.b64encode(png_header_only(8000, 6000)).decode(),
])
def test_invalid_image(client, url):
    r = client.post(CHAT, json=body("make it blue", [url]))
    assert r.status_code == 400
    assert r.json() == {"error": {"message": "Invalid image format.",
                                  "type": "invalid_request_error", "code": "invalid_image"}}


def test_other_request_errors(srv, client):
    assert client.post(CHAT, content=b"{nope").json()["error"]["type"] == "invalid_request_error"
    assert client.post(CHAT, json={"model": DEFAULT_MODEL}).status_code == 400
    r = client.post(CHAT, json={**body("x"), "model": "dall-e-2"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert client.get(CHAT).status_code == 405
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and "error" in r.json()
    big = b'{"model":"gpt-5.4-image-2","x":"' + b"a" * (64 * 1024 * 1024) + b'"}'
    assert client.post(CHAT, content=big).status_code == 413
    assert srv.stats["requests"] == 4 and srv.stats["ok"] == 0


# -- answer and stream shapes ----------------------------------------------------------------
@pytest.mark.parametrize("shape", ANSWER_SHAPES)
def test_answer_shapes(srv, client, shape):
    srv.answer_shape = shape
    doc = client.post(CHAT, json=body("red sun", n=2, size="1536x1024", quality="low")).json()
    found = images_in(doc, client)
    assert len(found) == 2 and found[0] != found[1]
    magic = {"jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}.get(shape, b"\x89PNG")
    assert all(f.startswith(magic) for f in found)
    assert Image.open(io.BytesIO(found[0])).size == (1536, 1024)
    if shape == "markdown_link":
        content = doc["choices"][0]["message"]["content"]
        assert content.startswith("> 进度 **2%**")
        assert f"[下载]({srv.url}/cdn/download/" in content
        assert srv.stats["image_fetches"] == 2 and srv.stats["image_fetch_authorization"] == [
            f"Bearer {KEY}"] * 2  # this test's client sent its key; a real client must not
    if shape == "choices":
        assert [c["index"] for c in doc["choices"]] == [0, 1]


def test_markdown_link_other_host_and_redirect(srv, client):
    srv.configure(answer_shape="markdown_link", link_base=f"http://localhost:{srv.port}",
                  link_via_redirect=True)
    content = client.post(CHAT, json=body("blue")).json()["choices"][0]["message"]["content"]
    link = re.search(r"!\[file_0\]\(([^)]+)\)", content).group(1)
    assert link.startswith(f"{srv.url}/redirect/")
    r = client.get(link)
    assert r.status_code == 302
    assert r.headers["location"].startswith(f"http://localhost:{srv.port}/cdn/")
    r = client.get(link, follow_redirects=True)  # httpx drops the key on a cross-host redirect
    assert r.content.startswith(b"\x89PNG")
    assert srv.stats["image_fetch_authorization"] == [None] and srv.stats["redirects"] == 2
    assert client.get("/cdn/unknown.png").status_code == 404


@pytest.mark.parametrize("shape", STREAM_SHAPES)
def test_stream_shapes(srv, client, shape):
    srv.stream_shape = shape
    r = client.post(CHAT, json=body("green hills", n=2, stream=True))
    assert r.status_code == 200
    if shape == "json":
        assert r.headers["content-type"] == "application/json" and len(images_in(r.json())) == 2
        return
    raw = r.text
    chunks, done = stream_chunks(raw)
    assert chunks[0]["choices"][0]["delta"]["content"] == "正在生成图片..."
    assert len(stream_images(chunks)) == 2
    assert done == (shape != "noisy")
    if shape == "seed_multiline":
        assert "\n}\n" in raw  # continuation lines without a "data:" prefix
        assert any(line and not line.startswith("data:") for line in raw.split("\n"))
    if shape == "noisy":
        for marker in ("\r\n", ": PROCESSING", "event: message", "\nid: "):
            assert marker in raw
        assert raw.endswith("\r\n") and not raw.endswith("\r\n\r\n")
        assert "usage" in chunks[-1] and "[DONE]" not in raw


def test_describe_stream_and_usage_shapes(srv, client):
    req = body("Describe this image.", [data_url(solid((30, 60, 220)))])
    text = client.post(CHAT, json=req).json()["choices"][0]["message"]["content"]
    streamed = {**req, "stream": True, "stream_options": {"include_usage": True}}
    chunks, done = stream_chunks(client.post(CHAT, json=streamed).text)
    assert done and len(chunks) > 2 and "blue" in text
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(deltas) == text
    assert chunks[-1]["usage"]["completion_tokens"] == len(text) // 4
    srv.usage_shape = "extended"
    usage = client.post(CHAT, json=body("x")).json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    srv.usage_shape = "none"
    assert "usage" not in client.post(CHAT, json=body("x")).json()
    with pytest.raises(ValueError):
        srv.answer_shape = "nope"


def test_stream_progress_spread_over_latency(srv, client):
    srv.latency = 0.6
    t0 = time.monotonic()
    arrivals = []
    with client.stream("POST", CHAT, json=body("purple", stream=True)) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - t0)
    assert arrivals[0] < 0.3 and arrivals[-1] >= 0.6
    assert arrivals[2] - arrivals[0] > 0.15  # progress is spread, not bunched at the end


# -- faults ----------------------------------------------------------------------------------
def test_fault_status_bodies_and_fifo(srv, client):
    assert set(FAULT_KINDS) >= {"status", "slow", "hang", "drop", "stream_cut"}
    srv.inject("status", 2, status=429, retry_after="2", retry_after_ms=1500)
    srv.inject("status", status=502, body="html")
    for _ in range(2):
        r = client.post(CHAT, json=body("x"))
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert r.headers["retry-after-ms"] == "1500"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
    r = client.post(CHAT, json=body("x"))
    assert r.status_code == 502 and r.headers["content-type"] == "text/html"
    assert b"<html>" in r.content
    assert client.post(CHAT, json=body("x")).status_code == 200
    for style, check in (("openrouter", lambda r: r.json()["error"]["code"] == 503),
                         ("vllm", lambda r: r.json()["object"] == "error"),
                         ("empty", lambda r: r.content == b""),
                         ("text", lambda r: r.text == "busy")):
        srv.inject("status", status=503, body=style, message="busy")
        r = client.post(CHAT, json=body("x"))
        assert r.status_code == 503 and check(r)
    assert srv.stats["requests"] == 8 and srv.stats["ok"] == 1
    with pytest.raises(ValueError):
        srv.inject("status", statsu=500)


def test_faults_on_the_wire(srv, client):
    srv.inject("slow", delay=0.3)
    t0 = time.monotonic()
    assert client.post(CHAT, json=body("x")).status_code == 200 and time.monotonic() - t0 >= 0.3
    srv.inject("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(CHAT, json=body("x"))
    srv.inject("reset_mid_body")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(CHAT, json=body("x"))
    srv.inject("truncated_json")
    r = client.post(CHAT, json=body("x"))
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    with pytest.raises(ValueError):
        r.json()
    srv.inject("not_json")
    r = client.post(CHAT, json=body("x"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    srv.inject("bad_base64")
    part = client.post(CHAT, json=body("x")).json()["choices"][0]["message"]["content"][0]
    assert part["image_base64"] == "!!!notbase64***"
    srv.inject("no_image")
    msg = client.post(CHAT, json=body("x")).json()["choices"][0]["message"]
    assert msg["content"].startswith("I wasn't able to generate the image")
    srv.inject("refusal")
    choice = client.post(CHAT, json=body("x")).json()["choices"][0]
    assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] is None
    srv.inject("stream_cut")  # a stream-only fault on a non-stream request: plain 500
    assert client.post(CHAT, json=body("x")).status_code == 500
    srv.inject("hang")
    with pytest.raises(httpx.ReadTimeout):
        client.post(CHAT, json=body("x"), timeout=0.3)
    assert client.post(CHAT, json=body("x")).status_code == 200
    assert srv.stats["requests"] == 11 and srv.stats["ok"] == 2


def test_stream_faults(srv, client):
    srv.inject("stream_cut")
    seen = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", CHAT, json=body("x", stream=True)) as r:
            for text in r.iter_text():
                seen.append(text)
    assert "正在生成图片" in "".join(seen) and "image_base64" not in "".join(seen)
    for params in ({}, {"with_finish_reason": True}):
        srv.inject("mid_stream_error", **params)
        chunks, done = stream_chunks(client.post(CHAT, json=body("x", stream=True)).text)
        assert chunks[-1]["error"]["type"] == "server_error" and not done
        assert ("finish_reason" in json.dumps(chunks[-1])) == bool(params)
    srv.inject("garbage_stream")
    events = sse_data(client.post(CHAT, json=body("x", stream=True)).text)
    assert len(events) == 5 + 2 and json.loads(events[0])  # two progress events, then junk
    for event in events[2:]:
        with pytest.raises(ValueError):
            json.loads(event)
    srv.inject("bad_base64")
    chunks, _ = stream_chunks(client.post(CHAT, json=body("x", stream=True)).text)
    assert any(c["choices"][0]["delta"].get("image_base64") == "!!!notbase64***" for c in chunks)
    srv.inject("refusal", text="I can't help with that.")
    chunks, _ = stream_chunks(client.post(CHAT, json=body("x", stream=True)).text)
    finishes = [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]]
    assert "content_filter" in finishes


def test_stop_is_prompt_while_hanging():
    server = OfflineServer().start()
    errors = []

    def hang():
        try:
            httpx.post(server.url + CHAT, json=body("x"), headers={"Authorization": "Bearer k"},
                       timeout=30)
        except httpx.HTTPError as exc:
            errors.append(exc)

    server.inject("hang")
    t = threading.Thread(target=hang)
    t.start()
    deadline = time.monotonic() + 5
    while server.stats["requests"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 1.0
    t.join(2)
    assert not t.is_alive() and errors


# -- images ----------------------------------------------------------------------------------
def test_determinism(client):
    a = client.post(CHAT, json=body("a golden moon", n=2)).json()
    b = client.post(CHAT, json=body("a golden moon", n=2)).json()
    c = client.post(CHAT, json=body("a golden moon!", n=1)).json()
    assert images_in(a) == images_in(b) and images_in(a)[0] != images_in(a)[1]
    assert images_in(c)[0] != images_in(a)[0]
    fresh = painter.encode_image(painter.paint_text_to_image("a golden moon", "auto", "auto", 1))
    assert fresh == images_in(a)[1]


@pytest.mark.parametrize("prompt,check", [
    ("make it black and white", lambda src, out: (out == out[..., :1]).all()),  # R == G == B
    ("invert the colours", lambda src, out: (out == 255 - src).all()),
    ("mirror it", lambda src, out: (out == src[:, ::-1]).all()),
])
def test_edit_ops_over_http(client, prompt, check):
    src = marked()
    doc = client.post(CHAT, json=body(prompt, [data_url(src)])).json()
    assert check(np.asarray(src, np.int16), pixels(images_in(doc)[0]))


def test_edit_ops_in_painter():
    src = marked()
    a = np.asarray(src, np.int16)
    out = lambda p, i=0: np.asarray(painter.apply_edit(src, p, None, i), np.int16)  # noqa: E731
    assert (out("旋转") == np.rot90(a, -1)).all()  # 90° clockwise
    assert (out("翻转 then 旋转") != out("旋转 then 翻转")).any()  # applied in prompt order
    assert out("blur").std() < a.std()
    assert out("brighten").mean() > a.mean() > out("darken").mean()
    assert len(np.unique(out("posterize")[..., 1])) <= 8
    sepia = out("vintage look")
    assert (sepia[..., 0] >= sepia[..., 2]).all()
    assert (out("grayscale", 0) != out("grayscale", 1)).any()  # n variations differ
    default = out("给这只猫戴上墨镜 in pink")
    assert np.abs(default - a).mean() > 20  # tinted and captioned, visibly changed
    assert painter.apply_edit(src, "rotate", "1024x1536").size == (1024, 1536)


def test_text_to_image_palette_and_sizes():
    blue, orange, red = (40, 90, 210), (245, 140, 30), (220, 40, 40)
    assert painter.named_colours("a blue 橘猫 and red") == [blue, orange, red]
    for prompt, name in (("a red balloon", "red"), ("蓝色的海", "blue"), ("green lawn", "green")):
        assert name in painter.describe_image(painter.paint_text_to_image(prompt, "auto", "low", 0))
    low = painter.paint_text_to_image("x", "1024x1536", "low", 0)
    high = painter.paint_text_to_image("x", "1024x1536", "high", 0)
    assert low.size == high.size == (1024, 1536)
    assert painter.merge_images([solid((255, 0, 0))] * 5, "", "1536x1024", 0).size == (1536, 1024)


# -- server plumbing -------------------------------------------------------------------------
def test_control_endpoints_and_stats(srv, client):
    plain = httpx.Client(base_url=srv.url)  # no key: control endpoints are for tests on loopback
    assert plain.get("/health").json() == {"status": "ok", "offline": True}
    assert plain.get("/v1/models").status_code == 401
    assert client.get("/v1/models").json()["data"][0]["id"] == DEFAULT_MODEL
    fault = {"kind": "status", "times": 2, "status": 503}
    assert plain.post("/_offline/faults", json=fault).status_code == 200
    assert plain.post("/_offline/faults", json={"kind": "nope"}).status_code == 400
    assert [client.post(CHAT, json=body("x")).status_code for _ in range(3)] == [503, 503, 200]
    config = plain.post("/_offline/config", json={"answer_shape": "choices", "latency": 0})
    assert config.json()["answer_shape"] == "choices"
    assert plain.post("/_offline/config", json={"answer_shape": "bad"}).status_code == 400
    assert srv.answer_shape == "choices"
    client.post(CHAT, json=body("Describe this image?", [data_url(solid((9, 9, 9)))]))
    client.post(CHAT, json=body("x"), headers={"Authorization": "Bearer nope"})
    stats = plain.get("/_offline/stats").json()
    assert stats["requests"] == 5 and stats["ok"] == 2
    assert stats["by_mode"] == {"text_to_image": 4, "edit_image": 0, "multi_merge": 0,
                                "describe": 1}
    assert [r["mode"] for r in plain.get("/_offline/requests").json()][-2] == "describe"
    assert plain.post("/_offline/reset").status_code == 200
    assert srv.stats["requests"] == 0 and srv.requests == [] and srv.bodies == []
    plain.close()


def test_keep_alive_reuse(srv, client):
    codes = []
    for i in range(20):
        if i % 5 == 4:
            codes.append(client.post(CHAT, json=body("x", size="9x9")).status_code)
        else:
            req = body(f"prompt {i}", stream=i % 2 == 0, quality="low")
            codes.append(client.post(CHAT, json=req).status_code)
    assert codes.count(200) == 16 and codes.count(400) == 4
    assert srv.stats["connections"] == 1


def test_cli_subprocess():
    code = ("import sys; from gpt_image_nodes.nodes.offline.server import run_server_cli; "
            "sys.exit(run_server_cli(['--port', '0', '--key', 'k1']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        pattern = r"Offline GPT-5\.4-Image-2 server on (http://127\.0\.0\.1:\d+) \(key: set\)\n"
        match = re.fullmatch(pattern, line)
        assert match, line
        r = httpx.post(match.group(1) + CHAT, json=body("x"),
                       headers={"Authorization": "Bearer k1"})
        assert r.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()


def test_cli_in_thread_reports_busy_port(srv, capsys):
    assert run_server_cli(["--port", str(srv.port)]) == 1
    assert "Cannot listen" in capsys.readouterr().err
