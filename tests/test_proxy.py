"""Proxies come from the standard environment variables (and never apply to the offline backend)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest


class _ForwardProxy(BaseHTTPRequestHandler):
    """A minimal HTTP forward proxy: absolute-URI requests are sent on, and counted."""

    hits: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        type(self).hits.append(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "proxy-connection", "connection", "content-length")}
        upstream = httpx.post(self.path, content=body, headers=headers, timeout=30, trust_env=False)
        self.send_response(upstream.status_code)
        for k, v in upstream.headers.items():
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy():
    _ForwardProxy.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _ForwardProxy.hits
    server.shutdown()
    server.server_close()


def test_http_proxy_from_environment(srv, make_client, proxy, monkeypatch):
    url, hits = proxy
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", url)
    result = make_client(sync=True).text_to_image("through the proxy", size="1024x1024")
    assert len(result.images) == 1
    assert hits == [srv.url + "/v1/chat/completions"] and srv.stats["requests"] == 1


def test_no_proxy_is_honoured(srv, make_client, proxy, monkeypatch):
    url, hits = proxy
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    make_client(sync=True).text_to_image("direct", size="1024x1024")
    assert hits == [] and srv.stats["requests"] == 1


def test_offline_backend_never_uses_a_proxy(proxy, monkeypatch):
    from gpt_image_nodes.nodes import ImageClient

    url, hits = proxy
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with ImageClient(backend="offline") as client:
        assert len(client.text_to_image("offline", size="1024x1024").images) == 1
    assert hits == []
