"""The SSE decoder: standard framing, the seed's multi-line JSON, and arbitrary chunk splits."""

from __future__ import annotations

import json

import pytest

from gpt_image_nodes.nodes.errors import MalformedAnswerError
from gpt_image_nodes.nodes.sse import DONE, SSEDecoder, parse_event_data

SEED_STREAM = (
    'data: {\n"choices":[\n{\n"delta":{\n"content":"正在生成图片..."\n}\n}\n]\n}\n'
    'data: {\n"choices":[\n{\n"delta":{\n"image_base64":"iVBORw0KGgo="\n}\n}\n]\n}\n'
    "data: [DONE]\n"
).encode()


def decode_all(stream: bytes, splits: list[int] | None = None) -> list[str]:
    dec = SSEDecoder()
    out = []
    cuts = [0, *(splits or []), len(stream)]
    for a, b in zip(cuts, cuts[1:]):
        out += [e.data for e in dec.feed(stream[a:b])]
    out += [e.data for e in dec.close()]
    return out


def values(stream: bytes, splits: list[int] | None = None) -> list[object]:
    return [v for d in decode_all(stream, splits) for v in parse_event_data(d)]


def test_standard_events_lf_crlf_cr():
    for nl in ("\n", "\r\n", "\r"):
        s = f'data: {{"a":1}}{nl}{nl}: keep-alive{nl}event: message{nl}id: 7{nl}data: {{"a":2}}{nl}{nl}data: [DONE]{nl}{nl}'.encode()
        assert values(s) == [{"a": 1}, {"a": 2}, DONE]


def test_multiline_data_fields_are_joined_with_newline():
    s = b'data: {"a":\ndata: 1}\n\n'
    assert decode_all(s) == ['{"a":\n1}']
    assert values(s) == [{"a": 1}]


def test_seed_multiline_json_without_blank_lines():
    vals = values(SEED_STREAM)
    assert vals[0]["choices"][0]["delta"]["content"] == "正在生成图片..."
    assert vals[1]["choices"][0]["delta"]["image_base64"] == "iVBORw0KGgo="
    assert vals[2] is DONE


def test_seed_progress_is_dispatched_before_stream_end():
    dec = SSEDecoder()
    first_two = SEED_STREAM.split(b"data: {", 2)
    head = b"data: {" + first_two[1]
    events = dec.feed(head)
    assert len(events) == 1 and "正在生成图片" in events[0].data


def test_final_event_without_blank_line_is_read():
    assert values(b'data: {"x":1}') == [{"x": 1}]
    assert values(b'data: {"x":1}\r\n') == [{"x": 1}]


def test_comments_event_id_retry_fields():
    dec = SSEDecoder()
    events = dec.feed(b": PROCESSING\nevent: progress\nid: 42\nretry: 1000\ndata: {}\n\n")
    assert len(events) == 1
    ev = events[0]
    assert (ev.event, ev.id, ev.retry, ev.data) == ("progress", "42", 1000, "{}")


@pytest.mark.parametrize("nl", ["\n", "\r\n"])
def test_every_split_point_gives_the_same_result(nl):
    big = "A" * 5000
    s = (f'data: {{"choices":[{{"delta":{{"content":"hi"}}}}]}}{nl}{nl}: ka{nl}'
         f'data: {{"choices":[{{"delta":{{"image_base64":"{big}"}}}}]}}{nl}{nl}data: [DONE]{nl}{nl}').encode()
    expected = values(s)
    for cut in range(0, len(s), 7):
        assert values(s, [cut]) == expected
    # and byte by byte
    assert values(s, list(range(1, len(s)))) == expected


def test_multiple_json_values_in_one_event():
    assert parse_event_data('{"a":1}\n{"b":2}\n[DONE]') == [{"a": 1}, {"b": 2}, DONE]


def test_bad_json_is_a_typed_error():
    with pytest.raises(MalformedAnswerError):
        parse_event_data("{not json")


def test_event_size_cap():
    dec = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(MalformedAnswerError, match="larger than"):
        dec.feed(b"data: " + b"x" * 2000)


def test_large_single_line_is_linear():
    payload = json.dumps({"choices": [{"delta": {"image_base64": "Q" * 4_000_000}}]}).encode()
    dec = SSEDecoder()
    events = []
    for i in range(0, len(payload), 65536):
        events += dec.feed((b"data: " if i == 0 else b"") + payload[i:i + 65536])
    events += dec.feed(b"\n\n")
    assert len(events) == 1 and len(events[0].data) == len(payload)
