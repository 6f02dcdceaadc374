"""A real HTTP server on 127.0.0.1 that speaks OpenAI's and Voyage's embedding wire formats, for tests.

It also answers OpenAI's ``/chat/completions`` with a scripted function (``chat``), for code that asks an LLM.

The official ``openai`` and ``voyageai`` clients talk to it over loopback; no client method is patched. It can
inject faults: 429 with Retry-After, 500, slow answers, hangs, malformed bodies, wrong indices, another model's
answer, missing rows, cut vectors and cut bodies, scripted one by one or at random (``FAULTS`` lists them).
It counts what it served, so a test can check a cost ledger against the server's own books: ``ok_tokens`` for
the answers that were right, ``billed_tokens`` for every answer it sent with HTTP 200 (a real API bills those,
right or wrong), the slow and hung ones excepted (their client gave up before the answer came).
"""

from __future__ import annotations

import base64
import functools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

EmbedFn = Callable[[list[str], str, str | None], np.ndarray]
"""(texts, model, input_type or None) -> float32 array (n, dim)."""

FAULTS = ("429", "500", "503", "slow", "malformed_json", "bad_base64", "wrong_count", "wrong_dim",
          "wrong_index", "foreign_model", "missing_rows", "cut_body", "hang")
"""``wrong_index``: a doubled index and a missing one (rows would swap); ``foreign_model``: the answer says it
comes from another model; ``missing_rows``: half the rows (at least one) missing; ``wrong_dim``: every vector cut
by one value; ``cut_body``: the connection closes halfway through the body; ``hang``: no answer until the server
stops (or ``hang_seconds``)."""

#: Faults answered with HTTP 200 and a whole body that reports its usage (a real API bills them, and the client
#: can read what): refused answers whose tokens a ledger must count. (A cut body or a body that is not JSON was
#: billed too, but its usage cannot be read, so no client can count it.)
BILLED_FAULTS = frozenset({"bad_base64", "wrong_count", "wrong_dim", "wrong_index", "foreign_model",
                           "missing_rows"})


def server_tokens(text: str) -> int:
    """The server's own token count (what it bills and limits): cl100k_base, as OpenAI counts."""
    return max(1, len(_cl100k().encode_ordinary(text)))


@functools.lru_cache(maxsize=1)
def _cl100k():
    import bpe_openai

    return bpe_openai.get_encoding("cl100k_base")


class FakeEmbeddingAPI:
    def __init__(self, embed: EmbedFn, *, api_key: str = "sk-test-0123456789abcdefghijklmnop",
                 max_tokens: int | None = None, slow_seconds: float = 2.0, hang_seconds: float = 120.0,
                 answer_model: str | None = None, echo_key_header: bool = False) -> None:
        self.embed = embed
        self.api_key = api_key
        self.max_tokens = max_tokens
        self.slow_seconds = slow_seconds
        self.hang_seconds = hang_seconds
        self.answer_model = answer_model
        """The ``model`` every answer names (a TEI-like server that ignores the request's); ``None``: the one asked."""
        self.echo_key_header = echo_key_header
        """On a 401, echo the key that was sent in a response header too (some gateways do)."""
        self._stopping = threading.Event()
        self.script: list[str] = []
        self.fail_rate = 0.0
        self.fail_kinds: tuple[str, ...] = ("429", "500", "malformed_json")
        self.rng = random.Random(7)
        self.lock = threading.Lock()
        self.ok_requests: Counter[str] = Counter()
        self.ok_tokens: Counter[str] = Counter()
        self.billed_tokens: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.chat: Callable[[list[dict[str, Any]], str], str] | None = None
        """(messages, model) -> the assistant's answer, for ``/chat/completions``."""
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> FakeEmbeddingAPI:
        api = self
        _cl100k()  # load the tokenizer now: the first request must not be slow because of it

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                api._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # hung handlers return
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # -------------------------------------------------------------------------------------------- faults
    def _next_fault(self) -> str | None:
        with self.lock:
            if self.script:
                fault = self.script.pop(0)
                return None if fault == "ok" else fault
            if self.fail_rate and self.rng.random() < self.fail_rate:
                return self.rng.choice(self.fail_kinds)
        return None

    # ------------------------------------------------------------------------------------------ handling
    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): nothing to answer
            h.close_connection = True

    def _error(self, h: BaseHTTPRequestHandler, status: int, message: str, headers: dict[str, str] | None = None):
        body = json.dumps({"error": {"message": message, "type": "test_error", "code": status},
                           "detail": message}).encode()
        self._send(h, status, body, headers)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        with self.lock:
            self.requests += 1
        auth = h.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}":
            # like real APIs, echo (part of) the key that was sent: the client side must not repeat it
            sent = auth.removeprefix("Bearer ")
            return self._error(h, 401, f"Incorrect API key provided: {sent}",
                               {"WWW-Authenticate": f'Bearer error="invalid_token", key="{sent}"'}
                               if self.echo_key_header else None)
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(h, 400, "body is not JSON")
        with self.lock:
            self.bodies.append(body)
        path = h.path.rstrip("/")
        if not path.endswith(("/embeddings", "/rerank", "/chat/completions")):
            return self._error(h, 404, f"no route {h.path}")
        fault = self._next_fault()
        if fault is not None:
            with self.lock:
                self.faults[fault] += 1
        if fault == "429":
            return self._error(h, 429, "rate limited", {"Retry-After": "0"})
        if fault in ("500", "503"):
            return self._error(h, int(fault), "internal error")
        if path.endswith("/rerank"):
            return self._rerank(h, body)
        if path.endswith("/chat/completions"):
            return self._chat(h, body)
        if fault == "slow":
            time.sleep(self.slow_seconds)
        if fault == "hang":
            self._stopping.wait(self.hang_seconds)
            h.close_connection = True
            return None
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            return self._error(h, 400, "input must be a non-empty list of non-empty strings")
        model = str(body.get("model"))
        tokens = [server_tokens(t) for t in texts]
        if self.max_tokens is not None and max(tokens) > self.max_tokens:
            return self._error(h, 400, f"an input has {max(tokens)} tokens, over the limit of {self.max_tokens}")
        if fault in BILLED_FAULTS:
            with self.lock:
                self.billed_tokens[model] += sum(tokens)
        if fault == "malformed_json":
            return self._send(h, 200, b'{"data": [', content_type="application/json")
        vectors = np.asarray(self.embed(texts, model, body.get("input_type")), dtype=np.float32)
        dims = body.get("dimensions") or body.get("output_dimension")
        if dims:
            vectors = vectors[:, :dims]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        if fault == "wrong_dim":
            vectors = vectors[:, :-1]
        dtype = body.get("output_dtype") or "float"
        data = []
        for i, vec in enumerate(vectors):
            if dtype in ("int8", "binary"):
                encoded = np.clip(np.round(vec * 127), -128, 127).astype(np.int8) if dtype == "int8" else \
                    (np.packbits(vec > 0).astype(np.int16) - 128).astype(np.int8)
            elif dtype in ("uint8", "ubinary"):
                encoded = np.clip(np.round(vec * 127 + 128), 0, 255).astype(np.uint8) if dtype == "uint8" else \
                    np.packbits(vec > 0)
            else:
                encoded = vec.astype("<f4")
            if body.get("encoding_format") == "base64":
                payload: Any = base64.b64encode(encoded.tobytes()).decode()
                if fault == "bad_base64":
                    payload = payload[:-7]
            else:
                payload = encoded.tolist()
            data.append({"object": "embedding", "embedding": payload, "index": i})
        if fault == "wrong_count":
            data = data[:-1] if len(data) > 1 else data + data
        if fault == "missing_rows":
            data = data[: len(data) // 2]
        if fault == "wrong_index":  # the last row claims the first one's index: one index doubled, one missing
            data[-1]["index"] = 0 if len(data) > 1 else 1
        data.reverse()  # the clients must order by index, not by position
        total = sum(tokens)
        if fault is None:
            with self.lock:
                self.ok_requests[model] += 1
                self.ok_tokens[model] += total
                self.billed_tokens[model] += total
        named = "another-model-of-the-same-size" if fault == "foreign_model" else (self.answer_model or model)
        answer = {"object": "list", "data": data, "model": named,
                  "usage": {"prompt_tokens": total, "total_tokens": total}}
        raw = json.dumps(answer).encode()
        if fault == "cut_body":  # announce the whole body, send half of it, hang up
            try:
                h.send_response(200)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(raw)))
                h.end_headers()
                h.wfile.write(raw[: len(raw) // 2])
                h.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            h.close_connection = True
            return None
        self._send(h, 200, raw)

    def _chat(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        messages, model = body.get("messages"), str(body.get("model"))
        if self.chat is None or not isinstance(messages, list) or not messages:
            return self._error(h, 400, "messages are required (and the test server needs a chat function)")
        content = self.chat(messages, model)
        with self.lock:
            self.ok_requests[model] += 1
        answer = {"id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
                  "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": content}}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        self._send(h, 200, json.dumps(answer).encode())

    def _rerank(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        query, documents = body.get("query"), body.get("documents")
        if not isinstance(query, str) or not isinstance(documents, list) or not documents:
            return self._error(h, 400, "query and documents are required")
        model = str(body.get("model"))
        q = np.asarray(self.embed([query], model, "query"), dtype=np.float32)[0]
        d = np.asarray(self.embed(list(documents), model, "document"), dtype=np.float32)
        scores = d @ q / (np.linalg.norm(d, axis=1) * np.linalg.norm(q) + 1e-12)
        order = np.argsort(-scores)[: body.get("top_k") or len(documents)]
        total = server_tokens(query) * len(documents) + sum(server_tokens(t) for t in documents)
        with self.lock:
            self.ok_requests[model] += 1
            self.ok_tokens[model] += total
        data = [{"index": int(i), "relevance_score": float(scores[i])} for i in order]
        self._send(h, 200, json.dumps({"object": "list", "data": data, "model": model,
                                       "usage": {"total_tokens": total}}).encode())


def hashed_model(dim: int) -> EmbedFn:
    """A deterministic stand-in for a remote model the tests cannot run (Voyage's): seeded by text and input type.

    Used only where the test checks the wire (what the server computed arrives intact), never as a quality proof.
    """
    import hashlib

    def embed(texts: list[str], model: str, input_type: str | None) -> np.ndarray:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(f"{model}|{input_type}|{t}".encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(dim)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)

    return embed
