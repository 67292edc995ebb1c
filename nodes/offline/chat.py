"""``POST /v1/chat/completions`` for the offline server: the order of checks, faults, pacing.

Order, per request: count it; read the body (413 over 64 MiB); record its summary and raw body;
take the next queued fault; answer the faults that don't need a valid request (status, hang,
drop, not_json; slow just waits first); then auth (401), JSON and fields (400/404), image
decoding (400 invalid_image); then paint and answer, as JSON or SSE, paced by ``latency``.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import time
import uuid
from typing import TYPE_CHECKING, Iterator

from . import painter
from .answers import (
    Step, image_answer, refusal_answer, stream_items, text_answer)
from .faults import STREAM_ONLY_FAULTS, Fault, status_response
from .httpio import CLIENT_GONE
from .wire import ChatRequest, RequestError, decode_images, load_doc, parse_chat, summarize

if TYPE_CHECKING:
    from .handler import Handler
    from .server import OfflineServer

__all__ = ["handle_chat", "render"]

_NOT_JSON = (b"<html><head><title>Service busy</title></head><body><h1>Service temporarily busy"
             b"</h1><p>Please try again later.</p></body></html>")


def render(req: ChatRequest, fmt: str = "png") -> list[bytes] | str:
    """The answer's images (encoded as ``fmt``), or the description text for describe."""
    if req.mode == "describe":
        return painter.describe_image(req.images[0], req.prompt)
    out: list[bytes] = []
    for index in range(req.n):
        if req.mode == "text_to_image":
            img = painter.paint_text_to_image(req.prompt, req.size or "auto", req.quality or "auto",
                                              index)
        elif req.mode == "edit_image":
            img = painter.apply_edit(req.images[0], req.prompt, req.size, index)
        else:
            img = painter.merge_images(req.images, req.prompt, req.size or "auto", index)
        out.append(painter.encode_image(img, fmt))
    return out


def _render_key(req: ChatRequest, fmt: str) -> tuple:
    digest = hashlib.sha256()
    for raw in req.image_bytes:
        digest.update(hashlib.sha256(raw).digest())
    return (req.mode, req.prompt, req.size, req.quality, req.n, fmt, digest.hexdigest())


def _hang(h: "Handler", srv: "OfflineServer") -> None:
    """Never answer: wait until the client hangs up or the server stops, then close."""
    sock = h.connection
    while not srv.wait(0.05):
        try:
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable and not sock.recv(1, socket.MSG_PEEK):
                break  # the client closed its end
        except (OSError, ValueError):
            break
    h.abort()


def handle_chat(h: "Handler") -> None:
    srv = h.owner
    h.request_id = "req_" + uuid.uuid4().hex[:24]
    srv._bump("requests")
    body = h.read_body()
    if body is None:
        return
    doc: dict | None = None
    doc_error: RequestError | None = None
    try:
        doc = load_doc(body)
    except RequestError as exc:
        doc_error = exc
    srv._record(summarize(doc), body)

    fault = srv._faults.pop()
    if fault is not None and fault.kind == "slow":
        if srv.wait(fault["delay"]):
            return h.abort()
        fault = None
    start = time.monotonic()  # latency counts from here: a "slow" delay comes on top of it
    if fault is not None and fault.kind in ("status", "hang", "drop", "not_json"):
        return _early_fault(h, srv, fault)

    if not srv.authorized(h.headers.get("Authorization")):
        return h.send_auth_error()
    try:
        if doc_error is not None:
            raise doc_error
        assert doc is not None
        req = parse_chat(doc, srv.model)
        decode_images(req)
    except RequestError as exc:
        return h.send_json(exc.status, exc.body())

    # One consistent view of the config for the whole answer, even if it changes meanwhile.
    shape, stream_shape, usage_shape = srv.answer_shape, srv.stream_shape, srv.usage_shape
    latency, model = srv.latency, srv.model
    fmt = shape if shape in ("jpeg", "webp") else "png"
    truncate = fault is not None and fault.kind == "truncated_json"
    streaming = req.stream and stream_shape != "json" and not truncate  # truncated: JSON, cut
    if fault is not None and fault.kind in STREAM_ONLY_FAULTS and not streaming:
        return h.send_json(500, {"error": {
            "message": f"Upstream stream failed (offline fault {fault.kind!r} on a non-stream "
                       "request).", "type": "server_error", "code": "offline_fault"}})
    if req.mode == "describe" and fault is not None and fault.kind == "bad_base64":
        fault = None  # no image to corrupt in a description

    def make() -> list[bytes] | str:
        return srv.cached_render(_render_key(req, fmt), lambda: render(req, fmt))

    if streaming:
        steps = stream_items(req, stream_shape, usage_shape, model, make, fault)
        if fault is not None and fault.kind == "reset_mid_body":
            data = b"".join(chunk for _, chunk in steps if chunk)
            return _half(h, data, "text/event-stream; charset=utf-8")
        return _stream(h, srv, steps, start, latency, ok=fault is None)

    if fault is not None and fault.kind == "no_image":
        answer = text_answer(req, fault["text"], usage_shape, model)
    elif fault is not None and fault.kind == "refusal":
        answer = refusal_answer(req, fault["text"], usage_shape, model)
    elif req.mode == "describe":
        answer = text_answer(req, str(make()), usage_shape, model)
    else:
        images = make()
        assert isinstance(images, list)
        bad = fault["value"] if fault is not None and fault.kind == "bad_base64" else None
        answer = image_answer(req, images, shape, usage_shape, model, srv.host_image, bad)
    data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
    if srv.wait(start + latency - time.monotonic()):
        return h.abort()
    if fault is not None and fault.kind == "truncated_json":
        return h.send_bytes(200, data[: len(data) // 2], "application/json")
    if fault is not None and fault.kind == "reset_mid_body":
        return _half(h, data, "application/json")
    if fault is None:
        srv._bump("ok")  # before the write: once a client has the answer, it is counted
    h.send_bytes(200, data, "application/json")


def _early_fault(h: "Handler", srv: "OfflineServer", fault: Fault) -> None:
    if fault.kind == "status":
        status, headers, body = status_response(fault)
        return h.send_bytes(status, body, headers.pop("Content-Type", None), headers)
    if fault.kind == "hang":
        return _hang(h, srv)
    if fault.kind == "drop":
        return h.abort()
    h.send_bytes(200, _NOT_JSON, "text/html; charset=utf-8")  # not_json


def _half(h: "Handler", data: bytes, content_type: str) -> None:
    """Headers promising all of ``data``, then half of it, then close (reset_mid_body)."""
    try:
        h.send_bytes(200, data[: len(data) // 2], content_type, length=len(data), close=True)
    finally:
        h.abort()


def _stream(h: "Handler", srv: "OfflineServer", steps: Iterator[Step], start: float,
            latency: float, ok: bool) -> None:
    """Send SSE steps as chunks, each at ``start + fraction * latency``; None cuts the socket."""
    try:
        h.start_chunked(200, "text/event-stream; charset=utf-8")
        for when, data in steps:
            if srv.wait(start + when * latency - time.monotonic()):
                return h.abort()
            if data is None:
                return h.abort()
            h.write_chunk(data)
        if ok:
            srv._bump("ok")  # before the last bytes: once a client has the answer, it is counted
        h.end_chunked()
    except CLIENT_GONE:
        h.close_connection = True
