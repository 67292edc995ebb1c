"""Streamed content text with images inside it: split anywhere, found once, never shown as text."""

from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image

from gpt_image_nodes.nodes import errors
from gpt_image_nodes.nodes.protocol import ImageRequest, Mode
from gpt_image_nodes.nodes.stream import Emitter, StreamState, finish_stream


def png(size=(64, 64), colour="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def state() -> tuple[StreamState, list]:
    events: list = []
    return StreamState(Emitter(events.append, time.monotonic())), events


def feed(st: StreamState, text: str, size: int) -> None:
    for i in range(0, len(text), size):
        st.add_text(text[i:i + size])


@pytest.mark.parametrize("template", ["进度 10%\n![image]({url})\ndone", "progress {url} done", "{url}"])
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_images_split_across_chunks(template, size):
    data = png()
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    st, events = state()
    feed(st, template.format(url=url), size)
    text = st.final_text()
    assert [ref.data for ref in st.images] == [data]
    assert "base64" not in text and "![" not in text and "()" not in text
    shown = "".join(e.text for e in events if e.kind == "text")
    assert "iVBOR" not in shown and "base64" not in shown


def test_a_large_image_in_small_chunks_is_linear():
    url = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(1_500_000)).decode()
    st, _ = state()
    start = time.monotonic()
    feed(st, f"![image]({url})", 16_384)
    assert len(st.images) == 1 and time.monotonic() - start < 0.5


def test_text_without_images_streams_as_it_arrives():
    st, events = state()
    for word in ("A red ", "square ", "on blue."):
        st.add_text(word)
    assert [e.text for e in events if e.kind == "text"] == ["A red ", "square ", "on blue."]
    assert st.final_text() == "A red square on blue."


def test_streamed_refusal_text_is_scrubbed_of_the_key():
    key = "sk-canary-0123456789abcdefghij"
    st, _ = state()
    st.add_text(f"I can't do that with key {key}")
    st.finish.append("content_filter")
    with pytest.raises(errors.ContentFilterError) as info:
        finish_stream(st, ImageRequest.build(Mode.TEXT_TO_IMAGE, "x"), cut=False, key=key)
    assert key not in str(info.value)
