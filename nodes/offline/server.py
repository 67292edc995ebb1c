"""The offline server: the seed's protocol on loopback, so everything works with no API key.

``OfflineServer`` runs a stdlib ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, daemon threads)
in a background thread. Chat requests are handled in :mod:`.chat`; this module holds the server
object, its state (stats, recorded requests, hosted images, faults), routing, the ``/_offline``
control endpoints and the command line.
"""

from __future__ import annotations

import argparse
import hmac
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
from http.server import ThreadingHTTPServer
from typing import Callable, TypeVar

from ..protocol import DEFAULT_MODEL
from .answers import ANSWER_SHAPES, STREAM_SHAPES, USAGE_SHAPES
from .faults import FaultQueue
from .handler import Handler

__all__ = ["OfflineServer", "run_server_cli"]

_MODES = ("text_to_image", "edit_image", "multi_merge", "describe")
_CDN_KEEP = 64  # hosted images for markdown_link answers (LRU)
_RENDER_KEEP = 16  # rendered answers, so repeated identical requests skip the painting
_KEEP_REQUESTS = 1000
_KEEP_BODIES = 20
T = TypeVar("T")


def _empty_stats() -> dict:
    return {"requests": 0, "ok": 0, "by_mode": {m: 0 for m in _MODES}, "image_fetches": 0,
            "image_fetch_authorization": [], "redirects": 0, "connections": 0}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must never wait for a hanging handler
    allow_reuse_address = True

    def __init__(self, address: tuple, owner: "OfflineServer") -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.owner = owner
        super().__init__(address, Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # Sockets closed under a handler (client gone, stop()) are expected; bugs are printed.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class OfflineServer:
    """A local GPT-5.4-Image-2 compatible server on ``host``:``port`` (0 = any free port).

    ``api_key=None`` accepts any non-empty bearer token (a missing one is still 401).
    Settable at runtime (validated): ``latency`` (seconds: the minimum time to the full answer;
    SSE progress is spread across it), ``answer_shape`` (ANSWER_SHAPES), ``stream_shape``
    (STREAM_SHAPES), ``usage_shape`` (USAGE_SHAPES), ``model``, ``link_base`` (host for
    markdown_link image URLs, default ``url``), ``link_via_redirect`` (links go through
    ``/redirect/<token>.png?to=...`` on ``url`` first), ``verbose`` (log requests to stderr).

    ``stats`` (a copy): ``requests`` (every POST to the chat path, faulted or refused
    included), ``ok`` (complete, un-faulted 200 answers), ``by_mode`` (requests whose mode
    could be read, whatever their answer), ``image_fetches`` and
    ``image_fetch_authorization`` (GET /cdn/...: the Authorization header or None, per fetch),
    ``redirects``, ``connections`` (TCP connections accepted: shows keep-alive reuse).
    ``requests``: a summary per chat request (last 1000); ``bodies``: raw bodies (last 20).
    """

    def __init__(self, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 latency: float = 0.0, model: str = DEFAULT_MODEL, answer_shape: str = "seed",
                 stream_shape: str = "seed", usage_shape: str = "standard",
                 link_base: str | None = None) -> None:
        self.api_key = api_key
        self.host = host
        self.model = model
        self._requested_port = int(port)
        self.port = 0
        self.latency = latency
        self.answer_shape = answer_shape
        self.stream_shape = stream_shape
        self.usage_shape = usage_shape
        self.link_base = link_base  # None -> self.url
        self.link_via_redirect = False
        self.verbose = False
        self._lock = threading.Lock()
        self._stats = _empty_stats()
        self._requests: deque[dict] = deque(maxlen=_KEEP_REQUESTS)
        self._bodies: deque[bytes] = deque(maxlen=_KEEP_BODIES)
        self._faults = FaultQueue()
        self._cdn: OrderedDict[str, bytes] = OrderedDict()
        self._renders: OrderedDict[tuple, object] = OrderedDict()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- settable configuration (validated) ---------------------------------------------------
    def _check(self, name: str, value: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; not {value!r}")
        return value

    @property
    def answer_shape(self) -> str:
        return self._answer_shape

    @answer_shape.setter
    def answer_shape(self, value: str) -> None:
        self._answer_shape = self._check("answer_shape", value, ANSWER_SHAPES)

    @property
    def stream_shape(self) -> str:
        return self._stream_shape

    @stream_shape.setter
    def stream_shape(self, value: str) -> None:
        self._stream_shape = self._check("stream_shape", value, STREAM_SHAPES)

    @property
    def usage_shape(self) -> str:
        return self._usage_shape

    @usage_shape.setter
    def usage_shape(self, value: str) -> None:
        self._usage_shape = self._check("usage_shape", value, USAGE_SHAPES)

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, value: float) -> None:
        value = float(value)
        if not 0 <= value <= 3600:
            raise ValueError(f"latency must be 0..3600 seconds, not {value}")
        self._latency = value

    def config(self) -> dict:
        return {"latency": self.latency, "answer_shape": self.answer_shape,
                "stream_shape": self.stream_shape, "usage_shape": self.usage_shape,
                "link_base": self.link_base, "link_via_redirect": self.link_via_redirect,
                "model": self.model, "key": "set" if self.api_key else "any"}

    def configure(self, **changes: object) -> dict:
        """Set several config values at once (all validated before any is applied)."""
        allowed = {"latency", "answer_shape", "stream_shape", "usage_shape", "link_base",
                   "link_via_redirect", "model"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"unknown config key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        before = {key: getattr(self, key) for key in allowed}
        try:
            for key, value in changes.items():
                setattr(self, key, bool(value) if key == "link_via_redirect" else value)
        except (ValueError, TypeError):
            for key, value in before.items():  # all or nothing
                setattr(self, key, value)
            raise
        return self.config()

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "OfflineServer":
        """Bind and serve in a daemon thread; returns self. A restart reuses the bound port."""
        if self.running:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self.port or self._requested_port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"offline-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every open connection (hanging handlers end at once)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._thread = None

    def __enter__(self) -> "OfflineServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the server is stopping (then give up at once)."""
        return self._stopping.wait(max(0.0, seconds))

    # -- state ---------------------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        with self._lock:
            copy = dict(self._stats)
            copy["by_mode"] = dict(self._stats["by_mode"])
            copy["image_fetch_authorization"] = list(self._stats["image_fetch_authorization"])
            return copy

    @property
    def requests(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._requests]

    @property
    def bodies(self) -> list[bytes]:
        with self._lock:
            return list(self._bodies)

    def reset(self) -> None:
        with self._lock:
            self._stats = _empty_stats()
            self._requests.clear()
            self._bodies.clear()
        self._faults.clear()

    def inject(self, kind: str, times: int = 1, **params: object) -> None:
        """Queue fault ``kind`` for the next ``times`` chat requests (FIFO across injects)."""
        self._faults.push(kind, times, **params)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def pending_faults(self) -> list[dict]:
        return self._faults.pending()

    def _bump(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def _record(self, summary: dict, body: bytes) -> None:
        with self._lock:
            self._requests.append(summary)
            self._bodies.append(body)
            if summary.get("mode"):
                self._stats["by_mode"][summary["mode"]] += 1

    def authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        if self.api_key is None:
            return True
        return hmac.compare_digest(token.encode(), self.api_key.encode())

    def host_image(self, data: bytes) -> tuple[str, str]:
        """Keep ``data`` for GET /cdn/<token>.png; returns (image URL, download URL)."""
        token = uuid.uuid4().hex
        with self._lock:
            self._cdn[token] = data
            while len(self._cdn) > _CDN_KEEP:
                self._cdn.popitem(last=False)
        base = (self.link_base or self.url).rstrip("/")
        view, download = f"{base}/cdn/{token}.png", f"{base}/cdn/download/{token}.png"
        if self.link_via_redirect:
            from urllib.parse import quote

            view = f"{self.url}/redirect/{token}.png?to={quote(view, safe='')}"
        return view, download

    def hosted(self, token: str, authorization: str | None) -> bytes | None:
        with self._lock:
            data = self._cdn.get(token)
            if data is not None:
                self._cdn.move_to_end(token)
            self._stats["image_fetches"] += 1
            self._stats["image_fetch_authorization"].append(authorization)
        return data

    def cached_render(self, key: tuple, make: Callable[[], T]) -> T:
        """``make()``'s value, memoised by ``key`` (LRU): repeated identical requests are cheap."""
        with self._lock:
            if key in self._renders:
                self._renders.move_to_end(key)
                return self._renders[key]
        value = make()
        with self._lock:
            self._renders[key] = value
            while len(self._renders) > _RENDER_KEEP:
                self._renders.popitem(last=False)
        return value


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_server_cli(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Serve until Ctrl-C (or SIGTERM); returns 0, or 1 when the port can't be bound."""
    parser = argparse.ArgumentParser(prog=prog,
                                     description="Offline GPT-5.4-Image-2 compatible server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 = any free port")
    parser.add_argument("--key", default=None, help="require this API key (default: any)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--answer-shape", choices=ANSWER_SHAPES, default="seed")
    parser.add_argument("--stream-shape", choices=STREAM_SHAPES, default="seed")
    parser.add_argument("--usage-shape", choices=USAGE_SHAPES, default="standard")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    srv = OfflineServer(api_key=args.key, host=args.host, port=args.port, latency=args.latency,
                        model=args.model, answer_shape=args.answer_shape,
                        stream_shape=args.stream_shape, usage_shape=args.usage_shape)
    srv.verbose = args.verbose
    try:
        srv.start()
    except OSError as exc:
        print(f"Cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    host = srv.url.split("//", 1)[1].rsplit(":", 1)[0]
    print(f"Offline GPT-5.4-Image-2 server on http://{host}:{srv.port} "
          f"(key: {'set' if args.key else 'any'})", flush=True)
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (e.g. from a process manager) ends the server like Ctrl-C does.
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while srv.running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_server_cli())

