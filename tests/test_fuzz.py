"""Property tests: random shapes, bytes and chunk boundaries never escape as untyped errors."""

from __future__ import annotations

import base64
import io
import json

from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from gpt_image_nodes.nodes.answers import parse_answer, walk_message
from gpt_image_nodes.nodes.errors import GPTImageError
from gpt_image_nodes.nodes.sse import DONE, SSEDecoder, parse_event_data

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_buf = io.BytesIO()
Image.new("RGB", (4, 4), "red").save(_buf, "PNG")
PNG_B64 = base64.b64encode(_buf.getvalue()).decode()

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
                    st.sampled_from([PNG_B64, "data:image/png;base64," + PNG_B64, "data:image/png;base64,!!", "https://x/y.png",
                                     "![i](data:image/png;base64," + PNG_B64 + ")", "image_base64", "content", "[DONE]"]))
keys = st.sampled_from(["content", "text", "image_base64", "image_url", "url", "images", "type", "index",
                        "choices", "message", "delta", "error", "usage", "data", "b64_json", "refusal", "x"])
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(keys, inner, max_size=5)), max_leaves=25)


@FUZZ
@given(json_values)
def test_answer_parser_raises_only_typed_errors(body):
    try:
        parse_answer(body)
    except GPTImageError:
        pass


@FUZZ
@given(json_values)
def test_message_walker_never_crashes(message):
    try:
        walk_message(message)
    except GPTImageError:
        pass


@FUZZ
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_sse_decoder_on_random_bytes(data, cuts):
    dec = SSEDecoder()
    points = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    events = []
    try:
        for a, b in zip(points, points[1:]):
            events += dec.feed(data[a:b])
        events += dec.close()
        for event in events:
            parse_event_data(event.data)
    except GPTImageError:
        pass


def _stream(chunks: list[dict], nl: str, multiline: bool, done: bool) -> bytes:
    out = []
    for chunk in chunks:
        text = json.dumps(chunk, indent=1 if multiline else None, ensure_ascii=False)
        out.append("data: " + text + nl + ("" if multiline else nl))
    if done:
        out.append("data: [DONE]" + nl + nl)
    return "".join(out).encode()


def _decode(stream: bytes, cuts: list[int]) -> list:
    dec = SSEDecoder()
    points = sorted({0, len(stream), *[c % (len(stream) + 1) for c in cuts]})
    events = []
    for a, b in zip(points, points[1:]):
        events += dec.feed(stream[a:b])
    events += dec.close()
    return [v for e in events for v in parse_event_data(e.data)]


chunk_strategy = st.lists(st.one_of(
    st.builds(lambda t: {"choices": [{"delta": {"content": t}}]}, st.text(max_size=20)),
    st.just({"choices": [{"delta": {"image_base64": PNG_B64}}]}),
    st.builds(lambda n: {"usage": {"total_tokens": n}}, st.integers(0, 10**6)),
), min_size=1, max_size=6)


@FUZZ
@given(chunk_strategy, st.sampled_from(["\n", "\r\n", "\r"]), st.booleans(), st.booleans(),
       st.lists(st.integers(min_value=0), max_size=8))
def test_valid_stream_cut_anywhere_parses_the_same(chunks, nl, multiline, done, cuts):
    if multiline and nl == "\r":
        nl = "\n"
    stream = _stream(chunks, nl, multiline, done)
    expected = chunks + ([DONE] if done else [])
    assert _decode(stream, cuts) == expected
