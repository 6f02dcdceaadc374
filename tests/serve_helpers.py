"""Real gateway servers on free loopback ports, for the serve tests: in a thread (models handed in) or as a
process (``python -m tests.serve_app``, which goes through ``embedopt.serve.run`` and its signal handling)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from embedopt.serve.config import ServeConfig, parse_config

from .conftest import hash_vectors
from .redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent


class SlowHash:
    """A provider function: hash vectors after ``delay`` seconds, or after ``gate`` is set; records each call."""

    def __init__(self, dim: int = 32, delay: float = 0.0) -> None:
        self.dim = dim
        self.delay = delay
        self.gate: threading.Event | None = None
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, texts: list[str], input_type: str) -> np.ndarray:
        with self.lock:
            self.calls.append(list(texts))
        if self.gate is not None:
            self.gate.wait(30)
        if self.delay:
            time.sleep(self.delay)
        return hash_vectors(texts, input_type, self.dim)

    @property
    def computed(self) -> list[str]:
        with self.lock:
            return [t for c in self.calls for t in c]


def hash_embedder(fn: SlowHash | None = None, *, cache: Any = "memory", price: float = 0.0, model: str = "hash") -> Any:
    from embedopt import Embedder
    from embedopt.providers import FunctionProvider

    fn = fn or SlowHash()
    return Embedder(FunctionProvider(fn, dim=fn.dim, model=model, price_per_1m_tokens=price), cache=cache,
                    show_progress=False)


def config(text: str) -> ServeConfig:
    import tomllib

    return parse_config(tomllib.loads(text))


def wait_ready(url: str, timeout: float = 120.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was ready")
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise RuntimeError(f"the server at {url} was not ready within {timeout} s: {last}")


def wait_live(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the server at {url} did not answer /healthz within {timeout} s")


class ServerThread:
    """``create_app(cfg, embedders=..., rerankers=...)`` under uvicorn in a thread of this process."""

    def __init__(self, cfg: ServeConfig, **hooks: Any) -> None:
        import uvicorn

        from embedopt.serve import create_app

        self.port = free_port()
        self.app = create_app(cfg, **hooks)
        self.gateway = self.app.state.gateway
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", access_log=False))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"{self.url}/v1"

    def start(self, *, wait: bool = True) -> ServerThread:
        self.thread.start()
        if wait:
            wait_ready(self.url, 60)
        else:
            wait_live(self.url, 60)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class ServerProcess:
    """``python -m tests.serve_app CONFIG`` on a free port: the real ``embedopt.serve.run`` in its own process."""

    def __init__(self, config_path: Path, *, env: dict[str, str] | None = None, port: int | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.config_path = config_path
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config_path.with_suffix(f".{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.serve_app", str(self.config_path), "--port", str(self.port),
                 *self.args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_ready(self.url, timeout, self.proc)
        return self

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
