"""Export a sentence-transformers model to ONNX, for :class:`embedopt.providers.onnx.OnnxProvider` (no torch).

``embedopt export onnx -m SPEC -o DIR [--quantize int8 [--scheme NAME]] [--optimize]``

The graph is the whole sentence-transformers module stack — the transformer, its pooling and, where the model has
one, its normalization — traced with ``torch.onnx.export`` (dynamic batch and sequence axes, opset 17) with eager
attention, whose pattern onnxruntime fuses into its ``Attention`` kernel. Beside it go the model's
``tokenizer.json`` (truncation to the model's length set) and ``embedopt-onnx.json``: the source model and
revision, dimension, length, prompts, precision, quantization scheme, and how closely the export reproduced the
source on a fixed probe set (varied, multilingual, some texts past the length limit), measured through
``OnnxProvider`` itself before the folder is kept.

Spaces: an fp32 export whose probe cosine is >= 0.99999 everywhere *shares* the source's fingerprint space (it
takes the source's revision); an int8 export, or an fp32 one below that bar, is a space of its own with a revision
of its own (``{source revision}+onnx-{precision}-{sha256 of model.onnx}``), so indexes move to it through the
migration tooling rather than mixing vectors.

int8 schemes (``scheme=``; measured on both shared datasets by ``bench/onnx_quality.py``): see :data:`SCHEMES`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._extras import require
from .._files import atomic_folder
from ..errors import ConfigError, ModelLoadError
from ..fingerprint import InputType
from ..providers.onnx import FORMAT, FORMAT_VERSION, MANIFEST, OnnxProvider, file_sha256

if TYPE_CHECKING:
    from ..providers.sentence_transformers import SentenceTransformerProvider

__all__ = ["DEFAULT_SCHEME", "PROBE_TEXTS", "SCHEMES", "SHARE_AT", "Scheme", "export_onnx"]

logger = logging.getLogger(__name__)

OPSET = 17  # LayerNormalization as one op; onnxruntime >= 1.13
SHARE_AT = 0.99999
"""An fp32 export shares the source's space when every probe vector has at least this cosine with the source's."""
_MODULES_OK = {"Transformer", "Pooling", "Normalize", "Dense", "LayerNorm"}
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

_LONG = ("The kernel keeps a table of open files for every process, and each entry points at a file object that "
         "records the offset, the access mode and the operations the driver supplies. ")
PROBE_TEXTS: tuple[str, ...] = (
    "hello",
    "a",
    "How do I list the files in a directory sorted by size?",
    "ls -la --sort=size /var/log | head -n 20",
    "The quick brown fox jumps over the lazy dog.",
    "copy files and directories",
    "Python library for parsing command-line options",
    "Café résumé naïve façade, déjà vu — coöperate",
    "straße İstanbul Ångström Ærø",
    "中文文本：如何在终端中查找文件？",
    "日本語のテキストと漢字とカタカナ",
    "한국어 텍스트 검색 예시",
    "Русский текст о поиске файлов",
    "العربية: كيف أبحث عن ملف",
    "emoji 😀🚀 👨‍👩‍👧 🇫🇷 ✓",
    "x² ½ ∑ ∫ ﬁ ｆｕｌｌｗｉｄｔｈ",
    "tab\tnew\nline  multiple   spaces\u200b zero width",
    "[CLS] [SEP] [PAD] [UNK] [MASK] ##ing",
    "C++ & C# -- e-mail: user@example.com https://example.org/a?b=c#d",
    "SELECT name FROM users WHERE id = 42; -- sql",
    "def f(x):\n    return {k: v for k, v in x.items() if v is not None}",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 -2.5e-3",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "the the the the the the the the",
    "a" * 300,
    "grep(1) - print lines that match patterns. grep searches for PATTERNS in each FILE.",
    _LONG * 3,
    _LONG * 12,  # well past 256 tokens: truncation must match
    ("données " * 200) + "fin",
    " ".join(f"token{i}" for i in range(600)),
)
"""The fixed probe set: short and long, code, numbers, eight scripts, emoji, control characters, texts past 256
tokens (truncation), and wordpiece edge cases."""


@dataclass(frozen=True)
class Scheme:
    """One way to make an int8 graph from the fp32 one (onnxruntime.quantization)."""

    name: str
    summary: str
    static: bool = False
    """Static QDQ: activations get fixed ranges from a calibration set (``calibration_texts``)."""
    per_channel: bool = False
    reduce_range: bool = False
    """7-bit weights: no u8s8 overflow on CPUs without VNNI, so the vectors do not depend on the CPU."""
    ops: tuple[str, ...] = ("MatMul",)
    """Operator types to quantize; the embedding lookup (Gather) stays fp32 unless listed."""
    exclude: str | None = None
    """A regular expression of node names kept in fp32 (sensitive nodes)."""
    calibrate: str = "MinMax"


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("dynamic", "dynamic per-tensor int8: every MatMul and the embedding Gather (onnxruntime's default ops)",
           ops=("MatMul", "Gather", "Attention", "EmbedLayerNormalization")),
    Scheme("dynamic-matmul", "dynamic per-tensor int8 of the MatMul weights only (embedding lookup in fp32)"),
    Scheme("per-channel", "dynamic int8 with per-channel weight scales, MatMul only", per_channel=True),
    Scheme("per-channel-rr", "as per-channel, with 7-bit weights (reduce_range): the same vectors on CPUs with "
           "and without VNNI", per_channel=True, reduce_range=True),
    Scheme("keep-ends", "dynamic per-channel int8, MatMul only, first and last layers in fp32", per_channel=True,
           exclude=r"layer[._](0|{last})[./]"),
    Scheme("keep-ffn-out", "dynamic per-channel int8, MatMul only, the FFN output projections (the outlier "
           "activations of BERT models) in fp32", per_channel=True, exclude=r"layer[._]\d+/output/dense"),
    Scheme("static-qdq", "static QDQ int8 (u8 activations, s8 per-channel weights), MatMul only, MinMax ranges "
           "from a calibration set", static=True, per_channel=True),
    Scheme("static-qdq-percentile", "static QDQ int8 as static-qdq, ranges at the 99.999th percentile of the "
           "calibration activations", static=True, per_channel=True, calibrate="Percentile"),
    Scheme("static-keep-ffn-out", "static QDQ int8 with percentile ranges, the FFN output projections in fp32",
           static=True, per_channel=True, calibrate="Percentile", exclude=r"layer[._]\d+/output/dense"),
)}
DEFAULT_SCHEME = "per-channel"
"""What ``quantize="int8"`` uses without a ``scheme``. Measured by bench/onnx_quality.py on MiniLM: every dynamic
scheme keeps >= 99% of fp32's NDCG@10 on both shared datasets, the static ones do not; of the dynamic ones whose
vectors stay close to fp32's (cosine 0.995 mean, per-channel scales; per-tensor ones fall to 0.95), this is the one
that quantizes every MatMul."""


def export_onnx(
    model: str | os.PathLike[str] | SentenceTransformerProvider,
    out_dir: str | os.PathLike[str],
    *,
    quantize: Literal["int8"] | None = None,
    scheme: str | None = None,
    optimize: bool = False,
    probe_texts: Sequence[str] | None = None,
    calibration_texts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Export ``model`` to ``out_dir`` (written whole or not at all) and return the manifest written there.

    Args:
        model: a local sentence-transformers model: an embedopt spec (``minilm``, ``st:NAME_OR_FOLDER``), a folder,
            a hub id with a packaged copy, or a loaded :class:`~embedopt.providers.SentenceTransformerProvider`
            (its prompts and length are what the export records).
        quantize: ``"int8"`` for an int8 graph (its own space); ``None`` for fp32.
        scheme: the int8 scheme, one of :data:`SCHEMES` (default :data:`DEFAULT_SCHEME`).
        optimize: run onnxruntime's transformer optimizer (BERT fusions) on the graph before quantizing.
        probe_texts: the texts the export is checked on (default :data:`PROBE_TEXTS`).
        calibration_texts: texts whose activations set the ranges of a static scheme (use documents of the
            target domain, not the evaluation queries); a few hundred are enough.
    """
    if quantize not in (None, "int8"):
        raise ConfigError(f"quantize must be None (fp32) or 'int8', got {quantize!r}")
    if scheme is not None and quantize is None:
        raise ConfigError("scheme applies to int8 exports: pass quantize='int8' with it")
    chosen = SCHEMES.get(scheme or DEFAULT_SCHEME) if quantize else None
    if quantize and chosen is None:
        raise ConfigError(f"unknown int8 scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}")
    if chosen is not None and chosen.static and not calibration_texts:
        raise ConfigError(f"scheme {chosen.name!r} calibrates activation ranges: pass calibration_texts "
                          "(a few hundred documents of the target domain, not evaluation queries)")
    probe = list(probe_texts if probe_texts is not None else PROBE_TEXTS)
    if not probe or not all(isinstance(t, str) and t for t in probe):
        raise ConfigError("probe_texts must be non-empty strings")
    torch = require("torch", extra="local", feature="export onnx")
    require("onnx", extra="export", feature="export onnx")
    ort = require("onnxruntime", extra="onnx", feature="export onnx")
    source = _source(model)
    st = source.model
    _check_stack(st)
    started = time.perf_counter()
    out = Path(out_dir).expanduser()
    with tempfile.TemporaryDirectory(prefix="embedopt-onnx-") as work, atomic_folder(out) as folder:
        work_dir = Path(work)
        graph = work_dir / "fp32.onnx"
        inputs = _export_graph(torch, source, graph)
        if optimize:
            graph = _optimize(graph, work_dir / "optimized.onnx", st)
        if chosen is not None:
            graph = _quantize(graph, work_dir / "int8.onnx", chosen, source, inputs, calibration_texts or ())
        shutil.copyfile(graph, folder / "model.onnx")
        _save_tokenizer(source, folder / "tokenizer.json")
        manifest = _manifest(source, folder, inputs, quantize, chosen, optimize, ort, torch)
        _write(folder / MANIFEST, manifest)
        report = _probe(source, folder, probe)
        precision = "int8" if quantize else "fp32"
        shared = precision == "fp32" and report["min_cosine"] >= SHARE_AT
        manifest["probe"] = report
        manifest["space"] = "shared" if shared else "own"
        manifest["revision"] = (source.info.revision if shared else
                                f"{source.info.revision}+onnx-{precision}-{manifest['files']['model']['sha256'][:16]}")
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        _write(folder / MANIFEST, manifest)
    logger.info("exported %s to %s (%s, %s space, probe min cosine %.7f)", source.info.model, out, precision,
                manifest["space"], report["min_cosine"])
    return manifest


def _source(model: str | os.PathLike[str] | SentenceTransformerProvider) -> SentenceTransformerProvider:
    from ..providers.sentence_transformers import SentenceTransformerProvider

    if isinstance(model, SentenceTransformerProvider):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(f"model must be a spec, a folder or a SentenceTransformerProvider, got {type(model).__name__}")
    from ..specs import local_model

    prefix, location = local_model(model)
    if prefix != "st":
        raise ConfigError(f"{os.fspath(model)!r} is a {prefix}: model; export onnx takes sentence-transformers models "
                          "(for static models use: embedopt export static)")
    return SentenceTransformerProvider(location, device="cpu")


def _check_stack(st: Any) -> None:
    kinds = [type(m).__name__ for m in st]
    if not kinds or kinds[0] != "Transformer":
        raise ConfigError(f"export onnx handles models that start with a Transformer module; this one is {kinds}")
    odd = [k for k in kinds if k not in _MODULES_OK]
    if odd:
        raise ConfigError(f"export onnx does not handle the module(s) {odd} of this model ({kinds}); "
                          f"it handles {sorted(_MODULES_OK)}")
    for m in st:
        if type(m).__name__ == "Pooling" and getattr(m, "include_prompt", True) is False:
            raise ConfigError("this model's pooling leaves the prompt tokens out (include_prompt=False), which the "
                              "exported graph does not reproduce")
    params = sum(p.numel() for p in st.parameters())
    if params * 4 >= 2_000_000_000:
        raise ConfigError(f"the model has {params:,} parameters; graphs over 2 GB (external data) are not handled")


class _Graph:
    """Wraps the module stack as ``forward(input_ids, attention_mask[, token_type_ids]) -> sentence_embedding``."""

    @staticmethod
    def build(torch: Any, st: Any, names: Sequence[str]) -> Any:
        class Graph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.st = st

            def forward(self, *tensors: Any) -> Any:
                return self.st(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

        return Graph().eval()


def _export_graph(torch: Any, source: SentenceTransformerProvider, path: Path) -> list[str]:
    from ..providers._local import model_lock

    st = source.model
    tokenizer = st.tokenizer
    names = [n for n in _INPUTS if n in tokenizer.model_input_names]
    # two texts of different lengths: the trace must see padding, or it may drop the attention mask
    sample = tokenizer(["an example sentence to trace the graph with", "short"], padding=True, truncation=True,
                       return_tensors="pt")
    args = tuple(sample[n].to(st.device) for n in names)
    auto = getattr(st[0], "auto_model", None)
    previous = getattr(getattr(auto, "config", None), "_attn_implementation", None)
    switch = getattr(auto, "set_attn_implementation", None) if previous not in (None, "eager") else None
    with model_lock(st), torch.no_grad():
        try:
            if switch is not None:
                switch("eager")  # the attention pattern that onnxruntime fuses into its Attention kernel
            _trace(torch, _Graph.build(torch, st, names), args, path, names)
        finally:
            if switch is not None:
                switch(previous)
    return names


def _trace(torch: Any, graph: Any, args: tuple[Any, ...], path: Path, names: list[str]) -> None:
    import warnings

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
            torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=OPSET, input_names=names,
                              output_names=["sentence_embedding"],
                              dynamic_axes={**axes, "sentence_embedding": {0: "batch"}}, do_constant_folding=True)
    except TypeError:  # a torch without the TorchScript exporter: the dynamo one (needs onnxscript)
        require("onnxscript", extra="export", feature="export onnx with torch's dynamo exporter")
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        torch.onnx.export(graph, args, str(path), dynamo=True, opset_version=max(OPSET, 18), input_names=names,
                          output_names=["sentence_embedding"], external_data=False,
                          dynamic_shapes={n: {0: batch, 1: seq} for n in names})


def _optimize(src: Path, dst: Path, st: Any) -> Path:
    from onnxruntime.transformers import optimizer

    config = getattr(getattr(st[0], "auto_model", None), "config", None)
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    optimized = optimizer.optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden,
                                         opt_level=0, use_gpu=False)
    logger.info("onnxruntime optimizer fused: %s",
                {k: v for k, v in optimized.get_fused_operator_statistics().items() if v})
    optimized.save_model_to_file(str(dst))
    return dst


def _quantize(src: Path, dst: Path, scheme: Scheme, source: SentenceTransformerProvider, names: list[str],
              calibration_texts: Sequence[str]) -> Path:
    import onnx
    from onnxruntime import quantization as q

    graph = onnx.load(str(src), load_external_data=False)
    nodes = [n.name for n in graph.graph.node]
    exclude: list[str] = []
    if scheme.exclude:
        layers = [int(m.group(1)) for n in nodes for m in [re.search(r"layer[._](\d+)[./]", n)] if m]
        pattern = re.compile(scheme.exclude.replace("{last}", str(max(layers, default=0))))
        exclude = [n for n in nodes if pattern.search(n)]
        if not exclude:
            raise ConfigError(f"scheme {scheme.name!r} found no node to keep in fp32 in this graph")
    del graph
    if not scheme.static:
        q.quantize_dynamic(src, dst, op_types_to_quantize=list(scheme.ops), per_channel=scheme.per_channel,
                           reduce_range=scheme.reduce_range, weight_type=q.QuantType.QInt8,
                           nodes_to_exclude=exclude, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return dst
    reader = _CalibrationReader(source, names, calibration_texts)
    q.quantize_static(src, dst, reader, quant_format=q.QuantFormat.QDQ, op_types_to_quantize=list(scheme.ops),
                      per_channel=scheme.per_channel, activation_type=q.QuantType.QUInt8,
                      weight_type=q.QuantType.QInt8, nodes_to_exclude=exclude,
                      calibrate_method=getattr(q.CalibrationMethod, scheme.calibrate),
                      reduce_range=scheme.reduce_range,
                      extra_options={"MatMulConstBOnly": True,  # the attention score MatMuls stay fp32
                                     "CalibStridedMinMax": 1,  # one batch per calibrator call (any method)
                                     "DefaultTensorType": onnx.TensorProto.FLOAT,
                                     **({"CalibPercentile": 99.999} if scheme.calibrate == "Percentile" else {})})
    return dst


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol, with the range selection that strided calibration uses: the
    calibrator is fed one batch of 8 texts at a time, so it never holds every activation of the whole set (the
    histogram calibrators keep all they are given until the call ends: 21 GB for 256 texts of MiniLM)."""

    def __init__(self, source: SentenceTransformerProvider, names: list[str], texts: Sequence[str]) -> None:
        prompt = source.info.prompt("document")
        self._feeds = list(_feeds(source, names, [prompt + t for t in texts], batch=8))
        self._pending: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self._feeds[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._pending, None)


def _feeds(source: SentenceTransformerProvider, names: list[str], texts: list[str],
           batch: int) -> Iterator[dict[str, np.ndarray]]:
    tokenizer = source.model.tokenizer
    for start in range(0, len(texts), batch):
        enc = tokenizer(texts[start:start + batch], padding=True, truncation=True, return_tensors="np")
        yield {n: np.asarray(enc[n], dtype=np.int64) for n in names}


def _save_tokenizer(source: SentenceTransformerProvider, path: Path) -> None:
    from tokenizers import Tokenizer

    backend = getattr(source.model.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError("this model has no fast (Rust) tokenizer, which the ONNX provider needs")
    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_padding()
    if source.info.max_tokens:
        tokenizer.enable_truncation(max_length=source.info.max_tokens)
    tokenizer.save(str(path))


def _manifest(source: SentenceTransformerProvider, folder: Path, inputs: list[str], quantize: str | None,
              scheme: Scheme | None, optimize: bool, ort: Any, torch: Any) -> dict[str, Any]:
    import importlib.metadata as md

    info = source.info
    st = source.model
    model_file, tok_file = folder / "model.onnx", folder / "tokenizer.json"
    versions = {}
    for dist in ("torch", "onnx", "onnxruntime", "sentence-transformers", "transformers", "embedopt"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[dist] = md.version(dist)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": info.model,
        "source": {"provider": info.provider, "model": info.model, "revision": info.revision},
        "revision": "probing",  # set once the probe has run
        "space": "own",
        "dim": info.dim,
        "max_tokens": info.max_tokens,
        "prompts": dict(info.prompts),
        "modules": [type(m).__name__ for m in st],
        "normalized": any(type(m).__name__ == "Normalize" for m in st),
        "inputs": inputs,
        "output": "sentence_embedding",
        "pad_id": int(getattr(st.tokenizer, "pad_token_id", None) or 0),
        "precision": "int8" if quantize else "fp32",
        "quantization": None if scheme is None else {
            "scheme": scheme.name, "summary": scheme.summary, "static": scheme.static,
            "per_channel": scheme.per_channel, "ops": list(scheme.ops), "exclude": scheme.exclude,
            "weights": "int8", "activations": "uint8 " + ("static (calibrated)" if scheme.static else "dynamic")},
        "optimize": optimize,
        "opset": OPSET,
        "files": {
            "model": {"path": model_file.name, "bytes": model_file.stat().st_size, "sha256": file_sha256(model_file)},
            "tokenizer": {"path": tok_file.name, "bytes": tok_file.stat().st_size, "sha256": file_sha256(tok_file)},
        },
        "versions": versions,
        "share_at": SHARE_AT,
    }


def _probe(source: SentenceTransformerProvider, folder: Path, texts: list[str]) -> dict[str, Any]:
    """Compare the export (through OnnxProvider, batched and one text at a time) with the source."""
    provider = OnnxProvider(folder, device="cpu", verify=False)
    types: list[InputType] = ["query", "document"] if source.info.prompts else ["document"]
    diffs, cosines = [], []
    for input_type in types:
        want = np.asarray(source.embed(list(texts), input_type).vectors, dtype=np.float32)
        got_batched = provider.embed(list(texts), input_type).vectors
        got_single = np.concatenate([provider.embed([t], input_type).vectors for t in texts])
        for got in (got_batched, got_single):
            if got.shape != want.shape:
                raise ModelLoadError(f"the export returns shape {got.shape}, the source {want.shape}")
            diffs.append(float(np.abs(got - want).max()))
            cosines.append(_cosines(got, want))
    cos = np.concatenate(cosines)
    return {"texts": len(texts), "input_types": types, "max_abs_diff": max(diffs), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean())}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.asarray((a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)))


def _write(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

