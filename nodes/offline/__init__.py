"""The built-in offline server: GPT-5.4-Image-2's protocol on loopback, no API key needed.

It speaks exactly the seed's chat-completions protocol (``/work/shared/seed``), paints honest
procedural images (deterministic per request), can answer in every shape real gateways use, and
can inject faults, so the product runs offline and the tests talk real HTTP::

    from gpt_image_nodes.nodes.offline import OfflineServer

    with OfflineServer() as srv:            # any free loopback port, any bearer key
        ...  # point the client at srv.url
        srv.inject("status", 2, status=429, retry_after="1")
        srv.answer_shape = "markdown_link"  # see ANSWER_SHAPES / STREAM_SHAPES
        print(srv.stats)

Command line: ``python -m gpt_image_nodes.nodes.offline --port 8765``.
Out-of-process control: ``GET /_offline/stats``, ``GET /_offline/requests``,
``POST /_offline/reset``, ``POST /_offline/faults`` ``{"kind": ..., "times": 1, ...}``,
``DELETE /_offline/faults``, ``GET|POST /_offline/config``; plus ``GET /health``.
"""

from .answers import ANSWER_SHAPES, STREAM_SHAPES, USAGE_SHAPES
from .faults import FAULT_KINDS
from .server import OfflineServer, run_server_cli

__all__ = [
    "OfflineServer",
    "run_server_cli",
    "FAULT_KINDS",
    "ANSWER_SHAPES",
    "STREAM_SHAPES",
    "USAGE_SHAPES",
]
