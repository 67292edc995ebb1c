"""Answer parsing: every shape in SPEC-variants.md, unknown shapes, errors, usage."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from gpt_image_nodes.nodes import errors
from gpt_image_nodes.nodes.answers import Usage, make_api_error, parse_answer


def png(color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


P1, P2 = png("red"), png("blue")
B1, B2 = base64.b64encode(P1).decode(), base64.b64encode(P2).decode()
URL1 = f"data:image/png;base64,{B1}"


def envelope(message=None, choices=None, **extra):
    body = {"id": "chatcmpl_x", "object": "chat.completion", "created": 1, "model": "gpt-5.4-image-2",
            "choices": choices if choices is not None else [{"index": 0, "message": message, "finish_reason": "stop"}]}
    body.update(extra)
    return body


def data_of(answer):
    return [ref.data for ref in answer.images]


def test_seed_shape():
    a = parse_answer(envelope({"role": "assistant", "content": [{"type": "image_base64", "image_base64": B1}, {"type": "image_base64", "image_base64": B2}]},
                              usage={"prompt_tokens": 42, "completion_tokens": 1560, "total_tokens": 1602}))
    assert data_of(a) == [P1, P2]
    assert a.usage.as_dict() == {"prompt_tokens": 42, "completion_tokens": 1560, "total_tokens": 1602}
    assert a.request_id == "chatcmpl_x"


def test_several_choices_in_index_order():
    choices = [{"index": 1, "message": {"content": [{"type": "image_base64", "image_base64": B2}]}},
               {"index": 0, "message": {"content": [{"type": "image_base64", "image_base64": B1}]}}]
    assert data_of(parse_answer(envelope(choices=choices))) == [P1, P2]


def test_image_url_parts_and_text():
    a = parse_answer(envelope({"content": [{"type": "text", "text": "Here is..."}, {"type": "image_url", "image_url": {"url": URL1}}]}))
    assert data_of(a) == [P1] and a.text == "Here is..."


def test_images_list_beside_text():
    a = parse_answer(envelope({"content": "I've generated...", "images": [{"type": "image_url", "image_url": {"url": URL1}, "index": 5}]}))
    assert data_of(a) == [P1] and a.text == "I've generated..."


def test_markdown_data_url():
    a = parse_answer(envelope({"content": f"text\n![image]({URL1})"}))
    assert data_of(a) == [P1] and a.text == "text"


def test_markdown_link_with_progress_and_download_link():
    content = "> 进度 **2%**\n> 进度 **100%**\n![file_0](https://host/cdn/x.png)\n[下载](https://host/cdn/download/x.png)"
    a = parse_answer(envelope({"content": content}))
    assert [r.url for r in a.images] == ["https://host/cdn/x.png"]
    assert "进度" in a.text and "![" not in a.text


def test_jpeg_bytes_labelled_png_are_kept_for_sniffing():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(buf, "JPEG")
    a = parse_answer(envelope({"content": [{"type": "image_base64", "image_base64": base64.b64encode(buf.getvalue()).decode()}]}))
    assert data_of(a)[0][:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("message", [
    {"content": [{"type": "output_image", "result": {"b64_json": B1}}]},
    {"content": [{"type": "image", "image": URL1}]},
    {"content": None, "attachments": [{"kind": "picture", "url": URL1}]},
    {"content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B1}}]},
])
def test_unknown_shapes_that_carry_an_image(message):
    assert data_of(parse_answer(envelope(message))) == [P1]


def test_unknown_part_types_are_skipped():
    a = parse_answer(envelope({"content": [{"type": "thinking", "thinking": "hmm"}, {"type": "image_base64", "image_base64": B1}, {"type": "weird", "x": 3}]}))
    assert data_of(a) == [P1]


def test_images_api_shape():
    assert data_of(parse_answer({"created": 1, "data": [{"b64_json": B1}]})) == [P1]


def test_describe_plain_string_without_index_or_usage():
    a = parse_answer({"id": "chatcmpl_vision_001", "object": "chat.completion", "created": 1, "model": "m",
                      "choices": [{"message": {"role": "assistant", "content": "图片中是一只橘猫"}, "finish_reason": "stop"}]})
    assert a.text == "图片中是一只橘猫" and a.images == [] and a.usage is None


def test_damaged_base64_in_known_field_is_an_error_without_payload():
    bad = B1[:40] + "!!!" + B1[43:]
    with pytest.raises(errors.MalformedAnswerError) as err:
        parse_answer(envelope({"content": [{"type": "image_base64", "image_base64": URL1.replace(B1, bad)}]}))
    assert B1[:40] not in str(err.value)


def test_no_choices_is_malformed():
    with pytest.raises(errors.MalformedAnswerError, match="choices"):
        parse_answer({"hello": "world"})


@pytest.mark.parametrize("status,body,cls", [
    (401, {"error": {"message": "Invalid API key.", "type": "authentication_error", "code": "invalid_api_key"}}, errors.AuthenticationError),
    (400, {"error": {"message": "Invalid image format.", "type": "invalid_request_error", "code": "invalid_image"}}, errors.BadRequestError),
    (402, {"error": {"code": 402, "message": "Insufficient credits", "metadata": {}}}, errors.InsufficientCreditsError),
    (400, {"object": "error", "message": "bad", "code": 400}, errors.BadRequestError),
    (200, {"error": {"code": 429, "message": "slow down"}}, errors.RateLimitError),
    (503, {"error": {"message": "overloaded", "type": "server_error"}}, errors.ServerError),
    (500, {"error": {"message": "x", "type": "invalid_request_error"}}, errors.ServerError),
])
def test_error_shapes(status, body, cls):
    err = make_api_error(status, body)
    assert type(err) is cls
    assert err.message and "." in err.message


def test_error_messages_are_scrubbed():
    key = "sk-canary-abcdefghijklmnopqrstuvwx"
    err = make_api_error(401, {"error": {"message": f"bad key {key} for data:image/png;base64,{B1}"}}, secret=key)
    assert key not in str(err) and B1[:60] not in str(err)


def test_usage_extended_and_sum():
    u = Usage.from_json({"prompt_tokens": 135, "completion_tokens": 1800, "total_tokens": 1935,
                         "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                         "completion_tokens_details": {"reasoning_tokens": 3}})
    assert u.prompt_tokens_details == {"cached_tokens": 0, "audio_tokens": 0}
    total = u + Usage(prompt_tokens=5)
    assert total.prompt_tokens == 140 and total.completion_tokens == 1800
    assert Usage.from_json({}) is None
    assert "total_tokens" not in Usage.from_json({"prompt_tokens": 1}).as_dict()
