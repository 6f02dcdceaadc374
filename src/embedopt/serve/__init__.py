"""``embedopt serve``: the core as an OpenAI- and Voyage-compatible embedding and rerank gateway.

One process serves several models over one cache, batches the cache misses of concurrent requests together,
and admits each request against its tenant's key, rate limits and budget (shared by every replica through
Redis when one is configured). Endpoints: ``POST /v1/embeddings``, ``POST /v1/rerank``, ``GET /v1/models``,
``/healthz``, ``/readyz``, ``/metrics``.

Run it with ``embedopt serve [--config FILE]`` (or ``python -m embedopt.serve``); embed it with
:func:`create_app`. Needs ``pip install "embedopt[serve]"``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import EmbedOptError
from .config import ServeConfig, default_config, hash_key, load_config, parse_config

if TYPE_CHECKING:
    from .app import Gateway, create_app

__all__ = ["Gateway", "ServeConfig", "build_parser", "create_app", "default_config", "hash_key", "load_config",
           "main", "parse_config", "run"]

logger = logging.getLogger("embedopt.serve")


def __getattr__(name: str) -> Any:  # the ASGI stack is imported only when an app is made
    if name in ("Gateway", "create_app"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def curl_line(cfg: ServeConfig, port: int) -> str:
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
    auth = "" if cfg.anonymous else ' -H "Authorization: Bearer $EMBEDOPT_KEY"'
    return (f"curl -s http://{host}:{port}/v1/embeddings -H 'Content-Type: application/json'{auth} "
            f"-d '{{\"model\": \"{cfg.models[0].name}\", \"input\": [\"hello world\"], \"dimensions\": 8}}'")


def passive_omp() -> None:
    """Let torch's OpenMP workers sleep between parallel regions instead of spinning (unless the environment
    says otherwise). A server's CPU is shared by the event loop, tokenizers and other processes; spinning workers
    took 3x the CPU per MiniLM batch here when cores were busy (0.85 s against 0.28 s for 16 texts). Must run
    before torch is imported, so ``run`` calls it before any model loads."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(cfg: ServeConfig, *, embedders: dict[str, Any] | None = None, rerankers: dict[str, Any] | None = None
        ) -> int:
    """Serve ``cfg`` until SIGTERM/SIGINT (in-flight requests are drained first); returns the exit status.
    ``embedders``/``rerankers`` (by configured name) are used instead of loading those names from specs."""
    from .._extras import require

    uvicorn = require("uvicorn", extra="serve", feature="embedopt serve")
    from .app import create_app

    passive_omp()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedopt").setLevel(cfg.log_level.upper())
    app = create_app(cfg, embedders=embedders, rerankers=rerankers)
    gateway = app.state.gateway
    server = uvicorn.Server(uvicorn.Config(
        app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, access_log=cfg.access_log, lifespan="on",
        timeout_graceful_shutdown=int(cfg.drain_seconds) or None, server_header=False))
    status = {"code": 0}

    def fatal(message: str) -> None:
        status["code"] = 2
        server.should_exit = True

    def ready() -> None:
        port = cfg.port
        for srv in getattr(server, "servers", []):
            for sock in srv.sockets:
                port = sock.getsockname()[1]
        limits = f"redis (prefix {cfg.redis_prefix!r})" if cfg.redis_url else "in memory"
        auth = "anonymous (loopback)" if cfg.anonymous and not cfg.keys else f"{len(cfg.keys)} key(s)"
        print(f"embedopt serve: ready on http://{cfg.host}:{port} — models {[m.name for m in cfg.models]}, "
              f"rerankers {[r.name for r in cfg.rerankers]}, cache {cfg.cache or 'none'}, limits {limits}, "
              f"auth {auth}\ntry:\n  {curl_line(cfg, port)}", file=sys.stderr, flush=True)

    gateway.on_fatal = fatal
    gateway.on_ready = ready
    server.run()
    return status["code"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embedopt serve", description="An OpenAI- and Voyage-compatible embedding "
                                "and rerank gateway over embedopt's cache, batching, limits and budgets.")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``embedopt serve`` (the CLI adds them to its subcommand)."""
    p.add_argument("--config", "-c", help="TOML config (default: MiniLM and the static model on 127.0.0.1:8080)")
    p.add_argument("--host", help="override [server].host")
    p.add_argument("--port", type=int, help="override [server].port")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--check", action="store_true", help="check the config and exit")
    p.add_argument("--hash-key", action="store_true",
                   help="read an API key on stdin and print the [[keys]] entry that stores its sha256")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_args(args)


def run_args(args: argparse.Namespace) -> int:
    """Run parsed ``embedopt serve`` arguments (for the CLI's subcommand)."""
    try:
        if args.hash_key:
            key = sys.stdin.readline().strip()
            if not key:
                raise EmbedOptError("--hash-key reads the key on stdin; got an empty line")
            print(f'[[keys]]\nsha256 = "{hash_key(key)}"\ntenant = "TENANT"')
            return 0
        cfg = load_config(args.config)
        overrides: dict[str, Any] = {}
        if args.host:
            overrides["host"] = args.host
        if args.port is not None:
            overrides["port"] = args.port
        if args.log_level:
            overrides["log_level"] = args.log_level
        if overrides:
            from .config import check_exposure

            cfg = replace(cfg, **overrides)
            check_exposure(cfg)
        if args.check:
            print(f"embedopt serve: {cfg.source} is valid: models {[m.name for m in cfg.models]}, "
                  f"rerankers {[r.name for r in cfg.rerankers]}, {len(cfg.keys)} key(s), "
                  f"tenants {sorted(cfg.tenants)}")
            return 0
        return run(cfg)
    except EmbedOptError as exc:
        print(f"embedopt serve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


