"""The process-wide offline backend: one loopback server, started on first use."""

from __future__ import annotations

import secrets
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .offline import OfflineServer

__all__ = ["shared_offline_server"]

_lock = threading.Lock()
_server: "OfflineServer | None" = None


def shared_offline_server() -> "OfflineServer":
    """The offline server every offline client in this process talks to (started lazily).

    It gets a random key, so nothing else on the machine can use it by accident.
    """
    global _server
    with _lock:
        if _server is None:
            from .offline import OfflineServer

            _server = OfflineServer(api_key="offline-" + secrets.token_urlsafe(16)).start()
        return _server
