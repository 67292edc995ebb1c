"""Starting the canvas: ``gpt-image-nodes canvas`` and the Space's app.py both come here.

Kept apart from build_demo() so tests can build the page without serving it, and so the launch
policy (no run history, upload cap, queue limits) is written once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

__all__ = ["main", "serve", "launch_kwargs", "prepare", "MAX_UPLOAD", "CONCURRENCY"]

#: Uploads above this are refused by Gradio before they reach the app.
MAX_UPLOAD = "20mb"
#: Events of one kind that may run at once (runs are async: this is requests in flight, not threads).
CONCURRENCY = 8


def launch_kwargs() -> dict[str, Any]:
    """Arguments every launch shares (Gradio 6 takes theme/css in launch(), not Blocks())."""
    import gradio as gr

    from .app import CSS

    return dict(
        run_history=False,  # a run's inputs must never be kept in the browser (keys, images)
        max_file_size=MAX_UPLOAD,
        footer_links=["api", "gradio"],
        theme=gr.themes.Soft(),
        css=CSS,
        show_error=True,
    )


def prepare(demo: Any = None) -> Any:
    """The demo, built if not given, with its queue set up."""
    if demo is None:
        from .app import build_demo

        demo = build_demo()
    return demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)


def serve(demo: Any = None, host: str = "127.0.0.1", port: int | None = None, **overrides: Any) -> tuple[Any, str]:
    """Start the canvas in a background thread of this process; returns (demo, local URL).

    For embedding and tests: the offline server and the session store live in this process,
    so a caller can read ``shared_offline_server().stats`` and ``demo.canvas_store``."""
    demo = prepare(demo)
    kwargs = {**launch_kwargs(), **overrides}
    _, local_url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, **kwargs)
    return demo, local_url


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpt-image-nodes canvas", description="Serve the block canvas in the browser.")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to listen on (default 127.0.0.1; 0.0.0.0 for the network)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port (default 7860; the next free one if taken)")
    p.add_argument("--share", choices=("no", "yes"), default="no", help="also open a public gradio.live link (default no)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    return p


def main(argv: list[str] | None = None) -> int:
    """Serve the canvas until Ctrl-C; prints the local address first."""
    args = _parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # A plain `kill` ends the server like Ctrl-C does: session folders are removed.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo = prepare()
    try:
        _, local_url, share_url = demo.launch(
            server_name=args.host, server_port=args.port, share=args.share == "yes", inbrowser=args.open,
            prevent_thread_lock=True, quiet=True, **launch_kwargs(),
        )
    except OSError as exc:
        print(f"gpt-image-nodes canvas: could not listen on {args.host}:{args.port} ({exc}). Try --port.", file=sys.stderr)
        return 1
    print(f"GPT Image 2 canvas running at {local_url}", flush=True)
    if share_url:
        print(f"Public link: {share_url}", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
        store = getattr(demo, "canvas_store", None)
        if store is not None:
            store.close_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
