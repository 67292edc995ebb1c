"""build_demo(): the block canvas page, wired to the pure functions in steps.py and runner.py.

Why a fixed pool of block slots and not ``@gr.render``: a run streams progress into blocks from
a generator event, and an event can only target components that exist when it is defined. With
gr.render every state change rebuilds the blocks, losing focus while typing and flickering on
every progress tick. MAX_STEPS slots are built once; each shows or hides with the chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from ..nodes.errors import ConfigurationError, GPTImageError
from ..nodes.protocol import DEFAULT_BASE_URL, DEFAULT_MODEL, MAX_N, QUALITIES, SIZES
from .chain import MAX_STEPS, STEP_TYPES, ChainError, add_step, duplicate_step, max_inputs, move_step, remove_step
from .connection import banner, check_base_url, empty_connection, session_settings
from .endpoints import Endpoints
from .runner import chain_usage, run_chain
from .session import SessionStore
from .steps import (
    FIELDS, SLOT_PARTS, attach_upload, chain_summary, example_files, export_chain, load_chain,
    read_form, result_views, slot_views, usage_text,
)

__all__ = ["build_demo", "CSS"]

CSS = """
.step-block {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 8px;}
.step-title h3 {margin: 0 !important;}
#banner {border: 1px solid #e8b64c; background: #fff7e0; color: #5c4100; border-radius: 8px; padding: 6px 12px;}
.step-status {min-height: 3em;}
"""
_PRIVATE = dict(api_visibility="private")
_RUN_PARTS = ("status", "gallery", "text", "preview")


@dataclass
class Slot:
    k: int
    c: dict[str, Any] = field(default_factory=dict)


def _build_slot(k: int) -> Slot:
    slot = Slot(k)
    c = slot.c
    with gr.Column(visible=False, elem_id=f"step-{k}", elem_classes=["step-block"]) as c["group"]:
        with gr.Row(equal_height=True):
            c["title"] = gr.Markdown(f"### Step {k + 1}", elem_classes=["step-title"])
            buttons = (("run", "Run step", "primary"), ("run_from", "Run from here", "secondary"), ("up", "Up", "secondary"),
                       ("down", "Down", "secondary"), ("dup", "Duplicate", "secondary"), ("remove", "Remove", "stop"))
            for name, label, variant in buttons:
                c[name] = gr.Button(label, size="sm", variant=variant, scale=0, min_width=70, elem_id=f"step-{k}-{name.replace('_', '-')}")
        with gr.Row():
            with gr.Column(scale=2):
                c["type"] = gr.Dropdown(list(STEP_TYPES), value="TextToImage", label="Type", elem_id=f"step-{k}-type")
                c["prompt"] = gr.Textbox(label="Prompt", lines=3, elem_id=f"step-{k}-prompt")
                with gr.Row():
                    c["size"] = gr.Dropdown(list(SIZES), value="auto", label="Size", min_width=140)
                    c["quality"] = gr.Dropdown(list(QUALITIES), value="auto", label="Quality", min_width=100)
                    c["n"] = gr.Number(1, label="n", minimum=1, maximum=MAX_N, precision=0, min_width=70, elem_id=f"step-{k}-n")
                    c["seed"] = gr.Number(0, label="Seed", minimum=0, precision=0, min_width=80,
                                          info="Not sent; change it for a fresh request.")
                c["inputs"] = gr.Dropdown([], value=[], multiselect=True, label="Input image", elem_id=f"step-{k}-inputs")
                with gr.Row():
                    c["upload"] = gr.Image(type="filepath", format="png", image_mode=None, label="Upload an input",
                                           sources=["upload", "clipboard"], height=150, elem_id=f"step-{k}-upload")
                    c["preview"] = gr.Gallery(label="Inputs", columns=4, height=150, format="png", elem_id=f"step-{k}-preview",
                                              allow_preview=False)
            with gr.Column(scale=3):
                c["status"] = gr.Markdown("_Not run yet._", elem_id=f"step-{k}-status", elem_classes=["step-status"])
                c["gallery"] = gr.Gallery(label="Result", columns=2, height=420, format="png", object_fit="contain",
                                          elem_id=f"step-{k}-gallery")
                c["text"] = gr.Textbox(label="Model's text", lines=3, interactive=False, elem_id=f"step-{k}-text")
    return slot


def _updates(views: list[dict[str, dict]]) -> list[Any]:
    out = []
    for view in views:
        out += [gr.update(**view[name]) if name in view else gr.update() for name in SLOT_PARTS]
    return out


def build_demo(store: SessionStore | None = None, endpoints: Endpoints | None = None) -> gr.Blocks:
    """The canvas. ``store`` holds per-session folders (a temp root by default)."""
    store = store or SessionStore()
    endpoints = endpoints or Endpoints()
    with gr.Blocks(title="GPT Image 2 · Canvas", delete_cache=(1800, 3600)) as demo:
        demo.canvas_store = store  # for launch() and tests: per-session folders
        chain_state = gr.State([])
        conn_state = gr.State(empty_connection())
        gr.Markdown("# GPT Image 2 · block canvas\nChain edit steps: each block is one request; feed any block from an earlier result.")
        banner_md = gr.Markdown(elem_id="banner")
        with gr.Accordion("Connection", open=False, elem_id="connection"):
            key_box = gr.Textbox(label="API key", type="password", placeholder="kept only in this browser session's server state", elem_id="api-key")
            with gr.Row():
                url_box = gr.Textbox(label="Base URL", placeholder=DEFAULT_BASE_URL, elem_id="base-url")
                model_box = gr.Textbox(label="Model", placeholder=DEFAULT_MODEL)
            with gr.Row():
                use_btn = gr.Button("Use these settings", elem_id="use-settings")
                forget_btn = gr.Button("Forget key")
        with gr.Row(equal_height=True):
            gr.Markdown("**Examples** (one click opens one as a chain):", min_height=0)
            example_btns = [(gr.Button(p.stem, size="sm", elem_id=f"example-{p.stem}"), p) for p in example_files()]
        with gr.Row():
            add_btns = {kind: gr.Button(f"+ {kind}", elem_id=f"add-{kind}") for kind in STEP_TYPES}
        with gr.Row(equal_height=True):
            run_all = gr.Button("Run all", variant="primary", elem_id="run-all", scale=0, min_width=120)
            stop_btn = gr.Button("Stop", variant="stop", scale=0, min_width=90, elem_id="stop")
            chain_status = gr.Markdown("Add a step to start, or open an example above.", elem_id="chain-status", min_height=60)
        slots = [_build_slot(k) for k in range(MAX_STEPS)]
        with gr.Accordion("Open · save", open=True):
            with gr.Row():
                open_file = gr.File(label="Open a workflow (.json, API or UI format)", file_types=[".json"], type="filepath", elem_id="open-file")
                with gr.Column():
                    export_btn = gr.Button("Export as ComfyUI workflow", elem_id="export")
                    export_files = gr.File(label="Exported (API format, UI format, input PNGs)", file_count="multiple", interactive=False, elem_id="export-files")
        _build_api(endpoints)

        form = [s.c[f] for s in slots for f in FIELDS]
        slot_out = [s.c[p] for s in slots for p in SLOT_PARTS]
        layout_out = [chain_state, chain_status, *slot_out]

        def rerender(chain: list[dict], full: bool, note: str | None = None) -> list[Any]:
            return [chain, note or chain_summary(chain), *_updates(slot_views(chain, full))]

        def structural(op: Callable[[list[dict]], list[dict]], full: bool = True) -> Callable:
            def handler(chain: list[dict], *values: Any) -> list[Any]:
                chain = read_form(chain, values)
                try:
                    chain = op(chain)
                except (ChainError, GPTImageError) as exc:
                    gr.Warning(str(exc))
                return rerender(chain, full)
            return handler

        for kind, btn in add_btns.items():
            btn.click(structural(lambda c, kind=kind: add_step(c, kind)), [chain_state, *form], layout_out, **_PRIVATE)
        for s in slots:
            k = s.k
            for name, op in (("remove", lambda c, k=k: remove_step(c, k)), ("dup", lambda c, k=k: duplicate_step(c, k)),
                             ("up", lambda c, k=k: move_step(c, k, -1)), ("down", lambda c, k=k: move_step(c, k, +1))):
                s.c[name].click(structural(op), [chain_state, *form], layout_out, **_PRIVATE)
            s.c["type"].input(structural(lambda c, k=k: _retype(c, k), full=False), [chain_state, *form], layout_out, **_PRIVATE)
            for name in ("n", "inputs"):
                s.c[name].input(structural(lambda c: c, full=False), [chain_state, *form], layout_out, **_PRIVATE)

            def on_upload(path: str | None, chain: list[dict], *values: Any, request: gr.Request = None, k: int = k) -> list[Any]:
                chain = read_form(chain, values)
                try:
                    chain = attach_upload(chain, k, path, store.get(_sid(request)))
                except GPTImageError as exc:
                    gr.Warning(str(exc))
                return rerender(chain, False)
            s.c["upload"].upload(_with_request(on_upload), [s.c["upload"], chain_state, *form], layout_out, **_PRIVATE)

        run_out = [chain_state, chain_status, *[s.c[p] for s in slots for p in _RUN_PARTS]]
        runs = [run_all.click(_runner(store, slots, chain_state, chain_status, "all", None), [chain_state, conn_state, *form], run_out,
                              show_progress_on=[chain_status], **_PRIVATE)]
        for s in slots:
            for name, mode in (("run", "step"), ("run_from", "from")):
                runs.append(s.c[name].click(_runner(store, slots, chain_state, chain_status, mode, s.k), [chain_state, conn_state, *form], run_out,
                                            show_progress_on=[chain_status], **_PRIVATE))
        stop_btn.click(None, None, None, cancels=runs, **_PRIVATE)

        def open_chain(path: str | None, request: gr.Request) -> list[Any]:
            if not path:
                return [gr.skip()] * len(layout_out)
            try:
                chain, notes = load_chain(path, store.get(_sid(request)))
            except (ChainError, GPTImageError, OSError, ValueError) as exc:
                raise gr.Error(f"Could not open {path.rsplit('/', 1)[-1]}: {exc}")
            for note in notes:
                gr.Warning(note)
            return rerender(chain, True, f"Opened {path.rsplit('/', 1)[-1]}: " + chain_summary(chain))

        open_file.upload(open_chain, open_file, layout_out, **_PRIVATE)
        for btn, p in example_btns:
            btn.click(_opener(open_chain, str(p)), None, layout_out, **_PRIVATE)

        def export(chain: list[dict], *values: Any, request: gr.Request = None) -> list[str] | None:
            try:
                return export_chain(read_form(chain, values), store.get(_sid(request)))
            except (ChainError, GPTImageError) as exc:
                raise gr.Error(str(exc))
        export_btn.click(_with_request(export), [chain_state, *form], export_files, **_PRIVATE)

        def use_settings(key: str, url: str, model: str, conn: dict) -> tuple[dict, str, str]:
            conn = dict(conn or empty_connection())
            if key.strip():
                conn["api_key"] = key.strip()
            try:
                conn["base_url"] = check_base_url(url) if url.strip() else ""
            except ConfigurationError as exc:
                raise gr.Error(str(exc))
            conn["model"] = model.strip()
            return conn, "", banner(session_settings(conn), conn)

        # The key box is an input of a private event only, and is cleared straight away.
        use_btn.click(use_settings, [key_box, url_box, model_box, conn_state], [conn_state, key_box, banner_md], **_PRIVATE)
        forget_btn.click(lambda conn: ({**(conn or {}), "api_key": ""}, banner(session_settings({**(conn or {}), "api_key": ""}))),
                         conn_state, [conn_state, banner_md], **_PRIVATE)
        demo.load(lambda conn: banner(session_settings(conn), conn), conn_state, banner_md, **_PRIVATE)
        def forget_session(request: gr.Request) -> None:
            store.close(_sid(request))  # the tab closed: its uploads, results and cache go

        demo.unload(forget_session)
    return demo


def _retype(chain: list[dict], k: int) -> list[dict]:
    """After a type change: trim inputs to what the new type takes, or feed it by default."""
    step = chain[k]
    step["inputs"] = step["inputs"][: max_inputs(step["type"])]
    if max_inputs(step["type"]) and not step["inputs"]:
        fed = add_step(chain[:k], step["type"])[-1]["inputs"]
        step["inputs"] = fed
    return chain


def _opener(open_chain: Callable, path: str) -> Callable:
    def open_example(request: gr.Request) -> list[Any]:
        return open_chain(path, request)
    return open_example


def _sid(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _with_request(fn: Callable) -> Callable:
    """Gradio injects gr.Request only into positional parameters: put it first."""
    def wrapper(request: gr.Request, *values: Any) -> Any:
        return fn(*values, request=request)
    wrapper.__name__ = fn.__name__
    return wrapper


def _runner(store: SessionStore, slots: list[Slot], chain_state: gr.State, chain_status: gr.Markdown, mode: str, k: int | None) -> Callable:
    async def run(request: gr.Request, progress: gr.Progress = gr.Progress(), *values: Any):  # noqa: B008 - Gradio's idiom
        chain, conn, *fields = values
        chain = read_form(chain, fields)
        try:
            settings = session_settings(conn)
        except ConfigurationError as exc:
            raise gr.Error(str(exc))
        session = store.get(_sid(request))
        async for snap in run_chain(chain, session, settings, mode, k):
            if snap.total:
                progress((snap.done, snap.total), desc=snap.message, unit="steps")
            message = f"{snap.message} Chain {usage_text(chain_usage(snap.chain))}." if snap.finished else snap.message
            out: dict[Any, Any] = {chain_state: snap.chain, chain_status: message}
            for i, parts in result_views(snap.chain, snap.changed).items():
                for name, props in parts.items():
                    out[slots[i].c[name]] = gr.update(**props)
            yield out
    run.__name__ = f"run_{mode}"
    return run


def _build_api(endpoints: Endpoints) -> None:
    """Hidden components behind the public endpoints (named like the parameters)."""
    def guarded(fn: Callable) -> Callable:
        async def call(*args: Any) -> Any:
            try:
                return await fn(*args)
            except GPTImageError as exc:
                raise gr.Error(str(exc))
        call.__name__, call.__doc__ = fn.__name__, fn.__doc__
        return call

    with gr.Column(visible=False):
        prompt = gr.Textbox(label="prompt")
        size = gr.Dropdown(list(SIZES), value="auto", label="size")
        quality = gr.Dropdown(list(QUALITIES), value="auto", label="quality")
        n = gr.Number(1, label="n", precision=0, minimum=1, maximum=MAX_N)
        seed = gr.Number(0, label="seed", precision=0, minimum=0)
        # A file, not gr.Image: our own loader then reads it (caps, bombs, clear messages).
        image = gr.File(type="filepath", label="image")
        images = gr.File(file_count="multiple", type="filepath", label="images")
        question = gr.Textbox(label="question")
        workflow = gr.Textbox(label="workflow")
        out_images = gr.Gallery(label="images", format="png")
        out_text = gr.Textbox(label="text")
        out_usage = gr.Textbox(label="usage")
        out_summary = gr.JSON(label="summary")
        trigger = gr.Button(visible=False)
    common = dict(concurrency_limit=4, concurrency_id="api", api_visibility="public")
    trigger.click(guarded(endpoints.text_to_image), [prompt, size, quality, n, seed], [out_images, out_text, out_usage], api_name="text_to_image", **common)
    trigger.click(guarded(endpoints.edit_image), [image, prompt, size, quality, n, seed], [out_images, out_text, out_usage], api_name="edit_image", **common)
    trigger.click(guarded(endpoints.multi_merge), [images, prompt, size, quality, n, seed], [out_images, out_text, out_usage], api_name="multi_merge", **common)
    trigger.click(guarded(endpoints.describe), [image, question], [out_text, out_usage], api_name="describe", **common)
    trigger.click(guarded(endpoints.run_workflow), [workflow, images], [out_summary, out_images], api_name="run_workflow", **common)
