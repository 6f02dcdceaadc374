"""Wire formats: OpenAI's and Voyage's embedding bodies, Voyage's and Cohere's rerank bodies, and errors.

Parsing is strict and explains itself: every problem is an :class:`ApiError` with a 4xx status and a message
that says what to send instead. Nothing a client sends may reach the core unchecked.

Base64 answers carry the raw little-endian bytes of the output type: float32 for ``float`` (what the openai SDK
decodes when it asked for base64 itself), int8/uint8 for the quantized types and the packed bits for
``binary``/``ubinary`` (what the voyageai SDK decodes with ``output_dtype``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..fingerprint import InputType
from ..quantization import Precision

__all__ = ["ApiError", "EmbedRequest", "RerankRequest", "dumps", "embed_response", "error_body",
           "parse_embed", "parse_json", "parse_rerank", "rerank_response"]

OutputDtype = Literal["float", "int8", "uint8", "binary", "ubinary"]
_DTYPES: dict[str, Precision] = {"float": "float32", "int8": "int8", "uint8": "uint8", "binary": "binary",
                                  "ubinary": "ubinary"}
_OPENAI_FIELDS = ("input", "model", "dimensions", "encoding_format", "user")
_VOYAGE_FIELDS = ("input_type", "output_dimension", "output_dtype", "truncation")
_RERANK_FIELDS = ("query", "documents", "model", "top_k", "top_n", "return_documents", "truncation",
                  "max_chunks_per_doc", "rank_fields")

try:  # orjson writes numpy arrays directly, about 10x faster than json + tolist for float vectors
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised where orjson is missing
    _orjson = None  # type: ignore[assignment]


class ApiError(Exception):
    """An answer other than 200: ``status``, a message for the client, and OpenAI-style ``type``/``code``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind
        self.headers = dict(headers or {})


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> bytes:
    """OpenAI's error object, plus ``detail`` (what the voyageai SDK shows)."""
    return dumps({"error": {"message": message, "type": kind, "param": param, "code": code}, "detail": message})


def dumps(obj: Any) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(obj, option=_orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, default=_plain, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise ApiError(400, "the request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the request body is not valid UTF-8 (byte {exc.start}); send JSON encoded as "
                       "UTF-8") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    return data


def _unknown(data: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    unknown = sorted(k for k in data if k not in valid)
    if unknown:
        raise ApiError(400, f"unrecognized request argument(s) {unknown}; valid arguments: {sorted(valid)}",
                       param=unknown[0])


def check_text(text: Any, where: str, param: str) -> str:
    """A text a model can take: a non-empty string of valid Unicode (no lone surrogates)."""
    if not isinstance(text, str):
        raise ApiError(400, f"{where} is {_kind(text)}, not a string", param=param)
    if not text.strip():
        raise ApiError(400, f"{where} is empty or only whitespace; remove it (there is nothing to embed)",
                       param=param)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, f"{where} contains a lone surrogate (\\u{ord(text[exc.start]):04x} at character "
                       f"{exc.start}), which is not valid Unicode; fix the text's encoding", param=param) from None
    return text


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{key} must be an integer, got {_kind(value)}", param=key)
    if value < 1:
        raise ApiError(400, f"{key} must be >= 1, got {value}", param=key)
    return value


def _bool(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{key} must be true or false, got {_kind(value)}", param=key)
    return value


def _choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value not in choices:
        raise ApiError(400, f"{key} must be one of {list(choices)}, got {value!r}", param=key)
    return value


@dataclass
class EmbedRequest:
    texts: list[str]
    model: str | None
    dim: int | None
    precision: Precision
    dtype: OutputDtype
    base64: bool
    input_type: InputType
    voyage: bool
    """Answer in Voyage's shape (the body used a Voyage-only field)."""
    truncation: bool


def parse_embed(data: Mapping[str, Any], *, max_inputs: int) -> EmbedRequest:
    _unknown(data, _OPENAI_FIELDS + _VOYAGE_FIELDS)
    voyage = any(k in data for k in _VOYAGE_FIELDS)
    raw = data.get("input")
    if raw is None:
        raise ApiError(400, "input is missing: send a string or an array of strings", param="input")
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list):
        items = raw
    else:
        raise ApiError(400, f"input must be a string or an array of strings, got {_kind(raw)}", param="input")
    if not items:
        raise ApiError(400, "input is an empty array: send at least one text", param="input")
    if any(isinstance(x, int) and not isinstance(x, bool) for x in items) or any(
            isinstance(x, list) and x and all(isinstance(y, int) and not isinstance(y, bool) for y in x)
            for x in items):
        raise ApiError(400, "input holds token ids: this gateway embeds text only, because token ids from "
                       "another tokenizer would mean nothing to its models. Send the strings (with "
                       "langchain-openai: OpenAIEmbeddings(check_embedding_ctx_length=False))", param="input",
                       code="token_arrays_not_supported")
    if len(items) > max_inputs:
        raise ApiError(400, f"input has {len(items)} texts, more than the limit of {max_inputs} per request; "
                       "split it into several requests", param="input")
    texts = [check_text(t, f"input[{i}]", "input") for i, t in enumerate(items)]
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"model must be a string, got {_kind(model)}", param="model")
    dims, out_dim = _int(data, "dimensions"), _int(data, "output_dimension")
    if dims is not None and out_dim is not None and dims != out_dim:
        raise ApiError(400, f"dimensions={dims} and output_dimension={out_dim} disagree; send one of them",
                       param="dimensions")
    encoding = _choice(data, "encoding_format", ("float", "base64"))
    dtype = _choice(data, "output_dtype", tuple(_DTYPES)) or "float"
    input_type = _choice(data, "input_type", ("query", "document")) or "document"
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise ApiError(400, f"user must be a string, got {_kind(user)}", param="user")
    return EmbedRequest(texts=texts, model=model, dim=dims or out_dim, precision=_DTYPES[dtype],
                        dtype=dtype,  # type: ignore[arg-type]
                        base64=encoding == "base64", input_type=input_type,  # type: ignore[arg-type]
                        voyage=voyage, truncation=_bool(data, "truncation", True))


def _encode_rows(vectors: np.ndarray, as_base64: bool) -> list[Any]:
    if as_base64:
        raw = np.ascontiguousarray(vectors)
        if raw.dtype == np.float32:
            raw = raw.astype("<f4", copy=False)
        width = raw.shape[1] * raw.dtype.itemsize
        blob = raw.tobytes()
        if width % 3 == 0:  # rows end on base64 group boundaries: encode once, cut the text (384 floats do)
            text = base64.b64encode(blob).decode("ascii")
            step = width // 3 * 4
            return [text[i * step:(i + 1) * step] for i in range(len(raw))]
        return [base64.b64encode(blob[i * width:(i + 1) * width]).decode("ascii") for i in range(len(raw))]
    if _orjson is not None:
        return list(np.ascontiguousarray(vectors))
    return vectors.tolist()


def embed_response(req: EmbedRequest, model: str, vectors: np.ndarray, tokens: int) -> bytes:
    rows = _encode_rows(vectors, req.base64)
    data = [{"object": "embedding", "embedding": row, "index": i} for i, row in enumerate(rows)]
    usage = {"total_tokens": tokens} if req.voyage else {"prompt_tokens": tokens, "total_tokens": tokens}
    return dumps({"object": "list", "data": data, "model": model, "usage": usage})


# --------------------------------------------------------------------------------------------------- rerank
@dataclass
class RerankRequest:
    query: str
    documents: list[str]
    model: str | None
    top: int | None
    return_documents: bool
    cohere: bool
    """Answer in Cohere's shape (``results``); else Voyage's (``data``)."""
    truncation: bool


def parse_rerank(data: Mapping[str, Any], *, max_documents: int) -> RerankRequest:
    _unknown(data, _RERANK_FIELDS)
    query = check_text(data.get("query"), "query", "query") if "query" in data else None
    if query is None:
        raise ApiError(400, "query is missing: send the search query as a string", param="query")
    docs = data.get("documents")
    if not isinstance(docs, list) or not docs:
        raise ApiError(400, f"documents must be a non-empty array of strings, got {_kind(docs)}"
                       + (" (empty)" if isinstance(docs, list) else ""), param="documents")
    if len(docs) > max_documents:
        raise ApiError(400, f"documents has {len(docs)} entries, more than the limit of {max_documents}",
                       param="documents")
    cohere = "top_n" in data or "max_chunks_per_doc" in data or "rank_fields" in data
    texts: list[str] = []
    for i, d in enumerate(docs):
        if isinstance(d, dict):  # Cohere v1: {"text": ...}
            cohere = True
            d = d.get("text")
        texts.append(check_text(d, f"documents[{i}]", "documents"))
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"model must be a string, got {_kind(model)}", param="model")
    top_k, top_n = _int(data, "top_k"), _int(data, "top_n")
    if top_k is not None and top_n is not None and top_k != top_n:
        raise ApiError(400, f"top_k={top_k} and top_n={top_n} disagree; send one of them", param="top_k")
    return RerankRequest(query=query, documents=texts, model=model, top=top_k or top_n,
                         return_documents=_bool(data, "return_documents", False), cohere=cohere,
                         truncation=_bool(data, "truncation", True))


def rerank_response(req: RerankRequest, model: str, ranked: list[tuple[int, float]], tokens: int,
                    request_id: str) -> bytes:
    if req.cohere:
        results = []
        for i, s in ranked:
            r: dict[str, Any] = {"index": i, "relevance_score": s}
            if req.return_documents:
                r["document"] = {"text": req.documents[i]}
            results.append(r)
        return dumps({"id": request_id, "results": results,
                      "meta": {"billed_units": {"search_units": 1}, "tokens": {"input_tokens": tokens}}})
    data = []
    for i, s in ranked:
        d: dict[str, Any] = {"index": i, "relevance_score": s}
        if req.return_documents:
            d["document"] = req.documents[i]
        data.append(d)
    return dumps({"object": "list", "data": data, "model": model, "usage": {"total_tokens": tokens}})
