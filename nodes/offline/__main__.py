"""``python -m gpt_image_nodes.nodes.offline [--port 8765] [--key K] ...``"""

from .server import run_server_cli

raise SystemExit(run_server_cli(prog="python -m gpt_image_nodes.nodes.offline"))
