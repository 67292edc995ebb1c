"""Configuration precedence, and the key kept out of every repr, log record and message."""

from __future__ import annotations

import json
import logging

import pytest
from PIL import Image

from gpt_image_nodes.nodes import AsyncImageClient, ImageClient, Settings, config_path, errors
from gpt_image_nodes.nodes.config import normalize_base_url


def test_precedence_argument_env_file(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"api_key": "file-key", "base_url": "https://file.example", "model": "file-model"}))
    env = {"GPT_IMAGE_CONFIG": str(cfg)}
    s = Settings.resolve(env=env)
    assert (s.api_key, s.base_url, s.model, s.backend) == ("file-key", "https://file.example", "file-model", "remote")
    env.update(GPT_IMAGE_API_KEY="env-key", GPT_IMAGE_BASE_URL="https://env.example/v1/", GPT_IMAGE_MODEL="env-model")
    s = Settings.resolve(env=env)
    assert (s.api_key, s.base_url, s.model) == ("env-key", "https://env.example", "env-model")
    s = Settings.resolve(api_key="arg-key", base_url="https://arg.example", model="arg-model", env=env)
    assert (s.api_key, s.base_url, s.model) == ("arg-key", "https://arg.example", "arg-model")


def test_defaults_and_auto_backend(tmp_path):
    env = {"GPT_IMAGE_CONFIG": str(tmp_path / "missing.json")}
    s = Settings.resolve(env=env)
    assert (s.base_url, s.model, s.backend, s.api_key) == ("https://api.yisu.com", "gpt-5.4-image-2", "offline", None)
    assert Settings.resolve(api_key="k", env=env).backend == "remote"
    assert Settings.resolve(api_key="k", backend="offline", env=env).backend == "offline"
    with pytest.raises(errors.ConfigurationError, match="No API key"):
        Settings.resolve(backend="remote", env=env).require_key()


def test_config_path_is_documented_location(monkeypatch, tmp_path):
    monkeypatch.delenv("GPT_IMAGE_CONFIG", raising=False)
    assert config_path().name == "config.json" and "gpt-image-nodes" in str(config_path())
    assert config_path({"GPT_IMAGE_CONFIG": str(tmp_path / "c.json")}) == tmp_path / "c.json"


def test_broken_config_file_never_echoes_the_key(tmp_path, canary_key):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"api_key": "%s",' % canary_key)
    with pytest.raises(errors.ConfigurationError) as info:
        Settings.resolve(env={"GPT_IMAGE_CONFIG": str(cfg)})
    assert canary_key not in str(info.value) and "not valid JSON" in str(info.value)


@pytest.mark.parametrize("url,expected", [
    ("https://api.yisu.com/", "https://api.yisu.com"),
    ("https://gw.example/v1", "https://gw.example"),
    ("https://gw.example/v1/chat/completions", "https://gw.example"),
    ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
])
def test_base_url_normalised(url, expected):
    assert normalize_base_url(url) == expected


def test_bad_base_url():
    with pytest.raises(errors.ConfigurationError, match="not an http"):
        normalize_base_url("ftp://x")


def test_reprs_hide_the_key(canary_key):
    s = Settings.resolve(api_key=canary_key, env={})
    for text in (repr(s), str(s), repr(AsyncImageClient(s))):
        assert canary_key not in text and "api_key=<set>" in text
    client = ImageClient(s)
    try:
        assert canary_key not in repr(client)
    finally:
        client.close()


def test_canary_never_leaks_across_modes_and_faults(srv, make_client, canary_key, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(sync=True)
    seen: list[str] = []
    img = Image.new("RGB", (64, 64), "orange")
    results = [
        client.text_to_image("a", n=2), client.edit_image(img, "invert"),
        client.multi_merge([img, img], "merge"), client.describe(img),
        client.text_to_image("b", stream=True, on_progress=lambda e: seen.append(repr(e))),
    ]
    seen += [repr(r) for r in results]
    for kind, params in [("status", {"status": 401}), ("status", {"status": 500}), ("no_image", {}),
                         ("refusal", {}), ("bad_base64", {}), ("not_json", {}), ("mid_stream_error", {})]:
        srv.inject(kind, 9, **params)
        try:
            client.text_to_image("c", stream=kind == "mid_stream_error")
        except errors.GPTImageError as exc:
            seen += [str(exc), repr(exc), repr(exc.args)]
        srv.clear_faults()
    # A key typed into a prompt by mistake is not echoed back in errors either.
    srv.inject("status", 1, status=400, message=f"bad prompt {canary_key}")
    try:
        client.text_to_image("d")
    except errors.GPTImageError as exc:
        seen.append(str(exc))
    blob = "\n".join(seen) + caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert canary_key not in blob
    assert ";base64," not in caplog.text


def test_a_workflow_cannot_send_the_configured_key_to_another_host(srv, canary_key, monkeypatch):
    """A shared workflow's per-node base_url gets the configured key only if that host is trusted."""
    import asyncio

    from gpt_image_nodes.nodes.node_types import NODE_TYPES, ClientPool, RunContext

    monkeypatch.setenv("GPT_IMAGE_API_KEY", canary_key)
    monkeypatch.setenv("GPT_IMAGE_BASE_URL", srv.url)  # configured gateway: 127.0.0.1
    monkeypatch.setenv("GPT_IMAGE_CONFIG", "/nonexistent/config.json")
    monkeypatch.delenv("GPT_IMAGE_ALLOWED_HOSTS", raising=False)
    elsewhere = srv.url.replace("127.0.0.1", "localhost")

    def run(base_url: str):
        ctx = RunContext(client_for=ClientPool())
        return asyncio.run(NODE_TYPES["GPTImage2TextToImage"].run(ctx, prompt="a cat", backend="remote", base_url=base_url))

    with pytest.raises(errors.ConfigurationError, match="send your API key to localhost") as info:
        run(elsewhere)
    assert canary_key not in str(info.value) and srv.stats["requests"] == 0
    assert len(run(srv.url)[0]) == 1  # the configured gateway, named explicitly, is fine
    monkeypatch.setenv("GPT_IMAGE_ALLOWED_HOSTS", "localhost")
    assert len(run(elsewhere)[0]) == 1
    assert srv.stats["requests"] == 2
