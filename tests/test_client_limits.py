"""Limits that span a whole call: linked-image downloads, and descriptors of closed clients."""

from __future__ import annotations

import os
import socket
import time

import pytest

from gpt_image_nodes.nodes import ImageClient, Timeouts, errors


def test_linked_image_downloads_count_against_the_total_time(srv, make_client):
    """An answer linking its image to a host that never answers is bounded by the total limit."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), never answers
    try:
        srv.configure(answer_shape="markdown_link", link_base=f"http://127.0.0.1:{silent.getsockname()[1]}")
        client = make_client(sync=True, timeouts=Timeouts(connect=1, read=30, write=1, total=1.5))
        start = time.monotonic()
        with pytest.raises(errors.TimeoutError, match="total time limit"):
            client.text_to_image("x")
        assert time.monotonic() - start < 2.5
    finally:
        srv.configure(link_base=None)
        silent.close()


def test_closed_sync_clients_leave_no_descriptors(srv):
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    ImageClient(api_key="k", base_url=srv.url, backend="remote").close()  # warm imports
    before = fds()
    for _ in range(20):
        ImageClient(api_key="k", base_url=srv.url, backend="remote").close()
    assert fds() <= before + 1
