"""The client over real HTTP on loopback against the offline server: modes, variants, streams."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from PIL import Image

from gpt_image_nodes.nodes import ImageRequest, Mode, errors, text_to_image
from gpt_image_nodes.nodes.offline import ANSWER_SHAPES, STREAM_SHAPES


def run(coro):
    return asyncio.run(coro)


def red_image(size=(96, 64)) -> Image.Image:
    return Image.new("RGB", size, (220, 30, 30))


# -- requests exactly as the seed shows them ------------------------------------------------

def test_text_to_image_request_matches_seed(srv, make_client):
    client = make_client(sync=True)
    result = client.text_to_image("生成一只坐在月球上的橘猫,超写实风格", size=None, quality=None, n=None)
    body = json.loads(srv.bodies[-1])
    assert body == {"model": "gpt-5.4-image-2", "messages": [{"role": "user", "content": "生成一只坐在月球上的橘猫,超写实风格"}]}
    assert len(result.images) == 1 and result.images[0].size == (1024, 1024)
    assert result.request_id.startswith("chatcmpl_img_")
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_edit_request_matches_seed(srv, make_client):
    client = make_client(sync=True)
    result = client.edit_image(red_image(), "给这只猫戴上墨镜", size="1024x1024", quality="high", n=1)
    body = json.loads(srv.bodies[-1])
    content = body["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image"]
    assert content[0] == {"type": "text", "text": "给这只猫戴上墨镜"}
    assert content[1]["image"].startswith("data:image/png;base64,")
    assert (body["size"], body["quality"], body["n"]) == ("1024x1024", "high", 1)
    assert "stream" not in body
    assert result.images[0].size == (1024, 1024)


def test_multi_merge_keeps_order(srv, make_client):
    client = make_client(sync=True)
    a, b, c = red_image(), Image.new("RGB", (50, 50), "blue"), Image.new("RGB", (40, 40), "green")
    client.multi_merge([a, b, c], "将两张图片中的人物合并到同一个场景中")
    content = json.loads(srv.bodies[-1])["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image", "image", "image"]
    assert srv.requests[-1]["mode"] == "multi_merge" and srv.requests[-1]["images"] == 3


def test_describe(srv, make_client):
    client = make_client(sync=True)
    result = client.describe(red_image(), "请描述这张图片")
    assert "red" in result.text.lower()
    body = json.loads(srv.bodies[-1])
    assert set(body) == {"model", "messages"}
    assert srv.requests[-1]["mode"] == "describe"


def test_validation_before_sending(srv, make_client):
    client = make_client(sync=True)
    for kwargs, needle in [
        (dict(size="512x512"), "'1024x1024'"),
        (dict(quality="ultra"), "'low', 'medium', 'high', 'auto'"),
        (dict(n=0), "from 1 to"),
        (dict(n=2.5), "whole number"),
    ]:
        with pytest.raises(errors.InvalidInputError, match=needle):
            client.text_to_image("a cat", **kwargs)
    with pytest.raises(errors.InvalidInputError, match="empty"):
        client.text_to_image("   ")
    with pytest.raises(errors.InvalidInputError, match="32,000"):
        client.text_to_image("x" * 100_000)
    with pytest.raises(errors.InvalidInputError, match="at least 2"):
        client.multi_merge([red_image()], "merge")
    assert srv.stats["requests"] == 0


def test_n_images_in_order_and_distinct(srv, make_client):
    result = make_client(sync=True).text_to_image("blue and orange", n=3)
    assert len(result.images) == 3
    arrays = [np.asarray(img) for img in result.images]
    assert not np.array_equal(arrays[0], arrays[1])


def test_deterministic_images(srv, make_client):
    client = make_client(sync=True)
    a = client.text_to_image("a green tree", size="1024x1024").data[0]
    b = client.text_to_image("a green tree", size="1024x1024").data[0]
    assert a == b


# -- every answer variant -------------------------------------------------------------------

@pytest.mark.parametrize("shape", ANSWER_SHAPES)
def test_every_answer_shape(srv, make_client, shape):
    srv.answer_shape = shape
    result = make_client(sync=True).text_to_image("a red square", size="1024x1536", n=2)
    assert len(result.images) == 2
    assert all(img.size == (1024, 1536) for img in result.images)
    if shape == "markdown_link":
        assert srv.stats["image_fetches"] == 2
        assert srv.stats["image_fetch_authorization"] == [None, None]


@pytest.mark.parametrize("shape", STREAM_SHAPES)
def test_every_stream_shape(srv, make_client, shape):
    srv.stream_shape = shape
    events = []
    result = make_client(sync=True).text_to_image("a purple moon", n=2, stream=True, on_progress=events.append)
    assert len(result.images) == 2
    kinds = [e.kind for e in events]
    assert kinds.count("image") == 2
    if shape != "json":
        assert any(e.kind == "text" and "正在生成图片" in e.text for e in events)


@pytest.mark.parametrize("shape", STREAM_SHAPES)
def test_streamed_describe(srv, make_client, shape):
    srv.stream_shape = shape
    result = make_client(sync=True).describe(red_image(), stream=True)
    assert "red" in result.text.lower()


def test_stream_request_sets_stream_true(srv, make_client):
    make_client(sync=True).text_to_image("x", stream=True)
    assert json.loads(srv.bodies[-1])["stream"] is True


def test_size_auto_reads_size_from_answer(srv, make_client):
    result = make_client(sync=True).edit_image(red_image((300, 200)), "make it grayscale", size="auto")
    assert result.images[0].size == (300, 200)


def test_async_requests_run_concurrently(srv, make_client):
    srv.latency = 0.5
    client = make_client()

    async def main():
        return await asyncio.gather(*[text_to_image(client, f"p{i}") for i in range(4)])

    import time
    start = time.monotonic()
    results = run(main())
    assert len(results) == 4 and time.monotonic() - start < 1.5
    assert srv.stats["requests"] == 4


def test_request_body_is_valid_json_with_spliced_images():
    url = b"data:image/png;base64,QUJD"
    req = ImageRequest.build(Mode.MULTI_MERGE, 'quote " and \\ and 中文', [url, url])
    body = json.loads(req.body("m"))
    assert body["messages"][0]["content"][1]["image"] == url.decode()
    assert body["messages"][0]["content"][0]["text"] == 'quote " and \\ and 中文'
