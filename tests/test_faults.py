"""Fault matrix through the real client: typed error or successful retry, attempt counts, time."""

from __future__ import annotations

import email.utils
import time

import pytest

from gpt_image_nodes.nodes import RetryPolicy, Timeouts, errors
from testkit import dead_port


E = errors

# (id, inject kwargs, times injected, stream, expected outcome, server requests)
MATRIX = [
    ("400", dict(kind="status", status=400), 1, False, E.BadRequestError, 1),
    ("401", dict(kind="status", status=401), 1, False, E.AuthenticationError, 1),
    ("402-openrouter", dict(kind="status", status=402, body="openrouter"), 1, False, E.InsufficientCreditsError, 1),
    ("403", dict(kind="status", status=403), 1, False, E.PermissionDeniedError, 1),
    ("404", dict(kind="status", status=404), 1, False, E.NotFoundError, 1),
    ("413", dict(kind="status", status=413), 1, False, E.PayloadTooLargeError, 1),
    ("422-vllm", dict(kind="status", status=422, body="vllm"), 1, False, E.BadRequestError, 1),
    ("408-retried", dict(kind="status", status=408), 1, False, "ok", 2),
    ("409-retried", dict(kind="status", status=409), 1, False, "ok", 2),
    ("429-retried", dict(kind="status", status=429), 2, False, "ok", 3),
    ("429-retry-after", dict(kind="status", status=429, retry_after="1"), 1, False, "ok", 2),
    ("429-retry-after-ms", dict(kind="status", status=429, retry_after_ms=300), 1, False, "ok", 2),
    ("429-always", dict(kind="status", status=429), 9, False, E.RateLimitError, 4),
    ("500-retried", dict(kind="status", status=500), 1, False, "ok", 2),
    ("502-html", dict(kind="status", status=502, body="html"), 1, False, "ok", 2),
    ("503-empty", dict(kind="status", status=503, body="empty"), 3, False, "ok", 4),
    ("504-always", dict(kind="status", status=504, body="html"), 9, False, E.ServerError, 4),
    ("drop", dict(kind="drop"), 1, False, "ok", 2),
    ("reset-mid-body", dict(kind="reset_mid_body"), 1, False, "ok", 2),
    ("truncated-json", dict(kind="truncated_json"), 1, False, E.MalformedAnswerError, 1),
    ("not-json", dict(kind="not_json"), 1, False, E.MalformedAnswerError, 1),
    ("bad-base64", dict(kind="bad_base64"), 1, False, E.MalformedAnswerError, 1),
    ("no-image", dict(kind="no_image"), 1, False, E.NoImageError, 1),
    ("refusal", dict(kind="refusal"), 1, False, E.ContentFilterError, 1),
    ("refusal-stream", dict(kind="refusal"), 1, True, E.ContentFilterError, 1),
    ("stream-cut", dict(kind="stream_cut"), 1, True, E.MalformedAnswerError, 1),
    ("mid-stream-error", dict(kind="mid_stream_error"), 1, True, E.ServerError, 1),
    ("mid-stream-finish-error", dict(kind="mid_stream_error", with_finish_reason=True), 1, True, E.ServerError, 1),
    ("garbage-stream", dict(kind="garbage_stream"), 1, True, E.MalformedAnswerError, 1),
    ("slow-within-timeout", dict(kind="slow", delay=0.5), 1, False, "ok", 1),
]


@pytest.mark.parametrize("case", MATRIX, ids=[m[0] for m in MATRIX])
def test_fault_matrix(srv, make_client, debug_logs, canary_key, case):
    _, inject, times, stream, expected, requests = case
    srv.inject(inject.pop("kind"), times, **inject)
    client = make_client(sync=True)
    events = []
    start = time.monotonic()
    if expected == "ok":
        result = client.text_to_image("a cat", stream=stream, on_progress=events.append)
        assert len(result.images) == 1 and result.attempts == requests
        if requests > 1:
            assert any(e.kind == "retry" for e in events)
    else:
        with pytest.raises(expected) as info:
            client.text_to_image("a cat", stream=stream, on_progress=events.append)
        err = info.value
        message = str(err)
        assert message and len(message) < 800
        assert canary_key not in message and ";base64," not in message
        assert "Traceback" not in message
        if requests > 1:
            assert err.attempts == requests and f"after {requests} attempts" in message
    assert srv.stats["requests"] == requests
    assert time.monotonic() - start < 6
    assert canary_key not in debug_logs.text


def test_retry_after_is_honoured(srv, make_client):
    srv.inject("status", 1, status=429, retry_after="1")
    start = time.monotonic()
    make_client(sync=True).text_to_image("x")
    assert 0.95 <= time.monotonic() - start < 3


def test_retry_after_http_date(srv, make_client):
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    srv.inject("status", 1, status=429, retry_after=when)
    start = time.monotonic()
    make_client(sync=True).text_to_image("x")
    assert 0.5 <= time.monotonic() - start < 4  # HTTP dates have one-second resolution


def test_retry_after_longer_than_cap_fails_at_once(srv, make_client):
    srv.inject("status", 1, status=429, retry_after="3600")
    start = time.monotonic()
    with pytest.raises(errors.RateLimitError, match="3600 s"):
        make_client(sync=True).text_to_image("x")
    assert time.monotonic() - start < 1 and srv.stats["requests"] == 1


def test_read_timeout_then_success(srv, make_client):
    srv.inject("slow", 1, delay=3)
    client = make_client(sync=True, timeouts=Timeouts(connect=1, read=0.5, write=1, total=10))
    start = time.monotonic()
    result = client.text_to_image("x")
    assert result.attempts == 2 and time.monotonic() - start < 3


def test_server_that_never_answers_is_bounded_by_total(srv, make_client):
    srv.inject("hang", 9)
    client = make_client(sync=True, timeouts=Timeouts(connect=1, read=30, write=1, total=1.5))
    start = time.monotonic()
    with pytest.raises(errors.TimeoutError, match="total time limit"):
        client.text_to_image("x")
    assert time.monotonic() - start < 2.5


def test_read_timeout_every_attempt(srv, make_client):
    srv.inject("hang", 9)
    client = make_client(sync=True, timeouts=Timeouts(connect=1, read=0.3, write=1, total=20),
                         retry=RetryPolicy(max_retries=2, initial_backoff=0.01, max_backoff=0.02))
    with pytest.raises(errors.TimeoutError, match="sent nothing for 0.3 s"):
        client.text_to_image("x")
    assert srv.stats["requests"] == 3


def test_connection_refused_is_retried_then_typed(make_client):
    client = make_client(sync=True, base_url=f"http://127.0.0.1:{dead_port()}",
                         retry=RetryPolicy(max_retries=2, initial_backoff=0.01, max_backoff=0.02))
    start = time.monotonic()
    with pytest.raises(errors.ConnectionError, match="Could not reach 127.0.0.1") as info:
        client.text_to_image("x")
    assert info.value.attempts == 3 and time.monotonic() - start < 2


def test_wrong_key_is_401_not_retried(srv, make_client):
    with pytest.raises(errors.AuthenticationError, match="Invalid API key") as info:
        make_client(sync=True, api_key="sk-wrong-key-000000000000000000").text_to_image("x")
    assert srv.stats["requests"] == 1
    assert "sk-wrong" not in str(info.value)


def test_bad_size_reaches_server_validation(srv, make_client):
    # Bypass client-side validation to prove the server's own check and our mapping.
    from gpt_image_nodes.nodes import ImageRequest, Mode
    import asyncio
    client = make_client()
    request = ImageRequest.build(Mode.TEXT_TO_IMAGE, "x", extra_body={"style": "vivid"})
    object.__setattr__(request, "size", "999x999")
    with pytest.raises(errors.BadRequestError, match="invalid_request_error|invalid_size"):
        asyncio.run(client.send(request))


def test_cancel_during_request_within_one_second(srv, make_client):
    srv.latency = 10
    flag = {"stop": False}
    client = make_client(sync=True)
    import threading
    threading.Timer(0.3, lambda: flag.__setitem__("stop", True)).start()
    start = time.monotonic()
    with pytest.raises(errors.CancelledError):
        client.text_to_image("x", cancel_check=lambda: flag["stop"])
    assert time.monotonic() - start < 1.3


def test_cancel_during_backoff_sleep(srv, make_client):
    srv.inject("status", 1, status=429, retry_after="4")
    flag = {"stop": False}
    import threading
    threading.Timer(0.3, lambda: flag.__setitem__("stop", True)).start()
    start = time.monotonic()
    with pytest.raises(errors.CancelledError):
        make_client(sync=True).text_to_image("x", cancel_check=lambda: flag["stop"])
    assert time.monotonic() - start < 1.3
    assert srv.stats["requests"] == 1


def test_cancel_check_that_raises_counts_as_cancel(srv, make_client):
    srv.latency = 5

    def comfy_style_check():
        raise RuntimeError("interrupted")

    start = time.monotonic()
    with pytest.raises(errors.CancelledError):
        make_client(sync=True).text_to_image("x", cancel_check=comfy_style_check)
    assert time.monotonic() - start < 1

