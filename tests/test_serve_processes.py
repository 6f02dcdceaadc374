"""The gateway as real processes: two replicas sharing one Redis (a tenant's rate limit and budget hold across
both; Redis down refuses rather than lets through), SIGTERM draining in-flight requests, and the embedded
default config answering the curl line it prints at start."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from embedopt.serve import hash_key

from .redis_server import RedisServer, free_port
from .serve_helpers import ROOT, ServerProcess, wait_ready

pytestmark = pytest.mark.slow

KEY_RL = "sk-rate-limited-tenant-0123456789"
KEY_MONEY = "sk-budgeted-tenant-abcdefghijklm"
REDIS_PASSWORD = "r3dis-Secret-pw"


def _config(redis_url: str, prefix: str) -> str:
    return f"""
[server]
log_level = "debug"
access_log = true
[cache]
spec = "memory"
[redis]
url = "{redis_url}"
prefix = "{prefix}"
[models.paid]
spec = "test:hash:16"
price_per_1m_tokens = 1000000.0
[tenants.rl]
requests_per_minute = 10
[tenants.money]
daily_usd = 50.0
[[keys]]
sha256 = "{hash_key(KEY_RL)}"
tenant = "rl"
[[keys]]
sha256 = "{hash_key(KEY_MONEY)}"
tenant = "money"
"""


@pytest.fixture
def replicas(tmp_path):
    redis = RedisServer(tmp_path, password=REDIS_PASSWORD).start()
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    path = tmp_path / "serve.toml"
    path.write_text(_config(redis.url, prefix))
    servers = [ServerProcess(path), ServerProcess(path)]
    try:
        for s in servers:
            s.start(60)
        yield servers, redis, prefix
    finally:
        for s in servers:
            s.stop()
        redis.kill()


def _post(base: str, key: str, texts: list[str], client: httpx.Client | None = None) -> httpx.Response:
    return (client or httpx).post(f"{base}/embeddings", json={"model": "paid", "input": texts},
                                  headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_two_replicas_share_rate_limit_and_budget(replicas) -> None:
    servers, redis, prefix = replicas
    started = time.monotonic()
    codes = [_post(servers[i % 2].base, KEY_RL, [f"rate {i}"]).status_code for i in range(16)]
    elapsed = time.monotonic() - started
    assert elapsed < 6  # the bucket refills one request every 6 s: none came back during the test
    assert codes == [200] * 10 + [429] * 6, codes

    # 40 concurrent requests of $10 each, spread over both replicas, against a $50 daily cap: exactly five.
    async def spend():
        async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {KEY_MONEY}"}) as client:
            return await asyncio.gather(*(client.post(f"{servers[i % 2].base}/embeddings", json={
                "model": "paid", "input": [f"abcdefghijklmnopqrstuvwxyz{i:03d}"]}) for i in range(40)))

    answers = asyncio.run(spend())
    ok = [a for a in answers if a.status_code == 200]
    assert len(ok) == 5, sorted(a.status_code for a in answers)
    assert {a.json()["error"]["code"] for a in answers if a.status_code != 200} == {"insufficient_quota"}
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis.url)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert int(client.get(f"{prefix}money:d:{day}")) == 50 * 10**12  # pico-dollars: the cap, exactly
    for server in servers:
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'embedopt_budget_left_usd{period="day",tenant="money"} 0.0' in metrics

    # secrets never reach the logs, even at DEBUG with access logs on
    for server in servers:
        out = server.output()
        assert "POST /v1/embeddings" in out  # the access log did run
        for secret in (KEY_RL, KEY_MONEY, REDIS_PASSWORD):
            assert secret not in out


def test_redis_down_refuses_instead_of_skipping_limits(replicas) -> None:
    servers, redis, _ = replicas
    assert _post(servers[0].base, KEY_MONEY, ["before"]).status_code == 200
    redis.kill()
    r = _post(servers[0].base, KEY_MONEY, ["after"])
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "limits_unavailable"
    assert r.headers["retry-after"] == "1"
    assert REDIS_PASSWORD not in r.text


def test_sigterm_drains_in_flight_requests(tmp_path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text('[server]\ndrain_seconds = 20\n[cache]\nspec = "none"\n[models.slow]\nspec = "test:hash:16:1.5"\n')
    server = ServerProcess(path).start(60)
    try:
        result: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: result.setdefault("r", httpx.post(
            f"{server.base}/embeddings", json={"model": "slow", "input": ["in flight", "also in flight"]},
            timeout=30)))
        worker.start()
        time.sleep(0.5)  # the request is computing (1.5 s a batch)
        server.terminate()
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no new connections once draining
            httpx.post(f"{server.base}/embeddings", json={"model": "slow", "input": ["late"]}, timeout=5)
        worker.join(30)
        assert result["r"].status_code == 200
        assert len(result["r"].json()["data"]) == 2
        # uvicorn re-raises the signal after its graceful shutdown, so the exit status says "ended by SIGTERM"
        assert server.wait(30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.output()
    finally:
        server.stop()


def test_default_config_serves_the_curl_line_it_prints(tmp_path) -> None:
    """`embedopt serve` with no config (what `make serve` runs): MiniLM and the static model, memory+SQLite, on
    127.0.0.1. The curl line it prints must work as printed."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "embedopt.serve", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", 400, proc)  # a first run distils the static model
        deadline = time.monotonic() + 10
        while "curl -s" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        line = next(x.strip() for x in log.read_text().splitlines() if x.strip().startswith("curl -s"))
        assert re.search(rf"http://127\.0\.0\.1:{port}/v1/embeddings", line)
        answer = json.loads(subprocess.run(shlex.split(line), capture_output=True, check=True, timeout=30).stdout)
        assert len(answer["data"][0]["embedding"]) == 8
        assert answer["model"] == "minilm"
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]
        assert [(m["id"], m["ready"]) for m in models] == [("minilm", True), ("static", True)]
        static = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"model": "static", "input": ["hi"]})
        assert static.status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(30) in (0, -signal.SIGTERM)
