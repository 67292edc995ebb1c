"""A minimal chat-completions server for the benchmarks that must not measure a server's CPU.

The offline server does real work per request (parses the JSON, decodes the uploaded PNG, hashes
it, base64-encodes its answer): on a 2-core machine, eight of those at once compete with the
client being measured. This stub spends almost nothing: it reads the body, waits ``latency``
seconds, and answers with a ready-made seed-shaped answer (SSE or JSON) holding a real PNG.
Progress events carry the server's send time (``time.monotonic()``, one clock for all processes
on Linux) as ``[t=...]`` at the end of their text, for the streaming benchmark.

Run: ``python stub_server.py [--latency S] [--events N] [--interval S] [--size WxH]``; prints
``stub on http://127.0.0.1:PORT``. ``POST /_config`` with JSON changes latency/events/interval.
Loopback only; exits when its stdin closes (so it never outlives the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import threading
import time

from bench_codecs import MODEL, answer_body, answer_png

CONFIG = {"latency": 0.0, "events": 3, "interval": 0.05}
STATS = {"requests": 0}


def _sse(doc: dict | str) -> bytes:
    data = doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False)
    return b"data: " + data.encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b64: str, answer: bytes) -> None:
    """Serve one connection; ``answer`` is the ready-made JSON answer holding ``b64``."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            if path == "/_config":
                if method == "POST" and body.strip():
                    CONFIG.update(json.loads(body))
                out = json.dumps({**CONFIG, **STATS}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(out) + out)
                await writer.drain()
                continue
            STATS["requests"] += 1
            received = time.monotonic()
            stream = b'"stream":true' in body or b'"stream": true' in body
            if not stream:
                await asyncio.sleep(max(0.0, received + CONFIG["latency"] - time.monotonic()))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(answer) + answer)
                await writer.drain()
                continue
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                         b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
            await writer.drain()
            events = int(CONFIG["events"])
            for i in range(events):
                await asyncio.sleep(max(0.0, received + i * CONFIG["interval"] - time.monotonic()))
                text = f"生成中 {100 * i // max(1, events)}% [t={time.monotonic():.6f}]"
                writer.write(_chunk(_sse({"choices": [{"delta": {"content": text}}]})))
                await writer.drain()
            await asyncio.sleep(max(0.0, received + CONFIG["latency"] - time.monotonic()))
            writer.write(_chunk(_sse({"id": "chatcmpl_img_edit_stub", "model": MODEL,
                                      "choices": [{"delta": {"image_base64": b64}}]})))
            writer.write(_chunk(_sse("[DONE]")) + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    width, height = (int(v) for v in args.size.lower().split("x"))
    png, _ = answer_png(width, height)
    b64 = base64.b64encode(png).decode("ascii")
    answer = answer_body(b64)
    server = await asyncio.start_server(lambda r, w: handle(r, w, b64, answer), "127.0.0.1", 0, limit=2**16)
    port = server.sockets[0].getsockname()[1]
    print(f"stub on http://127.0.0.1:{port}", flush=True)
    done = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def watch_stdin() -> None:  # the parent closes our stdin (or dies): stop
        sys.stdin.read()
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    threading.Thread(target=watch_stdin, daemon=True).start()
    async with server:
        await done


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--size", default="1024x1024", help="answer image WxH")
    ns = parser.parse_args()
    CONFIG.update(latency=ns.latency, events=ns.events, interval=ns.interval)
    asyncio.run(main(ns))
