"""Export a static (model2vec) model to ONNX, for onnxruntime in Python, Node and browsers.

The exported folder holds one graph, ``model.onnx``, with the token table inside it as an initializer, beside the
model's ``tokenizer.json``, a ``config.json`` saying how to tokenize, ``tokenizer-tables.json`` (what the BERT
normalizer and pre-tokenizer do to each code point, so that JavaScript tokenizes exactly as Rust does) and a
manifest (``embedopt-export.json``) with every file's size and sha256 and the parity measured at export time.

The graph reproduces ``StaticProvider`` (model2vec's ``StaticModel.encode``) to the bit, not just closely: with a
float16 table model2vec rounds the mean and the normalized vector to float16, so a sum taken in another order
moves a value across a float16 rounding boundary now and then (up to 2.4e-4 apart). The graph therefore adds the
token rows in numpy's order (a sequential ``CumSum``), divides in float64 as ``np.mean`` does, and sums the squares
for the norm in numpy's pairwise order.

What a runtime does around the graph (``config.json`` names the numbers; :class:`ExportedStatic` and the
JavaScript loader in ``js/`` do exactly this):

1. cut each text to its first ``max_chars`` code points (model2vec's ``max_length * median_token_length``);
2. tokenize with ``tokenizer.json`` *without* special tokens and keep the first ``max_length`` ids;
3. pad the ids of a batch to one length (any id) with ``attention_mask`` 0 there; the graph drops padding and
   the unknown token, averages the rows, normalizes when ``normalize`` is set, and returns float32 vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._extras import require
from .._files import atomic_folder
from ..errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    from model2vec import StaticModel

    from ..providers.static import StaticProvider

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "ExportedStatic", "export_static"]

FORMAT = "embedopt-static-onnx"
FORMAT_VERSION = 1
MANIFEST = "embedopt-export.json"
_OPSET = 17  # CumSum, Where, Gather, Slice, ReduceSum with axes as input: onnxruntime >= 1.13, web and node
_IR_VERSION = 8  # the IR that opset 17 came with; newer IRs are refused by older runtimes
_PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE (umath/loops_utils.h)
_MAX_ABS_DIFF = 1e-5
_MIN_INT8_COSINE = 0.99  # per-row int8 keeps 0.9999 on the distilled MiniLM; far below means a broken table
_TABLES = "tokenizer-tables.json"

# Texts run through the export and through StaticProvider at export time: short, long, accents, CJK, emoji,
# punctuation, the tokenizer's own special tokens written as text, and texts past max_length.
_PROBE_TEXTS = [
    "", "hello", "Hello, World!", "Café résumé naïve façade", "straße İstanbul Ångström", "中文文本，你好世界。",
    "日本語のテキスト", "한국어 텍스트", "Русский текст", "العربية مرحبا", "emoji 😀🚀 👨‍👩‍👧 🇫🇷", "...!!!??? (x) [y] {z}",
    "C++ & C# -- e-mail: user@example.com", "[UNK] [PAD] [CLS] [SEP] ##s", "tab\tnew\nline\x00ctrl\u200b",
    "a" * 150, "supercalifragilisticexpialidocious", "the the the the", "x² ½ ∑ ﬁ ｆｕｌｌ",
    "static embeddings average the vectors of the tokens of a text",
    " ".join(["retrieval", "augmented", "generation", "with", "cached", "embeddings"] * 120),
    "unicode 😀 " * 700, "é" * 4000, "word " * 3000,
]


def export_static(
    model: str | os.PathLike[str] | StaticModel | StaticProvider,
    out_dir: str | os.PathLike[str],
    *,
    format: Literal["onnx"] = "onnx",
    int8: bool = False,
) -> dict[str, Any]:
    """Export ``model`` to ``out_dir`` and return the manifest written there.

    Args:
        model: a model2vec folder (what ``embedopt distill`` writes, or any ``StaticModel.save_pretrained``
            folder), a loaded ``StaticModel`` or a ``StaticProvider``. The export reproduces the vectors of
            ``StaticProvider(model)`` (its ``max_length``, 512 unless the provider says otherwise).
        out_dir: the folder to write; it is written whole or not at all, and replaces what was there.
        format: ``"onnx"``, the only format so far.
        int8: store the token table as int8 with one float32 scale per token row (about half the size of a
            float16 table, a quarter of a float32 one). Its vectors are close to the source's but not equal: it
            is its own embedding space (the manifest gives it its own revision and the cosine to the source).

    The export is checked before it is kept: onnxruntime runs it on probe texts beside ``StaticProvider``; a float
    export whose vectors differ by more than 1e-5 anywhere, or an int8 one whose cosine falls below 0.99, raises
    :class:`~embedopt.errors.ModelLoadError` and leaves ``out_dir`` as it was.
    """
    if format != "onnx":
        raise ConfigError(f"format must be 'onnx', got {format!r}")
    onnx = require("onnx", extra="export", feature="embedopt export static")
    ort = require("onnxruntime", extra="export", feature="embedopt export static")
    provider = _as_provider(model)
    static = provider.model
    if static.token_mapping is not None or static.weights is not None:
        raise ConfigError("vocabulary-quantized model2vec models (token_mapping/weights) cannot be exported yet; "
                          "export the model before vocabulary quantization")
    table = np.asarray(static.embedding)
    if table.dtype not in (np.float16, np.float32):
        raise ConfigError(f"the token table is {table.dtype}; export needs float16 or float32: load the model with "
                          "StaticModel.from_pretrained(..., quantize_to='float16') and export that (int8=True "
                          "makes an int8 export)")
    started = time.perf_counter()
    info = provider.info
    max_length = provider.max_length
    max_chars = None if max_length is None else max_length * int(static.median_token_length)
    unk = static.unk_token_id
    scheme = "int8-per-row" if int8 else str(table.dtype)
    revision = info.revision if not int8 else f"{info.revision}+int8r"
    graph = _build_model(onnx, table, unk_id=unk, normalize=bool(static.normalize), int8=int8,
                         name=f"{info.model} ({scheme})")
    tokenizer = _tokenizer_json(static.tokenizer)
    tables = _unicode_tables(static.tokenizer)
    config = {
        "model_type": FORMAT,
        "format_version": FORMAT_VERSION,
        "dim": int(table.shape[1]),
        "vocab_size": int(table.shape[0]),
        "normalize": bool(static.normalize),
        "max_length": max_length,
        "max_chars": max_chars,
        "unk_token_id": unk,
        "add_special_tokens": False,
        "tokenizer_tables": _TABLES if tables is not None else None,
        "table": scheme,
        "inputs": {"input_ids": "int32 [batch, seq]", "attention_mask": "int32 [batch, seq], 0 on padding"},
        "output": "embeddings float32 [batch, dim]",
        "space": {"provider": info.provider, "model": info.model, "revision": revision,
                  "same_as_source": not int8},
        "source": {"provider": info.provider, "model": info.model, "revision": info.revision,
                   "base_model": getattr(static, "base_model_name", None),
                   "embedding_dtype": str(table.dtype)},
    }
    out = Path(out_dir)
    with atomic_folder(out) as tmp:
        (tmp / "model.onnx").write_bytes(graph.SerializeToString())
        (tmp / "tokenizer.json").write_text(tokenizer, encoding="utf-8")
        if tables is not None:
            (tmp / _TABLES).write_text(json.dumps(tables, separators=(",", ":"), ensure_ascii=False),
                                       encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        check = _verify(ort, tmp, provider, int8=int8)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": "static",
            "space": config["space"],
            "files": {p.name: _file_entry(p) for p in sorted(tmp.iterdir())},
            "verification": check,
            "export_seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


class ExportedStatic:
    """Run an exported folder with onnxruntime and ``tokenizers`` only (no model2vec, no torch).

    This is the Python twin of the JavaScript loader in ``js/``: the same tokenization rules, the same graph.
    """

    def __init__(self, folder: str | os.PathLike[str], *, threads: int | None = None,
                 batch_tokens: int = 2048) -> None:
        ort = require("onnxruntime", extra="onnx", feature="ExportedStatic")
        tokenizers = require("tokenizers", extra="onnx", feature="ExportedStatic")
        self.folder = Path(folder)
        try:
            self.config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{self.folder} holds no readable config.json: {exc}. Pass a folder written by "
                                 "`embedopt export static`.") from exc
        if self.config.get("model_type") != FORMAT or self.config.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(f"{self.folder} is not a {FORMAT} v{FORMAT_VERSION} folder (config.json says "
                                 f"{self.config.get('model_type')!r} v{self.config.get('format_version')!r})")
        self.tokenizer = tokenizers.Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        max_length = self.config["max_length"]
        if max_length is None:
            self.tokenizer.no_truncation()
        else:
            self.tokenizer.enable_truncation(int(max_length))
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.folder / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.dim = int(self.config["dim"])
        self.batch_tokens = batch_tokens

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        max_chars = self.config["max_chars"]
        cut = list(texts) if max_chars is None else [t[:max_chars] for t in texts]
        return [enc.ids for enc in self.tokenizer.encode_batch_fast(cut, add_special_tokens=False)]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        ids = self.tokenize(texts)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        start = 0
        while start < len(order):
            # grow the batch while its padded size stays within the token budget (lengths ascend)
            end = start + 1
            while end < len(order) and (end + 1 - start) * max(1, len(ids[order[end]])) <= self.batch_tokens:
                end += 1
            batch = order[start:end]
            width = max(1, len(ids[batch[-1]]))
            input_ids = np.zeros((len(batch), width), dtype=np.int32)
            mask = np.zeros((len(batch), width), dtype=np.int32)
            for row, i in enumerate(batch):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            (vectors,) = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})
            out[batch] = vectors
            start = end
        return out


def _as_provider(model: Any) -> StaticProvider:
    from ..providers.static import StaticProvider

    if isinstance(model, StaticProvider):
        return model
    if isinstance(model, (str, os.PathLike)) and not Path(model).expanduser().is_dir():
        raise ConfigError(f"{os.fspath(model)!r} is not a folder; pass a model2vec folder (see `embedopt distill`), "
                          "a StaticModel or a StaticProvider")
    return StaticProvider(model)


def _tokenizer_json(tokenizer: Any) -> str:
    """The tokenizer as tokenizer.json, without the padding and truncation that model2vec sets at run time."""
    spec = json.loads(tokenizer.to_str())
    spec["padding"] = None
    spec["truncation"] = None
    return json.dumps(spec, ensure_ascii=False)


def _unicode_tables(tokenizer: Any) -> dict[str, Any] | None:
    """What the tokenizer's BertNormalizer and BertPreTokenizer do to every code point, measured here.

    JavaScript ports of these steps disagree with the Rust ones now and then: they test CJK ranges per UTF-16
    unit (so astral ideographs are not split off), lowercase with context (a final capital sigma), and use the
    JavaScript engine's Unicode tables rather than the ones compiled into ``tokenizers`` (a newer emoji is
    dropped by Rust but kept by JavaScript). Both steps act on one code point at a time, so recording their
    effect per code point lets a JavaScript loader reproduce them exactly. ``None`` for other tokenizers.
    """
    spec = json.loads(tokenizer.to_str())
    normalizer, pre = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    if normalizer.get("type") != "BertNormalizer" or pre.get("type") != "BertPreTokenizer":
        return None
    import tokenizers

    key = json.dumps([tokenizers.__version__, normalizer, pre], sort_keys=True)
    if key not in _TABLE_CACHE:  # about 4 s of work: once per process and tokenizer configuration
        _TABLE_CACHE[key] = _measure_tables(tokenizer, tokenizers.__version__)
    return _TABLE_CACHE[key]


_TABLE_CACHE: dict[str, dict[str, Any]] = {}


def _measure_tables(tokenizer: Any, version: str) -> dict[str, Any]:
    normalize = tokenizer.normalizer.normalize_str
    remove: list[int] = []
    space: list[int] = []
    isolate: list[int] = []
    mapped: dict[str, str] = {}
    hangul = True
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        out = normalize(ch)
        if out == ch:
            continue
        if out == "":
            remove.append(cp)
        elif out == " ":
            space.append(cp)
        elif out == f" {ch} ":
            isolate.append(cp)
        elif 0xAC00 <= cp <= 0xD7A3 and out == _hangul_nfd(cp):
            continue  # the loader decomposes Hangul syllables by the Unicode algorithm
        else:
            if 0xAC00 <= cp <= 0xD7A3:
                hangul = False
            mapped[str(cp)] = out
    whitespace: list[int] = []
    punctuation: list[int] = []
    split = tokenizer.pre_tokenizer.pre_tokenize_str
    chunk = 1 << 15
    points = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    for start in range(0, len(points), chunk):
        part = points[start:start + chunk]
        # "a" between code points: a code point left out of every piece is whitespace, one alone in its piece
        # is punctuation, anything else joins its neighbours
        kind: dict[int, bool] = {}
        for _, (a, b) in split("a" + "a".join(chr(cp) for cp in part) + "a"):
            if b - a == 1 and a % 2 == 1:
                kind[a] = True
            else:
                kind.update(dict.fromkeys(range(a, b), False))
        for j, cp in enumerate(part):
            k = kind.get(2 * j + 1)
            if k is None:
                whitespace.append(cp)
            elif k:
                punctuation.append(cp)
    return {
        "format_version": 1,
        "made_by": f"tokenizers {version}",
        "normalizer": {"remove": _ranges(remove), "space": _ranges(space), "isolate": _ranges(isolate),
                       "hangul": hangul, "map": mapped},
        "pre_tokenizer": {"whitespace": _ranges(whitespace), "punctuation": _ranges(punctuation)},
    }


def _hangul_nfd(cp: int) -> str:
    s = cp - 0xAC00
    out = chr(0x1100 + s // 588) + chr(0x1161 + (s % 588) // 28)
    return out + chr(0x11A7 + s % 28) if s % 28 else out


def _ranges(points: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for p in points:
        if out and out[-1][1] == p - 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return out


def _build_model(onnx: Any, table: np.ndarray, *, unk_id: int | None, normalize: bool, int8: bool,
                 name: str) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    vocab, dim = table.shape
    nodes: list[Any] = []
    inits: list[Any] = []
    count = iter(range(1_000_000))

    def const(value: Any, dtype: Any) -> str:
        cname = f"c{next(count)}"
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), cname))
        return cname

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = f"{op.lower()}{next(count)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    # Which positions count: the mask, minus the unknown token (model2vec drops it after truncation).
    keep = node("Cast", ["attention_mask"], to=TensorProto.BOOL)
    if unk_id is not None:
        keep = node("And", [keep, node("Not", [node("Equal", ["input_ids", const(unk_id, np.int32)])])])
    # Dropped positions read an all-zero row appended to the table: adding +0.0 leaves a float32 sum unchanged.
    ids = node("Where", [keep, "input_ids", const(vocab, np.int32)])
    if int8:
        # one scale per token row: a row's values share a magnitude (model2vec weighs tokens by row norm);
        # measured against one scale per dimension, it keeps the worst text's cosine at 0.9998 instead of 0.906
        table32 = table.astype(np.float32)
        scale = np.abs(table32).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(table32 / scale[:, None]), -127, 127).astype(np.int8)
        inits.append(numpy_helper.from_array(np.vstack([q, np.zeros((1, dim), np.int8)]), "table"))
        inits.append(numpy_helper.from_array(np.append(scale, np.float32(0)).astype(np.float32), "row_scale"))
        rows = node("Mul", [node("Cast", [node("Gather", ["table", ids], axis=0)], to=TensorProto.FLOAT),
                            node("Unsqueeze", [node("Gather", ["row_scale", ids], axis=0),
                                               const([2], np.int64)])])
    else:
        inits.append(numpy_helper.from_array(np.vstack([table, np.zeros((1, dim), table.dtype)]), "table"))
        rows = node("Gather", ["table", ids], axis=0)
        if table.dtype == np.float16:
            rows = node("Cast", [rows], to=TensorProto.FLOAT)
    # np.mean adds the rows one after another in float32 (float16 input: float32 intermediates); CumSum does
    # the same additions in the same order, and its last position is the sum (padding adds zeros at the end).
    cumsum = node("CumSum", [rows, const(1, np.int64)])
    last = node("Slice", [cumsum, const([-1], np.int64), const([np.iinfo(np.int64).max], np.int64),
                          const([1], np.int64)])
    total = node("Squeeze", [last, const([1], np.int64)])
    n = node("ReduceSum", [node("Cast", [keep], to=TensorProto.INT64), const([1], np.int64)], keepdims=1)
    n = node("Cast", [node("Max", [n, const(1, np.int64)])], to=TensorProto.DOUBLE)
    # np.mean divides its float32 sum by an intp count: numpy promotes that to float64, then stores float32.
    mean = node("Cast", [node("Div", [node("Cast", [total], to=TensorProto.DOUBLE), n])], to=TensorProto.FLOAT)
    round16 = table.dtype == np.float16 and not int8
    if round16:  # model2vec's output array has the table's dtype
        mean = node("Cast", [node("Cast", [mean], to=TensorProto.FLOAT16)], to=TensorProto.FLOAT)
    result = mean
    if normalize:
        # np.linalg.norm(x, axis=1) + 1e-32: float32 squares summed by numpy's pairwise_sum, then sqrt
        square = node("Mul", [mean, mean])
        sumsq = _pairwise_sum(node, const, square, dim)
        norm = node("Add", [node("Sqrt", [sumsq]), const(1e-32, np.float32)])
        result = node("Div", [mean, node("Unsqueeze", [norm, const([1], np.int64)])])
        if round16:
            result = node("Cast", [node("Cast", [result], to=TensorProto.FLOAT16)], to=TensorProto.FLOAT)
    nodes.append(helper.make_node("Identity", [result], ["embeddings"]))
    graph = helper.make_graph(
        nodes, "static_embedding",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT32, ["batch", "seq"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="embedopt", doc_string=name)
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model


def _pairwise_sum(node: Any, const: Any, x: str, n: int, offset: int = 0) -> str:
    """Nodes summing columns ``offset .. offset+n`` of ``x`` [batch, dim] in the order of numpy's pairwise_sum."""

    def column(i: int) -> str:
        return node("Gather", [x, const(i, np.int64)], axis=1)

    if n < 8:
        acc = column(offset)
        for i in range(offset + 1, offset + n):
            acc = node("Add", [acc, column(i)])
        return acc
    if n <= _PAIRWISE_BLOCK:
        whole = n - n % 8
        block = node("Slice", [x, const([offset], np.int64), const([offset + whole], np.int64),
                               const([1], np.int64)])
        # r[j] = x[j] + x[j+8] + x[j+16] + ... in sequence: a CumSum over the 8-wide rows of the block
        lanes = node("Reshape", [block, const([0, whole // 8, 8], np.int64)])
        cum = node("CumSum", [lanes, const(1, np.int64)])
        r = node("Squeeze", [node("Slice", [cum, const([-1], np.int64), const([np.iinfo(np.int64).max], np.int64),
                                            const([1], np.int64)]), const([1], np.int64)])
        lane = [node("Gather", [r, const(j, np.int64)], axis=1) for j in range(8)]
        acc = node("Add", [node("Add", [node("Add", [lane[0], lane[1]]), node("Add", [lane[2], lane[3]])]),
                           node("Add", [node("Add", [lane[4], lane[5]]), node("Add", [lane[6], lane[7]])])])
        for i in range(offset + whole, offset + n):
            acc = node("Add", [acc, column(i)])
        return acc
    half = n // 2
    half -= half % 8
    return node("Add", [_pairwise_sum(node, const, x, half, offset),
                        _pairwise_sum(node, const, x, n - half, offset + half)])


def _verify(ort: Any, folder: Path, provider: StaticProvider, *, int8: bool) -> dict[str, Any]:
    texts = list(_PROBE_TEXTS)
    expected = np.asarray(provider.embed(texts, "document").vectors, dtype=np.float32)
    got = ExportedStatic(folder).encode(texts)
    diff = float(np.abs(got - expected).max())
    cosine = _cosines(got, expected)
    check: dict[str, Any] = {"probe_texts": len(texts), "max_abs_diff": diff,
                             "min_cosine": round(float(cosine.min()), 6), "mean_cosine": round(float(cosine.mean()), 6),
                             "onnxruntime": ort.__version__}
    if not int8 and not diff <= _MAX_ABS_DIFF:
        raise ModelLoadError(f"the exported graph differs from StaticProvider by {diff:.3g} (> {_MAX_ABS_DIFF}) "
                             "on the probe texts; nothing was written. Please report this with the model's "
                             "config.json and the onnxruntime version.")
    if int8 and not cosine.min() >= _MIN_INT8_COSINE:
        raise ModelLoadError(f"the int8 export keeps a cosine of only {cosine.min():.4f} to StaticProvider on the "
                             f"probe texts (< {_MIN_INT8_COSINE}); nothing was written. Export without int8.")
    return check


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-30)
    return np.where(both_zero, 1.0, cos)


def _file_entry(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}
