"""Settings: key, base URL, model and backend, from arguments, environment or a config file.

Order: explicit argument, then environment (``GPT_IMAGE_API_KEY``, ``GPT_IMAGE_BASE_URL``,
``GPT_IMAGE_MODEL``, ``GPT_IMAGE_BACKEND``), then the config file: ``$GPT_IMAGE_CONFIG`` if set,
else ``config.json`` in the user config folder (Linux ``~/.config/gpt-image-nodes/``, macOS
``~/Library/Application Support/gpt-image-nodes/``, Windows ``%APPDATA%\\gpt-image-nodes\\``).
The key is never part of a repr, a log line or an error message.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .protocol import DEFAULT_BASE_URL, DEFAULT_MODEL

__all__ = ["Settings", "config_path", "BACKENDS", "allowed_hosts", "host_allowed", "host_of"]

BACKENDS = ("auto", "remote", "offline")
_APP = "gpt-image-nodes"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the config file is looked for."""
    env = os.environ if env is None else env
    explicit = env.get("GPT_IMAGE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    try:
        from platformdirs import user_config_dir

        return Path(user_config_dir(_APP, appauthor=False)) / "config.json"
    except ImportError:  # platformdirs is a dependency, but never fail config lookup over it
        return Path.home() / ".config" / _APP / "config.json"


def _read_config(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigurationError(f"The config file {path} could not be read ({exc.strerror}).") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        # Never echo the text: it may hold the key.
        raise ConfigurationError(
            f"The config file {path} is not valid JSON (line {getattr(exc, 'lineno', '?')}). "
            'It should look like {"api_key": "...", "base_url": "...", "model": "..."}.'
        ) from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"The config file {path} must hold a JSON object.")
    return data


def normalize_base_url(url: str) -> str:
    """Strip a trailing slash and a pasted ``/v1`` or ``/v1/chat/completions`` suffix."""
    value = url.strip().rstrip("/")
    for suffix in ("/chat/completions", "/v1"):
        if value.endswith(suffix):
            value = value[: -len(suffix)].rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"The base URL {url!r} is not an http(s) URL. Use e.g. {DEFAULT_BASE_URL}."
        )
    return value


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def allowed_hosts(env: Mapping[str, str] | None = None) -> set[str]:
    """Hosts besides the configured gateway that a configured key may be sent to.

    ``GPT_IMAGE_ALLOWED_HOSTS`` (comma-separated; ``*.example.com`` patterns allowed), else the
    config file's ``allowed_hosts`` list, else the configured gateway's host and api.yisu.com.
    """
    env = os.environ if env is None else env
    listed: object = env.get("GPT_IMAGE_ALLOWED_HOSTS") or ""
    if not listed:
        try:
            listed = _read_config(config_path(env)).get("allowed_hosts") or ""
        except ConfigurationError:
            listed = ""
    items = listed.split(",") if isinstance(listed, str) else [str(h) for h in listed] if isinstance(listed, list) else []
    hosts = {h.strip().lower() for h in items if h.strip()}
    if hosts:
        return hosts
    try:
        hosts.add(host_of(normalize_base_url(env.get("GPT_IMAGE_BASE_URL") or DEFAULT_BASE_URL)))
    except ConfigurationError:
        pass
    return hosts | {host_of(DEFAULT_BASE_URL)}


def host_allowed(host: str, hosts: set[str]) -> bool:
    """Exact names, ``*`` or ``*.suffix`` patterns."""
    host = host.lower()
    return host in hosts or "*" in hosts or any(h.startswith("*.") and host.endswith(h[1:]) for h in hosts)


@dataclass(frozen=True, repr=False)
class Settings:
    """Resolved connection settings. ``backend`` is ``remote`` or ``offline``."""

    api_key: str | None
    base_url: str
    model: str
    backend: str = "remote"

    @classmethod
    def resolve(
        cls,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        backend: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        config_file: str | os.PathLike | None = None,
    ) -> "Settings":
        env = os.environ if env is None else env
        file = _read_config(Path(config_file) if config_file else config_path(env))

        def pick(arg: str | None, env_name: str, file_key: str) -> str | None:
            for value in (arg, env.get(env_name), file.get(file_key)):
                if isinstance(value, str) and value.strip():
                    return value.strip()
            return None

        key = pick(api_key, "GPT_IMAGE_API_KEY", "api_key")
        url = normalize_base_url(pick(base_url, "GPT_IMAGE_BASE_URL", "base_url") or DEFAULT_BASE_URL)
        name = pick(model, "GPT_IMAGE_MODEL", "model") or DEFAULT_MODEL
        chosen = (pick(backend, "GPT_IMAGE_BACKEND", "backend") or "auto").lower()
        if chosen not in BACKENDS:
            raise ConfigurationError(f"backend {chosen!r} is not one of {', '.join(BACKENDS)}.")
        if chosen == "auto":
            # No key anywhere: the only backend that can answer is the offline one.
            chosen = "remote" if key else "offline"
        return cls(key, url, name, chosen)

    @property
    def offline(self) -> bool:
        return self.backend == "offline"

    def require_key(self) -> str:
        if not self.api_key:
            raise ConfigurationError(
                "No API key is configured. Set GPT_IMAGE_API_KEY, or put "
                f'{{"api_key": "..."}} in {config_path()}, or choose the offline backend '
                "to try things without a key."
            )
        return self.api_key

    def __repr__(self) -> str:
        key = "set" if self.api_key else "none"
        return f"Settings(base_url={self.base_url!r}, model={self.model!r}, backend={self.backend!r}, api_key=<{key}>)"

    __str__ = __repr__
