"""``gpt-image-nodes``: run workflows headless, serve the offline backend, open the canvas.

Exit codes: 0 ok, 1 a node failed (finished results are kept), 2 usage or an invalid
workflow (nothing was sent), 130 interrupted (finished results are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from .config import BACKENDS
from .errors import GPTImageError
from .workflow import Executor, ResultCache, Workflow, WorkflowError, default_cache_dir, load_batch_items, load_workflow, run_batch
from .workflow.catalog import is_ours
from .workflow.console import Progress, batch_summary, failure_text, run_summary

__all__ = ["main", "build_parser"]

_EPILOG = """\
examples:
  gpt-image-nodes run workflows/api/text_to_image.json --out out --backend offline
  gpt-image-nodes run chain.json --out out --set 1.prompt="a red fox" --set 1.seed=7
  gpt-image-nodes run chain.json --out out --batch items.csv      (resumable)
  gpt-image-nodes serve --port 8765                              (offline server)
  gpt-image-nodes canvas                                         (the block canvas)

Results are cached in {cache} (or --cache-dir), so re-running an unchanged
workflow, or an interrupted batch, sends no request for what is already done.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt-image-nodes", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="GPT-5.4-Image-2 nodes: run ComfyUI workflows (API or UI format) headless.",
        epilog=_EPILOG.format(cache=default_cache_dir()))
    sub = parser.add_subparsers(dest="command", metavar="{run,serve,canvas}")
    run = sub.add_parser("run", help="run a workflow file", formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Run a ComfyUI workflow (API or UI format) made of GPT Image 2 nodes, LoadImage, SaveImage and PreviewImage.")
    run.add_argument("workflow", type=Path, help="workflow JSON (API format, or UI format: converted)")
    run.add_argument("--out", type=Path, default=Path("out"), help="folder for SaveImage files and Describe texts (default: ./out)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                     help="override an input; NODE is an id, a title or a class (e.g. 3.prompt=\"a red fox\", EditImage.seed=4). Repeatable.")
    run.add_argument("--batch", type=Path, metavar="ITEMS", help="CSV or JSONL of overrides (columns NODE.INPUT, optional id): one run per item, into OUT/<item>/; resumable")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache (every node is requested again)")
    run.add_argument("--cache-dir", type=Path, help=f"result cache folder (default: {default_cache_dir()}, or $GPT_IMAGE_CACHE_DIR)")
    run.add_argument("--concurrency", type=int, default=4, metavar="N", help="API nodes (and batch items) running at once (default: 4)")
    run.add_argument("--backend", choices=BACKENDS, help="use this backend for every node; offline = the built-in offline server, no key needed")
    run.add_argument("--input-dir", type=Path, help="folder LoadImage reads from (default: the workflow file's folder)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress, only the summary and errors")
    sub.add_parser("serve", help="run the offline server (see: gpt-image-nodes serve --help)", add_help=False)
    sub.add_parser("canvas", help="open the block canvas (needs gradio)", add_help=False)
    return parser


def _value(text: str) -> Any:
    """A --set value: a JSON string literal is unquoted; anything else stays text and is
    converted to the input's type (numbers, true/false) by the workflow."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _overrides(wf: Workflow, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.backend:
        out.update({f"{nid}.backend": args.backend for nid, n in wf.nodes.items() if is_ours(n["class_type"])})
    for item in args.overrides:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise WorkflowError(f"--set {item!r} must look like NODE.INPUT=VALUE, e.g. 3.prompt=\"a red fox\".")
        out[key.strip()] = _value(value)
    return out


class _Interrupt:
    """First Ctrl-C: start nothing new, let paid requests in flight finish. Second: abort."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.cancel = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> "_Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, *_: object) -> None:
        if self.stop.is_set():
            self.cancel.set()
            return
        self.stop.set()
        sys.stderr.write("\nStopping: no new requests; waiting for those in flight so they are not lost (Ctrl-C again to abort them).\n")
        sys.stderr.flush()


def _run(args: argparse.Namespace) -> int:
    wf = load_workflow(args.workflow)
    if not wf.nodes:  # "{}", or a UI file of notes only: "0 nodes run", exit 0, would hide the mistake
        raise WorkflowError(f"The workflow {args.workflow} holds no nodes to run; is it the right file?")
    cache = None if args.no_cache else ResultCache(args.cache_dir or default_cache_dir())
    input_dir = args.input_dir or args.workflow.resolve().parent
    executor = Executor(cache=cache, concurrency=args.concurrency, input_dir=input_dir, output_dir=args.out)
    overrides = _overrides(wf, args)
    wf.apply_overrides(overrides)  # fail on a bad --set before anything else
    progress = Progress(wf, sys.stderr, quiet=args.quiet)
    with _Interrupt() as interrupt:
        if args.batch:
            items = load_batch_items(args.batch)

            async def batch() -> Any:
                try:
                    return await run_batch(executor, wf, items, args.out, on_event=lambda key, ev: progress(ev, key),
                                           cancel_check=interrupt.cancel.is_set, stop_check=interrupt.stop.is_set)
                finally:
                    await executor.aclose()

            report = asyncio.run(batch())
            print(batch_summary(report, args.out))
            if report.cancelled or interrupt.stop.is_set():
                sys.stderr.write("Interrupted. Run the same command again to finish the remaining items; done items are skipped.\n")
                return 130
            return 1 if report.failed else 0
        report = executor.run_sync(wf, on_event=progress, cancel_check=interrupt.cancel.is_set, stop_check=interrupt.stop.is_set)
    print(run_summary(wf, report, args.out))
    if report.errors:
        sys.stderr.write(failure_text(wf, report) + "\n")
        if not (report.cancelled and all(m == "cancelled" for m in report.errors.values())):
            return 1
    if report.cancelled or interrupt.stop.is_set():
        sys.stderr.write("Interrupted. Finished results are kept; run the same command again to finish (cached nodes send no request).\n")
        return 130
    return 0


def _canvas(argv: list[str]) -> int:
    try:  # imported here: the runner works without gradio
        from ..ui.launch import main as canvas_main

        return int(canvas_main(argv) or 0)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("gradio", "gradio_client") or "gradio" in str(exc):
            sys.stderr.write("The canvas needs gradio: pip install 'gpt-image-nodes[canvas]'\n")
            return 2
        raise


def _serve(argv: list[str]) -> int:
    from .offline.server import run_server_cli

    return int(run_server_cli(argv) or 0)


def _exit_code(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("serve", "canvas"):
        try:
            return (_serve if argv[0] == "serve" else _canvas)(argv[1:])
        except SystemExit as exc:  # their argparse: --help is 0, a usage error 2
            return _exit_code(exc)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, a usage error 2
        return _exit_code(exc)
    if args.command != "run":
        parser.print_help()
        return 2
    try:
        return _run(args)
    except WorkflowError as exc:
        sys.stderr.write(f"error: {exc}\nNothing was sent. Fix the workflow (or the --set/--batch values) and run again.\n")
        return 2
    except GPTImageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted. Finished results are kept.\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
