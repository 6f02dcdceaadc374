"""The gateway under load, against Infinity and a naive FastAPI server, in one run, on loopback.

    .venv/bin/python bench/serve.py [--spec minilm] [--duration 8] [--levels 1,8,32,128]
                                    [--peers infinity,naive] [--encoding base64]

Servers, all started fresh on free 127.0.0.1 ports, on the same CPU; each (mix, clients) run goes to every server
back to back (only one is under load at a time), so background load that drifts hits them alike:
  - embedopt serve (this repo), model --spec (``minilm``; ``onnx:DIR`` once the ONNX provider lands), with a
    memory+SQLite cache in a temporary folder, access log off;
  - infinity-emb 0.0.78 serving the same MiniLM folder (torch, CPU, batch size 32, no disk cache), from
    bench/.venv-infinity (install it with bench/peers/setup_infinity.sh); skipped with a note when missing;
  - bench/peers/naive.py: FastAPI, one request -> one ``encode`` call, no cache.
Every server gets the same environment, OMP_WAIT_POLICY=PASSIVE included (--omp-wait-policy), which is what
``embedopt serve`` sets for itself; with torch's default (active spinning) a server that runs torch from
several threads wastes CPU, which would flatter the gateway against the naive server.
Load: C concurrent clients (C in --levels), each on its own keep-alive connection, sending OpenAI-shaped requests
of 1-32 texts (uniform, seeded) back to back for --duration seconds; texts are debian-packages descriptions.
Mixes: ``miss`` (every text new to the server) and ``hit90`` (90% of texts from a warm set of 1,000 the gateway
has cached, 10% new); the gateway also runs ``hit100`` (all cached) for the 10,000 texts/s goal. Peers have no
cache, so they compute every text in every mix. The same request sequence goes to every server.
The client is a minimal asyncio HTTP/1.1 client (not httpx) so that it takes as little of the shared CPU as
possible; it checks every answer's status and its number of vectors.
Reported per (server, mix, clients): texts/s, requests/s, p50 and p99 request latency, errors. Ratios: gateway /
infinity and gateway / naive at each level; the goals are checked at 32 clients on the miss mix.
Runtime: about (3 servers x 8 runs + 2) x duration + ~90 s of model loading and warming: ~5 min at 8 s on an
idle 2-core machine. Bounded: a run is cut off at duration + max(15 s, 2 x duration) (requests still open are
reported as ``unfinished``); after a cut-off the bench waits (at most 3 min) until that server stops computing
for the clients that left (Infinity and the naive server finish abandoned work; the gateway drops it), and a
server that answered nothing at some level is not run at higher levels of that mix. Smoke run (about 2 min):
``--levels 1,8 --duration 3 --max-chars 120 --warm 100``.
Writes bench/results/serve.json. Figures measured while other jobs share the CPU are not final: the load average
is recorded before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
INFINITY = BENCH / ".venv-infinity" / "bin" / "infinity_emb"
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "debian-packages" / "corpus.jsonl"
WARM = 1000


# ------------------------------------------------------------------------------------------------- texts
def load_texts(path: Path, limit: int = 20000, max_chars: int = 1000) -> list[str]:
    texts = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            text = f"{doc.get('title', '')}: {doc.get('text', '')}".strip(": ")[:max_chars]
            if text.strip():
                texts.append(text)
            if len(texts) >= limit:
                break
    return texts


class Workload:
    """Request bodies in a fixed order: request k always holds the same texts, whoever sends it."""

    def __init__(self, texts: list[str], mix: str, seed: int, run: int, warm: int = WARM) -> None:
        self.warm = texts[:warm]
        self.fresh = texts[warm:]
        self.mix = mix
        self.rng = random.Random(seed)
        self.run = run
        self.counter = 0

    def _new(self) -> str:
        i = self.counter
        self.counter += 1
        base = self.fresh[i % len(self.fresh)]
        return f"{base} [run {self.run} #{i}]"  # unique: a cache has never seen it

    def next(self) -> list[str]:
        n = self.rng.randint(1, 32)
        if self.mix == "miss":
            return [self._new() for _ in range(n)]
        hit = 0.9 if self.mix == "hit90" else 1.0
        return [self.rng.choice(self.warm) if self.rng.random() < hit else self._new() for _ in range(n)]


# ------------------------------------------------------------------------------------------------ client
class Conn:
    """One keep-alive HTTP/1.1 connection: POST a body, read status and body (Content-Length or chunked)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                          + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            data = b"".join(parts)
        else:
            data = await self.reader.read()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


@dataclass
class Result:
    server: str
    mix: str
    clients: int
    requests: int = 0
    texts: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""
    unfinished: int = 0
    """Requests still unanswered when the run was cut off (duration + grace)."""

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

        return {"server": self.server, "mix": self.mix, "clients": self.clients, "requests": self.requests,
                "texts": self.texts, "errors": self.errors, "unfinished": self.unfinished,
                "seconds": round(self.seconds, 3),
                "texts_per_s": round(self.texts / self.seconds, 1) if self.seconds else 0.0,
                "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else None,
                **({"first_error": self.first_error} if self.first_error else {})}


async def drive(port: int, path: str, model: str, encoding: str, workload: Workload, clients: int,
                duration: float, server: str) -> Result:
    result = Result(server, workload.mix, clients)
    stop_at = time.perf_counter() + duration
    started = time.perf_counter()
    last_done = started

    async def client() -> None:
        nonlocal last_done
        conn = Conn(port)
        try:
            while time.perf_counter() < stop_at:
                texts = workload.next()
                body = json.dumps({"model": model, "input": texts, "encoding_format": encoding}).encode()
                t0 = time.perf_counter()
                try:
                    result.unfinished += 1
                    status, data = await conn.post(path, body)
                    result.unfinished -= 1
                except (OSError, asyncio.IncompleteReadError) as exc:
                    result.unfinished -= 1
                    result.errors += 1
                    result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                    await conn.close()
                    continue
                t1 = time.perf_counter()
                if status != 200 or data.count(b'"index"') != len(texts):
                    result.errors += 1
                    result.first_error = result.first_error or f"{status}: {data[:200]!r}"
                    continue
                result.latencies.append(t1 - t0)
                result.requests += 1
                result.texts += len(texts)
                last_done = max(last_done, t1)
        finally:
            await conn.close()

    tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
    # bounded: requests still in flight this long after the deadline are cut off and counted as unfinished
    _, late = await asyncio.wait(tasks, timeout=duration + max(15.0, 2 * duration))
    for t in late:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result.seconds = last_done - started
    return result


# ----------------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server on port {port} not ready within {timeout} s")


@dataclass
class Server:
    name: str
    argv: list[str]
    ready_path: str
    embed_path: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def start(self, workdir: Path) -> None:
        self.log = workdir / f"{self.name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        wait_http(self.port, self.ready_path, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(server: Server, timeout: float = 180.0) -> float:
    """Wait until the server stops computing (work for requests the run cut off: Infinity and the naive server
    finish them after the client left), so it does not eat into the next run. Returns the seconds waited."""
    if server.proc is None or not Path(f"/proc/{server.proc.pid}").exists():
        return 0.0
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(server.proc.pid)
        time.sleep(1.0)
        if cpu_seconds(server.proc.pid) - before < 0.1:
            break
    return round(time.monotonic() - started, 1)


def minilm_folder() -> str:
    from embedopt.providers._local import resolve_model

    return str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").location)


def make_servers(args: argparse.Namespace, workdir: Path) -> tuple[list[Server], list[str]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "INFINITY_ANONYMOUS_USAGE_STATS": "0", "TOKENIZERS_PARALLELISM": "false"}
    if args.omp_wait_policy != "default":  # the same for every server (the gateway sets PASSIVE by itself)
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    folder = args.model_folder or minilm_folder()
    notes = []
    servers = []
    port = free_port()
    config = workdir / "serve.toml"
    config.write_text(f"""
[server]
access_log = false
log_level = "warning"
request_timeout_seconds = 120
[cache]
spec = "{args.cache.replace('SQLITE', 'sqlite:' + str(workdir / 'vectors.sqlite3'))}"
[models.minilm]
spec = "{args.spec}"
[batching]
max_batch_tokens = {args.max_batch_tokens}
max_batch_texts = {args.max_batch_texts}
max_wait_ms = {args.max_wait_ms}
workers = {args.workers}
""")
    servers.append(Server("embedopt", [sys.executable, "-m", "embedopt.serve", "--config", str(config), "--port",
                                       str(port)], "/readyz", "/v1/embeddings", port, env))
    peers = [p for p in args.peers.split(",") if p]
    if "infinity" in peers:
        if INFINITY.exists():
            port = free_port()
            servers.append(Server("infinity", [str(INFINITY), "v2", "--model-id", folder, "--served-model-name",
                                               "minilm", "--port", str(port), "--host", "127.0.0.1", "--engine",
                                               args.infinity_engine, "--device", "cpu", "--batch-size", "32",
                                               "--no-vector-disk-cache", "--log-level", "warning"],
                                   "/health", "/embeddings", port, env))
        else:
            notes.append("infinity skipped: run bench/peers/setup_infinity.sh first")
    if "naive" in peers:
        port = free_port()
        servers.append(Server("naive", [sys.executable, str(BENCH / "peers" / "naive.py"), "--model", folder,
                                        "--port", str(port)], "/readyz", "/v1/embeddings", port, env))
    return servers, notes


# --------------------------------------------------------------------------------------------------- run
def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", default="minilm", help="the gateway's model spec (e.g. onnx:DIR)")
    p.add_argument("--model-folder", help="the folder infinity and the naive server load (default: MiniLM's)")
    p.add_argument("--infinity-engine", default="torch", choices=["torch", "optimum"],
                   help="infinity's backend; 'optimum' (ONNX) needs infinity-emb[optimum] in its venv, the fair "
                        "peer when the gateway runs --spec onnx:DIR")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="a BEIR corpus.jsonl to take texts from")
    p.add_argument("--levels", default="1,8,32,128")
    p.add_argument("--mixes", default="miss,hit90")
    p.add_argument("--peers", default="infinity,naive")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of load per (server, mix, level)")
    p.add_argument("--max-chars", type=int, default=1000, help="texts are cut to this many characters")
    p.add_argument("--warm", type=int, default=WARM, help="size of the warm set the hit mixes draw from")
    p.add_argument("--encoding", choices=["base64", "float"], default="base64",
                   help="what every client asks for (the openai SDK's default is base64)")
    p.add_argument("--omp-wait-policy", choices=["passive", "active", "default"], default="passive",
                   help="OMP_WAIT_POLICY for every server (embedopt serve defaults to PASSIVE: spinning OpenMP "
                        "workers cost 3x the CPU per batch on a shared machine)")
    p.add_argument("--cache", default="memory,SQLITE",
                   help="the gateway's cache spec; SQLITE stands for a SQLite file in the run's temp folder")
    p.add_argument("--max-batch-tokens", type=int, default=8192)
    p.add_argument("--max-batch-texts", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(BENCH / "results" / "serve.json"))
    args = p.parse_args()

    levels = [int(x) for x in args.levels.split(",")]
    mixes = [m for m in args.mixes.split(",") if m]
    texts = load_texts(Path(args.data), max_chars=args.max_chars)
    load_before = os.getloadavg()
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="embedopt-bench-serve-") as tmp:
        workdir = Path(tmp)
        servers, notes = make_servers(args, workdir)
        try:
            for server in servers:  # all up at once (idle ones cost no CPU), so runs can alternate servers
                print(f"[{server.name}] starting", flush=True)
                server.start(workdir)
                warm = Workload(texts, "hit100", seed=0, run=0, warm=args.warm)
                asyncio.run(_prime(server, warm.warm if server.name == "embedopt" else warm.warm[:64],
                                   args.encoding))
            plan = [(m, c) for m in mixes for c in levels]
            plan += [("hit100", c) for c in levels if c >= 32] or [("hit100", max(levels))]
            saturated: set[tuple[str, str]] = set()
            for i, (mix, clients) in enumerate(plan):
                for server in servers:  # back to back on one workload: drifting background load hits all alike
                    if mix == "hit100" and server.name != "embedopt":
                        continue
                    if (server.name, mix) in saturated:  # answered nothing at fewer clients: more would not help
                        results.append({"server": server.name, "mix": mix, "clients": clients,
                                        "skipped": "saturated at a lower level"})
                        continue
                    workload = Workload(texts, mix, seed=1000 + i, run=i + 1, warm=args.warm)
                    r = asyncio.run(drive(server.port, server.embed_path, "minilm", args.encoding, workload,
                                          clients, args.duration, server.name))
                    s = r.summary()
                    s["load_avg_1m"] = round(os.getloadavg()[0], 2)
                    if r.unfinished:
                        s["idle_wait_s"] = wait_idle(server)
                    if r.requests == 0:
                        saturated.add((server.name, mix))
                    results.append(s)
                    print(f"[{server.name:8s}] {mix:6s} clients={clients:3d}  {s['texts_per_s']:9.1f} texts/s  "
                          f"p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  errors {s['errors']}  "
                          f"unfinished {s['unfinished']}  load {s['load_avg_1m']}", flush=True)
        finally:
            for server in servers:
                server.stop()

    def find(server: str, mix: str, clients: int) -> dict[str, Any] | None:
        return next((r for r in results if (r["server"], r["mix"], r["clients"]) == (server, mix, clients)
                     and "skipped" not in r), None)

    ratios = []
    for mix in mixes:
        for c in levels:
            ours = find("embedopt", mix, c)
            if ours is None:
                continue
            row: dict[str, Any] = {"mix": mix, "clients": c}
            for peer in ("infinity", "naive"):
                theirs = find(peer, mix, c)
                if theirs:
                    row[f"texts_per_s_vs_{peer}"] = ratio(ours["texts_per_s"], theirs["texts_per_s"])
                    row[f"p99_vs_{peer}"] = ratio(ours["p99_ms"], theirs["p99_ms"])
            ratios.append(row)
    inf32, naive32, ours32 = find("infinity", "miss", 32), find("naive", "miss", 32), find("embedopt", "miss", 32)
    hit = max((r["texts_per_s"] for r in results if r["server"] == "embedopt" and r["mix"] == "hit100"
               and "skipped" not in r), default=0)
    goals = {
        "throughput_vs_infinity_at_32_miss": ratio(ours32 and ours32["texts_per_s"], inf32 and inf32["texts_per_s"]),
        "p99_vs_infinity_at_32_miss": ratio(ours32 and ours32["p99_ms"], inf32 and inf32["p99_ms"]),
        "throughput_vs_naive_at_32_miss": ratio(ours32 and ours32["texts_per_s"],
                                                naive32 and naive32["texts_per_s"]),
        "cache_hit_texts_per_s": hit,
    }
    goals["met"] = {
        ">= infinity texts/s at <= its p99 (32 clients)": bool(goals["throughput_vs_infinity_at_32_miss"]
                                                            and goals["throughput_vs_infinity_at_32_miss"] >= 1
                                                            and goals["p99_vs_infinity_at_32_miss"] is not None
                                                            and goals["p99_vs_infinity_at_32_miss"] <= 1),
        ">= 3x naive (32 clients)": bool(goals["throughput_vs_naive_at_32_miss"]
                                         and goals["throughput_vs_naive_at_32_miss"] >= 3),
        ">= 10,000 texts/s on cache hits": hit >= 10000,
    }
    out = {
        "bench": "serve",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "runtime_s": round(time.monotonic() - started, 1),
        "notes": [*notes, "the client shares the CPU with the server; figures under other load are preliminary"],
        "results": results,
        "ratios": ratios,
        "goals": goals,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(args.out).with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(out, indent=2) + "\n")
    tmp_out.replace(args.out)
    print(json.dumps(goals, indent=2))
    print(f"wrote {args.out} in {out['runtime_s']} s")
    return 0


async def _prime(server: Server, warm: list[str], encoding: str) -> None:
    """Put the warm set through the server once (the gateway caches it; peers just warm up)."""
    conn = Conn(server.port)
    try:
        for i in range(0, len(warm), 32):
            body = json.dumps({"model": "minilm", "input": warm[i:i + 32], "encoding_format": encoding}).encode()
            status, data = await conn.post(server.embed_path, body)
            if status != 200:
                raise RuntimeError(f"{server.name} refused the warm-up: {status} {data[:300]!r}")
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
