"""Shared fixtures: a real offline server on loopback and real clients pointed at it."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest

from gpt_image_nodes.nodes import AsyncImageClient, ImageClient, RetryPolicy, Timeouts
from gpt_image_nodes.nodes.offline import OfflineServer

ROOT = Path(__file__).resolve().parent.parent


class _RootIsNotATestPackage:
    """The repository root is the package itself (it has ``__init__.py`` for ComfyUI), so pytest
    would import it as a test package named after the checkout folder ("main", "ci-check"...):
    a second copy of the code under another name, or an ImportError. Collect it as a plain
    folder; tests import the installed ``gpt_image_nodes`` only."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent: pytest.Collector):  # noqa: ANN201
        if path == ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_RootIsNotATestPackage(), "gpt-image-nodes-root-dir")
    # Tests never read or write the user's own result cache.
    import os
    import tempfile

    os.environ["GPT_IMAGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="gpt-image-test-cache-")


#: Shaped like a real key, so a leak anywhere is found by a plain substring search.
CANARY_KEY = "sk-canary-" + secrets.token_hex(16)

FAST_RETRY = RetryPolicy(max_retries=3, initial_backoff=0.05, max_backoff=0.2, max_retry_after=5.0)


@pytest.fixture(scope="session")
def server():
    srv = OfflineServer(api_key=CANARY_KEY).start()
    yield srv
    srv.stop()


@pytest.fixture
def srv(server):
    """The session server, reset to its defaults for each test."""
    server.reset()
    server.configure(latency=0.0, answer_shape="seed", stream_shape="seed", usage_shape="standard")
    yield server
    server.reset()


@pytest.fixture
def make_client(srv):
    made = []

    def make(sync: bool = False, **kw):
        kw.setdefault("retry", FAST_RETRY)
        kw.setdefault("timeouts", Timeouts(connect=2, read=5, write=5, total=20))
        cls = ImageClient if sync else AsyncImageClient
        client = cls(api_key=kw.pop("api_key", CANARY_KEY), base_url=kw.pop("base_url", srv.url), backend="remote", **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        if isinstance(client, ImageClient):
            client.close()


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture(scope="session")
def canary_key() -> str:
    return CANARY_KEY


_CANVAS_ENV = ("GPT_IMAGE_API_KEY", "GPT_IMAGE_BACKEND", "GPT_IMAGE_BASE_URL", "GPT_IMAGE_CONFIG",
               "GPT_IMAGE_ALLOWED_HOSTS", "GPT_IMAGE_MODEL", "GPT_IMAGE_CACHE_DIR", "SPACE_ID")


@pytest.fixture(scope="session")
def start_canvas():
    """Start the real canvas in this process, with no key anywhere (so: the offline backend).

    Use as ``with start_canvas(SPACE_ID="x/y") as (demo, url): ...`` from a module fixture;
    extra keyword arguments are environment variables for the canvas's lifetime."""
    import contextlib
    import os
    import socket

    @contextlib.contextmanager
    def start(**env: str):
        import tempfile

        from gpt_image_nodes.ui.launch import serve

        env.setdefault("GPT_IMAGE_CACHE_DIR", tempfile.mkdtemp(prefix="gpt-image-canvas-cache-"))
        saved = {k: os.environ.get(k) for k in {*_CANVAS_ENV, *env}}
        for k in saved:
            os.environ.pop(k, None)
        os.environ.update(GPT_IMAGE_CONFIG="/nonexistent/gpt-image-config.json", **env)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        demo, url = serve(port=port)
        try:
            yield demo, url
        finally:
            demo.close()
            demo.canvas_store.close_all()
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

    return start


@pytest.fixture
def srv_env(srv, canary_key, tmp_path, monkeypatch):
    """Real clients reach the test server through the ordinary settings (environment): the
    canary key, the server as the configured gateway, no config file, a private cache folder."""
    monkeypatch.setenv("GPT_IMAGE_API_KEY", canary_key)
    monkeypatch.setenv("GPT_IMAGE_BASE_URL", srv.url)
    monkeypatch.setenv("GPT_IMAGE_CONFIG", str(tmp_path / "no-config.json"))
    monkeypatch.setenv("GPT_IMAGE_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("GPT_IMAGE_BACKEND", "GPT_IMAGE_MODEL", "GPT_IMAGE_ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    return srv
