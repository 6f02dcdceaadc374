"""The gateway's own behaviour on a real server (uvicorn on a free loopback port, httpx as the client): batching
across requests, backpressure, deadlines, disconnects, auth, limits, budgets, metrics, config and bad input."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedopt.errors import ConfigError
from embedopt.serve import hash_key, main
from embedopt.serve.config import default_config, parse_config

from .conftest import WordOverlap
from .serve_helpers import ServerThread, SlowHash, config, hash_embedder, hash_vectors

KEY_A = "sk-team-a-0123456789abcdefghijkl"
KEY_B = "sk-team-b-zyxwvutsrqponmlkjihgfe"
BASIC = """
[models.hash]
spec = "test:hash"
[models.hash2]
spec = "test:hash"
[rerankers.overlap]
spec = "test:overlap"
[limits]
max_inputs = 16
max_tokens_per_input = 200
max_body_bytes = 20000
"""


def _server(text: str, **embedders) -> ServerThread:
    models = {name: hash_embedder(fn) for name, fn in embedders.items()}
    return ServerThread(config(text), embedders=models, rerankers={"overlap": WordOverlap()}).start()


@pytest.fixture(scope="module")
def basic():
    fn = SlowHash(dim=32)
    srv = ServerThread(config(BASIC), embedders={"hash": hash_embedder(fn), "hash2": hash_embedder(SlowHash(16))},
                       rerankers={"overlap": WordOverlap()}).start()
    srv.fn = fn
    yield srv
    srv.stop()


def _embed(srv, body, headers=None) -> httpx.Response:
    """POST a body as Python's json module writes it (lone surrogates escaped as \\udXXX, as json.loads reads)."""
    return httpx.post(f"{srv.base}/embeddings", content=json.dumps(body).encode(), timeout=30,
                      headers={"content-type": "application/json", **(headers or {})})


# ---------------------------------------------------------------------------------------------- the happy path
def test_openai_and_voyage_shapes_and_usage(basic) -> None:
    r = _embed(basic, {"model": "hash", "input": ["alpha", "beta"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    full = hash_vectors(["alpha", "beta"], "document", 32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], full, atol=1e-6)

    v = _embed(basic, {"model": "hash", "input": ["alpha"], "input_type": "query", "output_dimension": 8})
    assert v.json()["usage"] == {"total_tokens": 2}  # Voyage's usage shape
    q = hash_vectors(["alpha"], "query", 32)[:, :8]
    np.testing.assert_allclose(v.json()["data"][0]["embedding"], (q / np.linalg.norm(q))[0], atol=1e-6)


def test_models_health_ready(basic) -> None:
    models = httpx.get(f"{basic.base}/models").json()["data"]
    assert [(m["id"], m["type"]) for m in models] == [("hash", "embedding"), ("hash2", "embedding"),
                                                        ("overlap", "rerank")]
    assert models[0]["dimensions"] == 32
    assert httpx.get(f"{basic.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{basic.url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_duplicates_within_and_across_requests_are_computed_once(basic) -> None:
    basic.fn.calls.clear()
    texts = [f"dup text {i % 3}" for i in range(9)]
    r = _embed(basic, {"model": "hash", "input": texts})
    data = [d["embedding"] for d in r.json()["data"]]
    assert data[0] == data[3] == data[6]
    assert sorted(basic.fn.computed) == sorted({*texts})
    again = _embed(basic, {"model": "hash", "input": texts[:3]})
    assert again.headers["x-embedopt-cache-hits"] == "3/3"
    assert sorted(basic.fn.computed) == sorted({*texts})


# ------------------------------------------------------------------------------------------------ bad input
BAD = [
    ({"model": "hash"}, 400, "input is missing"),
    ({"model": "hash", "input": []}, 400, "empty array"),
    ({"model": "hash", "input": 5}, 400, "string or an array"),
    ({"model": "hash", "input": [1, 2, 3]}, 400, "token ids"),
    ({"model": "hash", "input": [[1, 2], [3]]}, 400, "token ids"),
    ({"model": "hash", "input": ["ok", None]}, 400, "input[1] is null"),
    ({"model": "hash", "input": ["ok", ""]}, 400, "input[1] is empty"),
    ({"model": "hash", "input": ["   \n"]}, 400, "empty or only whitespace"),
    ({"model": "hash", "input": ["fine", "\ud800 lone"]}, 400, "lone surrogate"),
    ({"model": "hash", "input": ["x"] * 17}, 400, "limit of 16"),
    ({"model": "hash", "input": ["word " * 700]}, 400, "over this gateway's limit of 200"),
    ({"model": "nope", "input": ["x"]}, 404, "not served here"),
    ({"model": 7, "input": ["x"]}, 400, "model must be a string"),
    ({"model": "hash", "input": ["x"], "dimensions": 0}, 400, "dimensions must be >= 1"),
    ({"model": "hash", "input": ["x"], "dimensions": 33}, 400, "larger than model"),
    ({"model": "hash", "input": ["x"], "dimensions": "8"}, 400, "dimensions must be an integer"),
    ({"model": "hash", "input": ["x"], "dimensions": True}, 400, "dimensions must be an integer"),
    ({"model": "hash", "input": ["x"], "dimensions": 8, "output_dimension": 16}, 400, "disagree"),
    ({"model": "hash", "input": ["x"], "encoding_format": "hex"}, 400, "encoding_format must be one of"),
    ({"model": "hash", "input": ["x"], "output_dtype": "int4"}, 400, "output_dtype must be one of"),
    ({"model": "hash", "input": ["x"], "input_type": "passage"}, 400, "input_type must be one of"),
    ({"model": "hash", "input": ["x"], "truncation": "yes"}, 400, "truncation must be true or false"),
    ({"model": "hash", "input": ["x"], "temperature": 1}, 400, "unrecognized request argument"),
    ({"model": "hash", "input": ["x"], "user": 5}, 400, "user must be a string"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD)
def test_bad_embedding_bodies_get_4xx_with_a_message(basic, body, status, message) -> None:
    r = _embed(basic, body)
    assert r.status_code == status, r.text
    err = r.json()
    assert message in err["error"]["message"]
    assert err["detail"] == err["error"]["message"]


@pytest.mark.parametrize(("raw", "status", "message"), [
    (b"", 400, "empty"),
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"\xff\xfe{}", 400, "UTF-8"),
    (b'{"input": "' + b"[" * 100000 + b'"}', 413, "limit of 20000"),
    (b"[" * 5000 + b"]" * 5000, 400, "not valid JSON"),
])
def test_bad_raw_bodies(basic, raw, status, message) -> None:
    r = httpx.post(f"{basic.base}/embeddings", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_oversized_chunked_body_is_413(basic) -> None:
    """No Content-Length: the body is counted as it streams and cut off at the limit."""
    def chunks():
        yield b'{"model": "hash", "input": ["'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"]}'

    r = httpx.post(f"{basic.base}/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"model": "overlap", "documents": ["a"]}, 400, "query is missing"),
    ({"model": "overlap", "query": "", "documents": ["a"]}, 400, "query is empty"),
    ({"model": "overlap", "query": "q", "documents": []}, 400, "non-empty array"),
    ({"model": "overlap", "query": "q", "documents": "a"}, 400, "non-empty array"),
    ({"model": "overlap", "query": "q", "documents": ["a", 3]}, 400, "documents[1] is a number"),
    ({"model": "overlap", "query": "q", "documents": [{"txt": "a"}]}, 400, "documents[0] is null"),
    ({"model": "overlap", "query": "q", "documents": ["a"], "top_k": 0}, 400, "top_k must be >= 1"),
    ({"model": "overlap", "query": "q", "documents": ["a"], "truncation": False}, 400, "truncation=false"),
    ({"model": "hash", "query": "q", "documents": ["a"]}, 404, "reranker 'hash' is not served"),
    ({"model": "overlap", "query": "\udfff", "documents": ["a"]}, 400, "lone surrogate"),
])
def test_bad_rerank_bodies(basic, body, status, message) -> None:
    r = httpx.post(f"{basic.base}/rerank", content=json.dumps(body).encode())
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                     | st.text(max_size=30), lambda children: st.lists(children, max_size=5)
                     | st.dictionaries(st.text(max_size=10), children, max_size=5), max_leaves=20)
_field = st.sampled_from(["input", "model", "dimensions", "encoding_format", "user", "input_type",
                          "output_dimension", "output_dtype", "truncation", "query", "documents", "top_k", "top_n",
                          "return_documents"])
_value = st.one_of(_json, st.sampled_from(["hash", "hash2", "overlap", "float", "base64", "int8", "binary", "query",
                                           "document", "\ud800", "", " "]),
                   st.lists(st.text(max_size=20), max_size=4), st.integers(-3, 40))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(_field, _value, max_size=6), route=st.sampled_from(["embeddings", "rerank"]))
def test_fuzzed_bodies_never_get_a_5xx(basic, body, route) -> None:
    raw = json.dumps(body).encode()  # json.dumps escapes lone surrogates as \\udXXX, as a real client would
    r = httpx.post(f"{basic.base}/{route}", content=raw, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code < 500, (body, r.text)
    if r.status_code >= 400:
        assert r.json()["error"]["message"]


# -------------------------------------------------------------------------------------------------- batching
def test_concurrent_requests_are_merged_into_batches() -> None:
    """Forty concurrent requests of 3 texts (a third of them shared) against a model taking 50 ms a call: the
    queue merges them into a few calls and computes every distinct text exactly once."""
    fn = SlowHash(dim=16, delay=0.05)
    srv = ServerThread(config("[models.slow]\nspec='test'\n[batching]\nmax_batch_texts=64\nmax_wait_ms=5"),
                       embedders={"slow": hash_embedder(fn, cache=None)}).start()
    try:
        async def go():
            async with httpx.AsyncClient(base_url=srv.base, timeout=30) as client:
                return await asyncio.gather(*(client.post("/embeddings", json={
                    "model": "slow", "input": [f"own {i} a", f"own {i} b", f"shared {i % 10}"]}) for i in range(40)))

        answers = asyncio.run(go())
        assert all(a.status_code == 200 for a in answers)
        distinct = {f"own {i} {s}" for i in range(40) for s in "ab"} | {f"shared {i}" for i in range(10)}
        assert sorted(fn.computed) == sorted(distinct)
        assert len(fn.calls) <= 10, [len(c) for c in fn.calls]
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert 'embedopt_batch_texts_count{model="slow"}' in metrics
        assert 'embedopt_queue_shared_texts{model="slow"}' in metrics
    finally:
        srv.stop()


def test_full_queue_answers_429_with_retry_after() -> None:
    fn = SlowHash(dim=16)
    fn.gate = threading.Event()
    srv = ServerThread(config("[models.slow]\nspec='test'\n[batching]\nmax_queue_texts=4\nworkers=1\n"
                              "max_wait_ms=0"), embedders={"slow": hash_embedder(fn, cache=None)}).start()
    try:
        async def go():
            async with httpx.AsyncClient(base_url=srv.base, timeout=30) as client:
                first = asyncio.ensure_future(client.post("/embeddings", json={"model": "slow", "input": ["a"]}))
                await asyncio.sleep(0.3)  # "a" is computing (blocked on the gate); the queue is empty
                second = asyncio.ensure_future(client.post("/embeddings", json={"model": "slow",
                                                                                 "input": ["b", "c", "d", "e"]}))
                await asyncio.sleep(0.3)  # four texts wait: the queue is full
                third = await client.post("/embeddings", json={"model": "slow", "input": ["f"]})
                shared = asyncio.ensure_future(client.post("/embeddings", json={"model": "slow", "input": ["b"]}))
                await asyncio.sleep(0.2)
                fn.gate.set()
                return third, await first, await second, await shared

        third, first, second, shared = asyncio.run(go())
        assert third.status_code == 429
        assert int(third.headers["retry-after"]) >= 1
        assert "4 texts waiting" in third.json()["error"]["message"]
        assert first.status_code == second.status_code == 200
        assert shared.status_code == 200  # a text already queued takes no new room
    finally:
        fn.gate.set()
        srv.stop()


def test_past_deadline_is_504_and_its_texts_are_dropped() -> None:
    fn = SlowHash(dim=16)
    fn.gate = threading.Event()
    srv = ServerThread(config("[server]\nrequest_timeout_seconds=0.5\n[models.slow]\nspec='test'\n"
                              "[batching]\nworkers=1\nmax_wait_ms=0"),
                       embedders={"slow": hash_embedder(fn, cache=None)}).start()
    try:
        async def go():
            async with httpx.AsyncClient(base_url=srv.base, timeout=30) as client:
                first = asyncio.ensure_future(client.post("/embeddings", json={"model": "slow", "input": ["a"]}))
                await asyncio.sleep(0.1)
                late = await client.post("/embeddings", json={"model": "slow", "input": ["waits", "too long"]})
                fn.gate.set()
                return late, await first

        late, first = asyncio.run(go())
        assert late.status_code == 504
        assert "not ready within 0.5 s" in late.json()["error"]["message"]
        assert first.status_code == 504  # it was computing when its deadline passed
        time.sleep(0.2)
        assert "waits" not in fn.computed and "too long" not in fn.computed
        assert srv.gateway.models["slow"].queue.stats.dropped == 2
    finally:
        fn.gate.set()
        srv.stop()


def test_disconnected_client_has_its_pending_texts_dropped() -> None:
    fn = SlowHash(dim=16)
    fn.gate = threading.Event()
    srv = ServerThread(config("[models.slow]\nspec='test'\n[batching]\nworkers=1\nmax_wait_ms=0"),
                       embedders={"slow": hash_embedder(fn, cache=None)}).start()
    try:
        holder = threading.Thread(target=lambda: httpx.post(f"{srv.base}/embeddings", timeout=30,
                                                             json={"model": "slow", "input": ["busy"]}))
        holder.start()
        time.sleep(0.3)
        body = json.dumps({"model": "slow", "input": ["gone 1", "gone 2"]}).encode()
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(0.3)
            assert srv.gateway.models["slow"].queue.depth == 2
        deadline = time.monotonic() + 5
        while srv.gateway.models["slow"].queue.depth and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.gateway.models["slow"].queue.depth == 0
        assert srv.gateway.models["slow"].queue.stats.dropped == 2
        fn.gate.set()
        holder.join(10)
        assert fn.computed == ["busy"]
    finally:
        fn.gate.set()
        srv.stop()


# ----------------------------------------------------------------------------------------- auth and limits
LIMITED = f"""
[models.paid]
spec = "test"
price_per_1m_tokens = 1000000.0
[models.free]
spec = "test"
[tenants.a]
requests_per_minute = 5
[tenants.b]
daily_usd = 20.0
models = ["paid"]
[[keys]]
sha256 = "{hash_key(KEY_A)}"
tenant = "a"
[[keys]]
sha256 = "{hash_key(KEY_B)}"
tenant = "b"
"""


@pytest.fixture
def limited():
    srv = ServerThread(config(LIMITED), embedders={"paid": hash_embedder(price=1e6), "free": hash_embedder()}).start()
    yield srv
    srv.stop()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_401_and_never_logged(limited, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error", "httpx", "httpcore", "embedopt"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    body = {"model": "free", "input": ["hello"]}
    assert _embed(limited, body).status_code == 401
    wrong = _embed(limited, body, headers=_auth("sk-wrong"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert _embed(limited, body, headers={"Authorization": "Basic abc"}).status_code == 401
    assert _embed(limited, body, headers=_auth(KEY_A)).status_code == 200
    assert httpx.get(f"{limited.base}/models").status_code == 401
    assert [m["id"] for m in httpx.get(f"{limited.base}/models", headers=_auth(KEY_B)).json()["data"]] == ["paid"]
    assert _embed(limited, {"model": "free", "input": ["x"]}, headers=_auth(KEY_B)).status_code == 403
    for key in (KEY_A, KEY_B, "sk-wrong"):
        assert key not in caplog.text
        assert key not in repr(limited.gateway.cfg)
    assert caplog.records  # the loggers did speak


def test_rate_limit_in_memory(limited) -> None:
    codes = [_embed(limited, {"model": "free", "input": [f"r{i}"]}, headers=_auth(KEY_A)) for i in range(7)]
    assert [c.status_code for c in codes] == [200] * 5 + [429, 429]
    assert codes[0].headers["x-ratelimit-remaining-requests"] == "4"
    refused = codes[5]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_budget_holds_exactly_under_concurrency(limited) -> None:
    """Reserve before compute, settle after: of 30 concurrent requests costing $10 each (29 bytes -> 10 estimated
    tokens at $1,000,000 per million), a $20 daily cap admits exactly two, whatever the interleaving. Before
    reservations, concurrent checks of "spent so far" let many through (issue 17: $1.385 spent on a $1 cap)."""
    async def go():
        async with httpx.AsyncClient(base_url=limited.base, timeout=30, headers=_auth(KEY_B)) as client:
            return await asyncio.gather(*(client.post("/embeddings", json={
                "model": "paid", "input": [f"abcdefghijklmnopqrstuvwxyz{i:03d}"]}) for i in range(30)))

    answers = asyncio.run(go())
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200] + [429] * 28
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused.headers["x-should-retry"] == "false"
    tenant = limited.gateway.cfg.tenants["b"]
    day, _ = asyncio.run(limited.gateway.limits.spent(tenant))
    assert day == 20 * 10**12  # pico-dollars: exactly the cap
    metrics = httpx.get(f"{limited.url}/metrics").text
    assert 'embedopt_budget_left_usd{period="day",tenant="b"} 0.0' in metrics
    assert 'embedopt_charged_usd_total{model="paid",route="embeddings",tenant="b"} 20.0' in metrics


def test_cache_hits_are_not_charged(limited) -> None:
    body = {"model": "paid", "input": ["abcdefghijklmnopqrstuvwxyz001"]}
    assert _embed(limited, body, headers=_auth(KEY_B)).status_code == 200
    for _ in range(3):  # the reservation is returned at settle: a hit costs nothing
        again = _embed(limited, body, headers=_auth(KEY_B))
        assert again.status_code == 200
        assert again.headers["x-embedopt-cache-hits"] == "1/1"
    day, _ = asyncio.run(limited.gateway.limits.spent(limited.gateway.cfg.tenants["b"]))
    assert day == 10 * 10**12


# -------------------------------------------------------------------------------------------------- metrics
def test_metrics_exposition(basic) -> None:
    _embed(basic, {"model": "hash", "input": ["metric one", "metric two"]})
    _embed(basic, {"model": "hash", "input": ["metric one"]})
    text = httpx.get(f"{basic.url}/metrics").text
    for name in ("embedopt_requests_total", "embedopt_request_seconds_bucket", "embedopt_batch_texts_bucket",
                 "embedopt_batch_padded_tokens_bucket", "embedopt_queue_depth", "embedopt_cache_hit_ratio",
                 "embedopt_tokens_total", "embedopt_provider_tokens", "embedopt_ready 1.0"):
        assert name in text, name
    ratio = next(line for line in text.splitlines() if line.startswith('embedopt_cache_hit_ratio{model="hash"}'))
    assert 0 < float(ratio.split()[-1]) < 1


def test_a_model_that_fails_to_load_is_reported_not_served(tmp_path) -> None:
    srv = ServerThread(config(f'[cache]\nspec="none"\n[models.good]\nspec="test"\n'
                              f'[models.broken]\nspec="st:{tmp_path / "no-such-model"}"'),
                       embedders={"good": hash_embedder()}).start(wait=False)
    try:
        deadline = time.monotonic() + 60
        while "broken" not in httpx.get(f"{srv.url}/readyz").json()["failed"] and time.monotonic() < deadline:
            time.sleep(0.1)
        ready = httpx.get(f"{srv.url}/readyz")
        assert ready.status_code == 503
        assert "broken" in ready.json()["failed"]
        r = _embed(srv, {"model": "broken", "input": ["x"]})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]["message"]
        assert _embed(srv, {"model": "good", "input": ["x"]}).status_code == 200  # the others still serve
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------------------- config
def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['prot'\] in \[server\]; valid keys"):
        parse_config({"server": {"prot": 1}})
    with pytest.raises(ConfigError, match="exactly one of spec"):
        parse_config({"models": {"m": {}}})
    with pytest.raises(ConfigError, match="64-hex-digit sha256"):
        parse_config({"tenants": {"t": {}}, "keys": [{"sha256": "sk-plain-key", "tenant": "t"}]})
    with pytest.raises(ConfigError, match=r"has no \[tenants\.ghost\]"):
        parse_config({"keys": [{"sha256": hash_key("k"), "tenant": "ghost"}]})
    with pytest.raises(ConfigError, match="not loopback"):
        parse_config({"server": {"host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="must be int"):
        parse_config({"batching": {"workers": "2"}})
    with pytest.raises(ConfigError, match=r"names \['nope'\], which are not configured"):
        parse_config({"tenants": {"t": {"models": ["nope"]}}})
    cfg = parse_config({"server": {"host": "0.0.0.0", "allow_anonymous": True}})
    assert cfg.anonymous and [m.name for m in cfg.models] == ["minilm", "static"]
    assert default_config().cache == "memory,sqlite" and default_config().host == "127.0.0.1"


def test_cli_check_and_hash_key(tmp_path, capsys, monkeypatch) -> None:
    import io

    path = tmp_path / "serve.toml"
    path.write_text(LIMITED)
    assert main(["--config", str(path), "--check"]) == 0
    assert "models ['paid', 'free']" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY_A + "\n"))
    assert main(["--hash-key"]) == 0
    assert f'sha256 = "{hash_key(KEY_A)}"' in capsys.readouterr().out
    path.write_text("[server]\nport = 'x'\n")
    assert main(["--config", str(path), "--check"]) == 2
    assert "[server].port must be int" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.toml")]) == 2
