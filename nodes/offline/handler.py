"""Routing for the offline server: chat, health, models, hosted images and ``/_offline`` control.

``Handler.owner`` is the :class:`~.server.OfflineServer` holding all state; the chat endpoint
itself lives in :mod:`.chat`.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from ..protocol import CHAT_COMPLETIONS_PATH
from .chat import handle_chat
from .httpio import CLIENT_GONE, HandlerIO

if TYPE_CHECKING:
    from .server import OfflineServer

__all__ = ["Handler"]


class Handler(HandlerIO):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = "OfflineGPTImage/1.0"
    timeout = 300  # an idle keep-alive connection is closed after 5 minutes

    @property
    def owner(self) -> OfflineServer:
        return self.server.owner  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._connections.add(self.connection)
            self.owner._stats["connections"] += 1  # TCP connections accepted: shows keep-alive

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if self.owner.verbose:
            super().log_message(format, *args)

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        srv = self.owner
        if path == CHAT_COMPLETIONS_PATH:
            if method != "POST":
                return self.send_error_json(405, "Use POST for chat completions.",
                                            "method_not_allowed")
            try:
                return handle_chat(self)
            except CLIENT_GONE:
                self.close_connection = True
                return None
            except Exception:  # a bug here must not look like a network fault: say so, in JSON
                traceback.print_exc(file=sys.stderr)
                if self.response_started:
                    return self.abort()
                return self.send_error_json(500, "The offline server failed; see its log.",
                                            "offline_server_error", "server_error", close=True)
        if method == "GET" and path == "/health":
            return self.send_json(200, {"status": "ok", "offline": True})
        if method == "GET" and path == "/v1/models":
            if not srv.authorized(self.headers.get("Authorization")):
                return self.send_auth_error()
            model = {"id": srv.model, "object": "model", "created": 1780470861,
                     "owned_by": "offline"}
            return self.send_json(200, {"object": "list", "data": [model]})
        if method == "GET" and path.startswith("/cdn/") and path.endswith(".png"):
            token = path.rsplit("/", 1)[1][:-4]
            data = srv.hosted(token, self.headers.get("Authorization"))
            if data is None:
                return self.send_error_json(404, "No such image (it may have expired).",
                                            "not_found")
            return self.send_bytes(200, data, "image/png")
        if method == "GET" and path.startswith("/redirect/") and path.endswith(".png"):
            token = path.rsplit("/", 1)[1][:-4]
            default = f"{srv.link_base or srv.url}/cdn/{token}.png"
            target = parse_qs(parts.query).get("to", [default])[0]
            srv._bump("redirects")
            return self.send_bytes(302, b"", "text/plain", {"Location": target})
        if path.startswith("/_offline/"):
            return self._control(method, path)
        self.send_error_json(404, f"Unknown path {path!r}.", "not_found")

    def _control(self, method: str, path: str) -> None:
        srv = self.owner
        key = (method, path.rstrip("/"))
        try:
            if key == ("GET", "/_offline/stats"):
                return self.send_json(200, srv.stats)
            if key == ("GET", "/_offline/requests"):
                return self.send_json(200, srv.requests)
            if key in (("GET", "/_offline/config"), ("GET", "/_offline/faults")):
                doc = srv.config() if path.endswith("config") else srv.pending_faults
                return self.send_json(200, doc)
            if method not in ("POST", "DELETE"):
                return self.send_error_json(404, f"Unknown control endpoint {path!r}.", "not_found")
            body = self.read_body()
            if body is None:
                return
            doc = json.loads(body) if body.strip() else {}
            if not isinstance(doc, dict):
                raise ValueError("send a JSON object")
            if key == ("POST", "/_offline/reset"):
                srv.reset()
                return self.send_json(200, {"reset": True})
            if key == ("POST", "/_offline/faults"):
                kind = doc.pop("kind", None)
                times = doc.pop("times", 1)
                srv.inject(str(kind), times, **doc)
                return self.send_json(200, {"queued": srv.pending_faults})
            if key == ("DELETE", "/_offline/faults"):
                srv.clear_faults()
                return self.send_json(200, {"queued": []})
            if key == ("POST", "/_offline/config"):
                return self.send_json(200, srv.configure(**doc))
        except (ValueError, TypeError) as exc:
            return self.send_error_json(400, str(exc), "invalid_control_request")
        self.send_error_json(404, f"Unknown control endpoint {path!r}.", "not_found")

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")
