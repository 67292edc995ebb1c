"""Where a canvas session's requests go: the key, base URL and model it may use, and the banner.

A key typed in the page is kept in that session's ``gr.State`` only (server side, never sent back
to the browser). When hosted (``SPACE_ID`` set) a typed base URL must be on the allow-list, and the
server's own key (a Space secret) is only ever sent to the configured base URL.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any, Mapping

from ..nodes.config import Settings, allowed_hosts, host_allowed, host_of, normalize_base_url
from ..nodes.errors import ConfigurationError

__all__ = ["OFFLINE_BANNER", "hosted", "allowed_hosts", "check_base_url", "session_settings", "banner", "connection_inputs", "empty_connection"]

OFFLINE_BANNER = (
    "⚠️ **Offline backend**: images are drawn procedurally on this machine (no key, no cost, "
    "not the real model). Add an API key under *Connection* to use GPT-5.4-Image-2."
)


def empty_connection() -> dict[str, str]:
    return {"api_key": "", "base_url": "", "model": ""}


def hosted(env: Mapping[str, str] | None = None) -> bool:
    """Running as a Hugging Face Space (or told to behave like one)."""
    env = os.environ if env is None else env
    return bool(env.get("SPACE_ID"))


def _private(host: str) -> bool:
    """Whether the host is, or resolves to, a loopback/private/link-local address."""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return True  # unresolvable: refuse rather than guess
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    return any(a.is_private or a.is_loopback or a.is_link_local or a.is_reserved or a.is_unspecified for a in addresses)


def check_base_url(url: str, env: Mapping[str, str] | None = None) -> str:
    """The normalised base URL, or ConfigurationError when this deployment may not use it."""
    value = normalize_base_url(url)
    if not hosted(env):
        return value  # a local canvas belongs to the person at the keyboard
    host = host_of(value)
    hosts = allowed_hosts(env)
    if host in hosts:
        return value  # named exactly: the operator means it, private address or not
    if host_allowed(host, hosts) and not _private(host):
        return value  # a pattern never opens the Space's own network (metadata, loopback)
    raise ConfigurationError(
        f"This hosted canvas may not send requests to {host}: allowed hosts are "
        f"{', '.join(sorted(hosts))}. The operator can extend GPT_IMAGE_ALLOWED_HOSTS."
    )


def session_settings(conn: Mapping[str, Any] | None, env: Mapping[str, str] | None = None) -> Settings:
    """The settings a session runs with: its typed key/URL/model over the server's defaults."""
    conn = conn or {}
    key = (conn.get("api_key") or "").strip() or None
    url = (conn.get("base_url") or "").strip() or None
    if url and hosted(env) and not key:
        url = None  # the server's own key only ever goes to the configured URL
    return Settings.resolve(api_key=key, base_url=url, model=(conn.get("model") or "").strip() or None, env=env)


def banner(settings: Settings, conn: Mapping[str, Any] | None = None) -> str:
    if settings.offline:
        return OFFLINE_BANNER
    host = host_of(settings.base_url)
    whose = "the key you entered (kept only in this browser session)" if (conn or {}).get("api_key") else "the key configured on the server"
    return f"Remote backend: {settings.model} at {host}, with {whose}."


def connection_inputs(settings: Settings) -> dict[str, str]:
    """What goes into each step's node inputs when running: the backend and, for remote, where.

    Part of the cache key, so switching backend or gateway never reuses another's result.
    """
    if settings.offline:
        return {"backend": "offline"}
    return {"backend": "remote", "base_url": settings.base_url, "model": settings.model}
