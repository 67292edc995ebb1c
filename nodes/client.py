"""The HTTP client: one request per call, retries, streaming, image links, cancellation.

``AsyncImageClient`` is what adapters use (ComfyUI and Gradio run event loops); ``ImageClient``
is the same client behind a private event-loop thread for plain scripts. The transport is
swappable (any ``httpx.AsyncBaseTransport``), as in httpx itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import weakref
from typing import Any

import httpx

from . import errors
from .answers import ImageRef, error_body, error_class, make_api_error, parse_answer
from .config import Settings
from .protocol import CHAT_COMPLETIONS_PATH, ImageRequest
from .retry import CancelCheck, RetryPolicy, Timeouts, retry_after_seconds, run_cancellable, sleep_cancellable
from .sse import SSEDecoder
from .stream import Answer, Emitter, ProgressCallback, ProgressEvent, StreamState, check_outcome, feed_stream, finish_stream

__all__ = ["AsyncImageClient", "Answer", "ProgressEvent", "ProgressCallback"]

log = logging.getLogger("gpt_image_nodes.client")

#: Largest answer body read (bytes): ten 1536x1024 PNGs in base64 fit several times over.
MAX_ANSWER_BYTES = 256 * 1024 * 1024
#: Largest image fetched from a link in an answer (bytes).
MAX_LINK_BYTES = 50 * 1024 * 1024
_ERROR_BODY_BYTES = 64 * 1024
_USER_AGENT = "gpt-image-nodes/0.1"


class _Retryable(Exception):
    def __init__(self, error: errors.APIError, wait: float | None = None) -> None:
        self.error, self.wait = error, wait


class _LoopState:
    """httpx clients are bound to the event loop they first ran in: one set per loop."""

    def __init__(self, owner: "AsyncImageClient") -> None:
        t = owner.timeouts
        timeout = httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.connect)
        limits = httpx.Limits(max_connections=max(owner.max_concurrency * 2, 10), max_keepalive_connections=owner.max_concurrency)
        self.api = httpx.AsyncClient(transport=owner._transport, timeout=timeout, limits=limits, trust_env=owner._trust_env, follow_redirects=False)
        # Image links get their own client: it never holds the key, even across redirects.
        self.links = httpx.AsyncClient(transport=owner._link_transport, timeout=timeout, follow_redirects=True, max_redirects=5, trust_env=owner._trust_env)
        self.slots = asyncio.Semaphore(owner.max_concurrency)

    async def aclose(self) -> None:
        await self.api.aclose()
        await self.links.aclose()


class AsyncImageClient:
    """Sends :class:`ImageRequest`s. Thread-compatible across event loops; cheap to keep."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        backend: str | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
        link_transport: httpx.AsyncBaseTransport | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        max_link_bytes: int = MAX_LINK_BYTES,
    ) -> None:
        if settings is None:
            settings = Settings.resolve(api_key, base_url, model, backend)
        elif any(v is not None for v in (api_key, base_url, model, backend)):
            raise ValueError("Pass either settings or api_key/base_url/model/backend, not both.")
        self._settings = settings
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.max_concurrency = max(1, int(max_concurrency))
        self._transport = transport
        self._link_transport = link_transport
        self.max_answer_bytes = max_answer_bytes
        self.max_link_bytes = max_link_bytes
        self._trust_env = not self._settings.offline  # proxies never apply to the loopback server
        self._loops: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState]" = weakref.WeakKeyDictionary()
        self._endpoint: tuple[str, str] | None = None

    # -- configuration -------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def offline(self) -> bool:
        return self._settings.offline

    def _resolve_endpoint(self) -> tuple[str, str]:
        """(base URL, key) to use; the offline backend is started on first use."""
        if self._endpoint is None:
            if self._settings.offline:
                from .backend import shared_offline_server

                server = shared_offline_server()
                self._endpoint = (server.url, server.api_key or "offline")
            else:
                self._endpoint = (self._settings.base_url, self._settings.require_key())
        return self._endpoint

    def __repr__(self) -> str:
        return f"AsyncImageClient({self._settings!r})"

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        for old in [lp for lp in self._loops if lp.is_closed()]:
            self._loops.pop(old, None)  # its state refers back to it, so it would never be freed
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(self)
        return state

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        state = self._loops.pop(loop, None)
        if state is not None:
            await state.aclose()

    async def __aenter__(self) -> "AsyncImageClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the four operations (see operations.py) -----------------------------------------

    async def text_to_image(self, prompt: str, **kw: Any):  # noqa: ANN201 - ImageResult
        from .operations import text_to_image

        return await text_to_image(self, prompt, **kw)

    async def edit_image(self, image: Any, prompt: str, **kw: Any):  # noqa: ANN201
        from .operations import edit_image

        return await edit_image(self, image, prompt, **kw)

    async def multi_merge(self, images: Any, prompt: str, **kw: Any):  # noqa: ANN201
        from .operations import multi_merge

        return await multi_merge(self, images, prompt, **kw)

    async def describe(self, image: Any, question: str | None = None, **kw: Any):  # noqa: ANN201
        from .operations import describe

        return await describe(self, image, question or "", **kw)

    # -- sending -------------------------------------------------------------------------

    async def send(
        self,
        request: ImageRequest,
        *,
        on_progress: ProgressCallback | None = None,
        cancel_check: CancelCheck | None = None,
    ) -> Answer:
        """Send one request (retrying as the policy allows) and return its answer."""
        start = time.monotonic()
        emit = Emitter(on_progress, start)
        base_url, key = self._resolve_endpoint()
        state = self._state()
        deadline = start + self.timeouts.total
        body = request.body(self._settings.model)
        attempt = 0
        async with state.slots:
            while True:
                attempt += 1
                # One "request" event per HTTP attempt: runtimes count what was paid for from it.
                emit("request", "sending request" if attempt == 1 else f"sending request (attempt {attempt})")
                log.debug("POST %s attempt %d: %s", base_url + CHAT_COMPLETIONS_PATH, attempt, request.describe_for_log())
                remaining = deadline - time.monotonic()
                try:
                    answer = await run_cancellable(
                        asyncio.wait_for(self._attempt(state, base_url, key, request, body, emit), remaining),
                        cancel_check,
                    )
                except asyncio.TimeoutError:
                    raise errors.TimeoutError(
                        f"No complete answer within the total time limit of {self.timeouts.total:.0f} s "
                        f"({attempt} attempt(s)). Try again, or raise the total timeout.",
                        attempts=attempt,
                    ) from None
                except _Retryable as r:
                    r.error.attempts = attempt
                    wait = r.wait if r.wait is not None else self.retry.backoff(attempt - 1)
                    if attempt > self.retry.max_retries:
                        raise _with_attempts(r.error, attempt) from None
                    if r.wait is not None and r.wait > self.retry.max_retry_after:
                        raise _with_note(r.error, f" The server asked to wait {r.wait:.0f} s before retrying; try again later.") from None
                    if time.monotonic() + wait > deadline:
                        raise _with_attempts(r.error, attempt) from None
                    log.info("retrying in %.2f s after: %s", wait, r.error.message)
                    emit("retry", f"{_short(r.error)}; retrying in {wait:.1f} s (attempt {attempt + 1} of {self.retry.max_retries + 1})")
                    await sleep_cancellable(wait, cancel_check)
                    continue
                answer.attempts = attempt
                if any(ref.url for ref in answer.refs):
                    emit("status", "downloading image")
                try:  # linked images are part of the answer: the same total time limit covers them
                    answer.images = list(await asyncio.wait_for(
                        asyncio.gather(*[self._image_bytes(state, ref, cancel_check) for ref in answer.refs]),
                        max(0.0, deadline - time.monotonic()),
                    ))
                except asyncio.TimeoutError:
                    raise errors.TimeoutError(
                        f"The answer's images could not be downloaded within the total time limit of "
                        f"{self.timeouts.total:.0f} s. Try again, or raise the total timeout.", attempts=attempt,
                    ) from None
                answer.elapsed = time.monotonic() - start
                return answer

    async def _attempt(self, state: _LoopState, base_url: str, key: str, request: ImageRequest, body: bytes, emit: Emitter) -> Answer:
        headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if request.stream else "application/json",
            "User-Agent": _USER_AGENT,
        }
        http_request = state.api.build_request("POST", base_url + CHAT_COMPLETIONS_PATH, content=body, headers=headers)
        try:
            response = await state.api.send(http_request, stream=True)
        except httpx.TimeoutException as exc:
            raise _Retryable(_timeout_error(exc, self.timeouts)) from None
        except (httpx.TransportError, OSError) as exc:
            raise _Retryable(errors.ConnectionError(
                f"Could not reach {_host(base_url)} ({type(exc).__name__}). Check the base URL and "
                "the network; retried automatically."
            )) from None
        try:
            status = response.status_code
            request_id = response.headers.get("x-request-id")
            if not 200 <= status < 300:
                await self._raise_for_status(response, key, request_id)
            ctype = response.headers.get("content-type", "")
            if request.stream and "event-stream" in ctype:
                emit("status", "streaming")
                return await self._read_stream(response, request, key, emit)
            emit("status", "waiting for the answer")
            raw = await self._read_capped(response, self.max_answer_bytes, "answer")
            return self._answer_from_body(raw, request, key, emit)
        except httpx.TimeoutException as exc:
            raise _Retryable(_timeout_error(exc, self.timeouts)) from None
        except (httpx.TransportError, OSError) as exc:
            raise _Retryable(errors.ConnectionError(
                f"The connection to {_host(base_url)} broke while reading the answer "
                f"({type(exc).__name__}; retried automatically). Try again; if it keeps happening, "
                "check the network or the proxy in between."
            )) from None
        finally:
            await response.aclose()

    async def _raise_for_status(self, response: httpx.Response, key: str, request_id: str | None) -> None:
        status = response.status_code
        try:
            raw = await self._read_capped(response, _ERROR_BODY_BYTES, "error", truncate=True)
        except (httpx.TransportError, OSError):
            raw = b""
        try:
            parsed: Any = json.loads(raw) if raw.strip() else None
        except ValueError:
            parsed = None
        if error_body(parsed) is not None:
            error = make_api_error(status, parsed, request_id=request_id, secret=key)
        else:
            cls = error_class(status, None, None)
            kind = _body_kind(raw)
            advice = "a proxy in front of the service failed (retried automatically); try again in a minute" if status >= 500 else "check the base URL"
            if 300 <= status < 400:
                advice = f"the service redirected to {response.headers.get('location', '?')!s:.80}; use that as the base URL"
            error = cls(f"The service answered HTTP {status} with {kind}: {advice}.", status=status, request_id=request_id)
        if self.retry.should_retry_status(status):
            raise _Retryable(error, retry_after_seconds(response.headers))
        raise error

    async def _read_capped(self, response: httpx.Response, cap: int, what: str, truncate: bool = False) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap and not truncate:
            raise errors.MalformedAnswerError(f"The {what} is {int(declared) / 2**20:.0f} MiB, over the {cap / 2**20:.0f} MiB limit.")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > cap:
                if truncate:
                    break
                raise errors.MalformedAnswerError(f"The {what} is over the {cap / 2**20:.0f} MiB limit; reading stopped.")
            chunks.append(chunk)
        return b"".join(chunks)

    def _answer_from_body(self, raw: bytes, request: ImageRequest, key: str, emit: Emitter) -> Answer:
        head = raw.lstrip()[:16]
        if head.startswith((b"data:", b"event:", b":")):  # SSE sent with the wrong content type
            state = StreamState(emit)
            feed_stream(state, SSEDecoder(), raw, key, final=True)
            return finish_stream(state, request, cut=False, key=key)
        try:
            body = json.loads(raw)
        except ValueError:
            raise errors.MalformedAnswerError(
                f"The service answered HTTP 200 with {_body_kind(raw)}. Check the base URL; if it is right, try again."
            ) from None
        parsed = parse_answer(body, secret=key)
        answer = Answer([], parsed.text, parsed.usage, parsed.request_id, parsed.model, parsed.finish_reasons, 0, 0.0, False)
        answer.refs = parsed.images
        check_outcome(request, parsed.images, parsed.text, parsed.finish_reasons, parsed.refusal, parsed.request_id, key)
        for i, ref in enumerate(parsed.images):
            emit("image", f"image {i + 1} received", i, ref.data)
        return answer

    async def _read_stream(self, response: httpx.Response, request: ImageRequest, key: str, emit: Emitter) -> Answer:
        state = StreamState(emit)
        decoder = SSEDecoder()
        cut = False
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_answer_bytes:  # an endless stream must not grow memory forever
                    raise errors.MalformedAnswerError(
                        f"The streamed answer is over the {self.max_answer_bytes / 2**20:.0f} MiB limit; reading "
                        "stopped. Check the base URL; if it is right, try again without streaming.")
                if feed_stream(state, decoder, chunk, key):
                    break
        except (httpx.TransportError, OSError):
            cut = True  # judged below: complete if the images already arrived
        if not state.done:
            feed_stream(state, decoder, b"", key, final=True)
        return finish_stream(state, request, cut, key)

    async def _image_bytes(self, state: _LoopState, ref: ImageRef, cancel_check: CancelCheck | None) -> bytes:
        if ref.data is not None:
            return ref.data
        assert ref.url is not None
        tries = 3  # a GET of a finished image is free to repeat
        for attempt in range(1, tries + 1):
            try:
                return await run_cancellable(self._fetch_link(state, ref.url), cancel_check)
            except _Retryable as r:
                if attempt == tries:
                    raise _with_attempts(r.error, attempt) from None
                await sleep_cancellable(self.retry.backoff(attempt - 1), cancel_check)
        raise AssertionError("unreachable")

    async def _fetch_link(self, state: _LoopState, url: str) -> bytes:
        host = _host(url)
        try:
            async with state.links.stream("GET", url, headers={"User-Agent": _USER_AGENT}) as response:
                if response.status_code != 200:
                    error = errors.NoImageError(
                        f"The answer linked an image at {host}, but fetching it gave HTTP {response.status_code}. "
                        "The link may have expired; run the step again."
                    )
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _Retryable(error)
                    raise error
                return await self._read_capped(response, self.max_link_bytes, f"image linked from {host}")
        except httpx.TimeoutException as exc:
            raise _Retryable(_timeout_error(exc, self.timeouts)) from None
        except (httpx.TransportError, OSError) as exc:
            raise _Retryable(errors.ConnectionError(f"Could not download the image linked from {host} ({type(exc).__name__}).")) from None


def _body_kind(raw: bytes) -> str:
    head = raw[:2048].lower()
    if b"<html" in head or b"<!doctype" in head:
        return "an HTML page"
    if not raw.strip():
        return "an empty body"
    return "a body that is not valid JSON (cut short or corrupted)"


def _timeout_error(exc: httpx.TimeoutException, t: Timeouts) -> errors.TimeoutError:
    if isinstance(exc, httpx.ConnectTimeout):
        what = f"Connecting took longer than {t.connect:g} s"
    elif isinstance(exc, httpx.WriteTimeout):
        what = f"Sending the request took longer than {t.write:g} s"
    elif isinstance(exc, httpx.PoolTimeout):
        what = "No connection slot became free in time"
    else:
        what = f"The service sent nothing for {t.read:g} s"
    return errors.TimeoutError(f"{what}; retried automatically. Check the network or raise the timeout.")


def _with_attempts(error: errors.APIError, attempts: int) -> errors.APIError:
    error.attempts = attempts
    if attempts > 1 and "attempt" not in error.message:
        return _with_note(error, f" (gave up after {attempts} attempts)")
    return error


def _with_note(error: errors.APIError, note: str) -> errors.APIError:
    error.message = error.message.rstrip() + note
    error.args = (error.message,)
    return error


def _short(error: errors.APIError) -> str:
    return f"HTTP {error.status}" if error.status else type(error).__name__


_HOST = re.compile(r"^[a-z]+://([^/@]*@)?([^/:?#]+)", re.I)


def _host(url: str) -> str:
    match = _HOST.match(url)
    return match.group(2) if match else "the service"
