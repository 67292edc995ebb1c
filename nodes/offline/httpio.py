"""Low-level HTTP/1.1 I/O for the offline server's handler: bodies in, answers out.

The server's handler subclasses :class:`HandlerIO`. Every answer either carries a
Content-Length or uses chunked transfer encoding, so keep-alive connections stay usable; the
deliberate exceptions (dropped, cut and half-sent answers) close the connection.
"""

from __future__ import annotations

import json
import socket
from http.server import BaseHTTPRequestHandler

__all__ = ["HandlerIO", "MAX_BODY", "CLIENT_GONE"]

MAX_BODY = 64 * 1024 * 1024  # 64 MiB, then 413
_DRAIN_LIMIT = 512 * 1024 * 1024  # read and discard up to this much so the client sees the 413
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class HandlerIO(BaseHTTPRequestHandler):
    """Helpers over ``self.rfile`` / ``self.wfile`` for the offline server's handler."""

    request_id: str | None = None
    response_started = False  # set once a status line went out (then no error page can follow)

    # -- request body --------------------------------------------------------------------------
    def read_body(self, limit: int = MAX_BODY) -> bytes | None:
        """The request body, or None after answering 400/413 (then the connection closes)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self.send_error_json(400, "Invalid Content-Length.", "invalid_request", close=True)
            return None
        if length > limit:
            self._drain(length)
            self._too_large(limit)
            return None
        return self.rfile.read(length)

    def _read_chunked(self, limit: int) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                self.send_error_json(400, "Bad chunked body.", "invalid_request", close=True)
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                self._too_large(limit)
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)  # CRLF after the chunk

    def _drain(self, length: int) -> None:
        if length > _DRAIN_LIMIT:
            return
        left = length
        while left > 0:
            got = self.rfile.read(min(left, 1 << 20))
            if not got:
                return
            left -= len(got)

    def _too_large(self, limit: int) -> None:
        self.send_error_json(413, f"Request body is larger than {limit // (1024 * 1024)} MiB.",
                             "request_too_large", close=True)

    # -- whole answers -------------------------------------------------------------------------
    def send_bytes(self, status: int, body: bytes, content_type: str | None,
                   headers: dict[str, str] | None = None, *, close: bool = False,
                   length: int | None = None) -> None:
        """Status, headers (Content-Length = ``length`` or len(body)) and ``body``."""
        try:
            self.response_started = True
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            if self.request_id:
                self.send_header("x-request-id", self.request_id)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)
        except CLIENT_GONE:
            close = True
        if close:
            self.close_connection = True

    def send_json(self, status: int, doc: object, headers: dict[str, str] | None = None,
                  *, close: bool = False) -> None:
        body = json.dumps(doc, ensure_ascii=False).encode("utf-8")
        self.send_bytes(status, body, "application/json", headers, close=close)

    def send_error_json(self, status: int, message: str, code: str | None,
                        etype: str = "invalid_request_error", *, close: bool = False) -> None:
        self.send_json(status, {"error": {"message": message, "type": etype, "code": code}},
                       close=close)

    def send_auth_error(self) -> None:
        # The seed's exact body.
        error = {"message": "Invalid API key.", "type": "authentication_error",
                 "code": "invalid_api_key"}
        self.send_json(401, {"error": error},
                       {"WWW-Authenticate": 'Bearer realm="offline"'})

    # -- streamed answers ----------------------------------------------------------------------
    def start_chunked(self, status: int, content_type: str,
                      headers: dict[str, str] | None = None) -> None:
        self.response_started = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        if self.request_id:
            self.send_header("x-request-id", self.request_id)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        """One chunk, straight to the socket (wfile is unbuffered): the client sees it now."""
        if data:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Close the connection now, whatever was (or wasn't) sent."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
