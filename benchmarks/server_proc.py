"""The offline server in its own process, so its work (decoding our upload, encoding its answer)
never holds the benchmark process's GIL; configured over its ``/_offline`` endpoints."""

from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

BENCH_KEY = "sk-bench-" + "0" * 32


class ServerProcess:
    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.shared = False  # shared_server(): stays up across benchmarks

    def __enter__(self) -> "ServerProcess":
        return self if self.shared else self.start()

    def __exit__(self, *exc: object) -> None:
        if not self.shared:
            self.stop()

    def start(self) -> "ServerProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpt_image_nodes.nodes.offline", "--port", "0",
             "--latency", str(self.latency)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            match = re.search(r"http://[\w.\-\[\]:]+:\d+", line)
            if match:
                self.url = match.group(0)
                return self
        self.stop()
        raise RuntimeError("the offline server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _call(self, method: str, path: str, doc: dict | None = None) -> dict:
        data = json.dumps(doc).encode() if doc is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # loopback only
            return json.loads(resp.read() or b"{}")

    def configure(self, **changes: object) -> dict:
        return self._call("POST", "/_offline/config", changes)

    def stats(self) -> dict:
        return self._call("GET", "/_offline/stats")

    def reset(self) -> None:
        self._call("POST", "/_offline/reset")


class StubProcess:
    """benchmarks/stub_server.py in a subprocess (see its docstring)."""

    def __init__(self, latency: float = 0.0, events: int = 3, interval: float = 0.05,
                 side: int = 1024, size: str | None = None) -> None:
        self.args = ["--latency", str(latency), "--events", str(events), "--interval", str(interval),
                     "--size", size or f"{side}x{side}"]
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.shared = False  # shared_stub(): stays up across benchmarks

    def __enter__(self) -> "StubProcess":
        if self.shared:
            return self
        here = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen([sys.executable, os.path.join(here, "stub_server.py"), *self.args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=here)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"http://[\d.]+:\d+", line)
        if not match:
            self.__exit__()
            raise RuntimeError(f"the stub server did not start: {line!r}")
        self.url = match.group(0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and not self.shared:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(5)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def configure(self, **changes: object) -> dict:
        req = urllib.request.Request(self.url + "/_config", data=json.dumps(changes).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())


_SHARED: dict = {}


def shared_server(latency: float = 0.0) -> ServerProcess:
    """One offline server for every benchmark of this run (stats reset, latency set on each
    borrow); ``with shared_server() as srv:`` leaves it running. Stopped by close_shared()."""
    srv = _SHARED.get("offline")
    if srv is None or srv.proc is None or srv.proc.poll() is not None:
        srv = _SHARED["offline"] = ServerProcess(latency).start()
        srv.shared = True
    srv.reset()
    srv.configure(latency=latency)
    return srv


def shared_stub(size: str, latency: float = 0.0, events: int = 3, interval: float = 0.05) -> StubProcess:
    """One stub server per answer size for this run, configured on each borrow."""
    key = ("stub", size)
    stub = _SHARED.get(key)
    if stub is None or stub.proc is None or stub.proc.poll() is not None:
        stub = _SHARED[key] = StubProcess(latency, events, interval, size=size).__enter__()
        stub.shared = True
    stub.configure(latency=latency, events=events, interval=interval)
    return stub


def close_shared() -> None:
    for key in list(_SHARED):
        proc = _SHARED.pop(key)
        proc.shared = False
        if isinstance(proc, ServerProcess):
            proc.stop()
        else:
            proc.__exit__()


atexit.register(close_shared)
