"""Sentence-transformers models exported to ONNX, run by onnxruntime: no torch, no transformers.

A folder made by ``embedopt export onnx -m SPEC -o DIR`` (:func:`embedopt.tools.export_onnx.export_onnx`) holds
``model.onnx`` (the transformer with its pooling and normalization inside the graph), the model's
``tokenizer.json`` with truncation to the model's length set, and ``embedopt-onnx.json``: where the export came
from, the prompts, and how closely it reproduced the source on a probe set at export time. This module needs only
numpy, onnxruntime and tokenizers (``pip install "embedopt[onnx]"``).

Spaces: an fp32 export that matched its source to cosine >= 0.99999 on the probe set carries the source's
revision, so its vectors share the source's fingerprint space (caches, indexes and a Router over a torch and an
ONNX route of one model work); an int8 export (or an fp32 one below the bar) has a revision of its own and is a
space of its own. The manifest's ``space`` says which (``shared`` or ``own``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._extras import available, require
from ..errors import ConfigError, ModelLoadError, ProviderError
from ..fingerprint import InputType
from .base import BaseProvider, ProviderEntry, ProviderInfo

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "SPEC", "OnnxProvider", "is_onnx_export", "read_manifest"]

logger = logging.getLogger(__name__)

FORMAT = "embedopt-onnx"
FORMAT_VERSION = 1
MANIFEST = "embedopt-onnx.json"
MAKE_ONE = "make one with: embedopt export onnx -m SPEC -o DIR (e.g. -m minilm)"

Space = Literal["shared", "own"]


@dataclass(frozen=True)
class Manifest:
    """The parts of ``embedopt-onnx.json`` a runtime needs (the file holds more: probe results, versions)."""

    model: str
    """The source model's public name (a hub id or a folder name)."""
    revision: str
    """The revision this export serves under: the source's when ``space == "shared"``, its own otherwise."""
    source_revision: str
    space: Space
    dim: int
    max_tokens: int | None
    prompts: dict[str, str]
    precision: str
    inputs: tuple[str, ...]
    output: str
    model_file: str
    model_sha256: str
    tokenizer_file: str
    tokenizer_sha256: str
    pad_id: int
    raw: dict[str, Any]


def is_onnx_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding an embedopt ONNX export (its manifest names the format)."""
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            return bool(json.load(f).get("format") == FORMAT)
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """Read and check an export's manifest; :class:`ModelLoadError` (saying how to make one) when it is not one."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ModelLoadError(f"ONNX export folder {os.fspath(folder)!r} does not exist; {MAKE_ONE}")
    path = root / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{root} is not an ONNX export made by embedopt (it has no {MANIFEST}); "
                             f"{MAKE_ONE}") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}; export the model again ({MAKE_ONE})") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ModelLoadError(f"{path} is not an embedopt ONNX manifest (format is not {FORMAT!r}); {MAKE_ONE}")
    version = raw.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelLoadError(f"{path} has format version {version!r}; this embedopt reads version {FORMAT_VERSION} "
                             "and older: upgrade embedopt, or export the model again with this one")
    try:
        files = raw["files"]
        manifest = Manifest(
            model=str(raw["model"]),
            revision=str(raw["revision"]),
            source_revision=str(raw["source"]["revision"]),
            space=raw["space"],
            dim=int(raw["dim"]),
            max_tokens=None if raw.get("max_tokens") is None else int(raw["max_tokens"]),
            prompts={str(k): str(v) for k, v in (raw.get("prompts") or {}).items()},
            precision=str(raw["precision"]),
            inputs=tuple(str(n) for n in raw["inputs"]),
            output=str(raw["output"]),
            model_file=str(files["model"]["path"]),
            model_sha256=str(files["model"]["sha256"]),
            tokenizer_file=str(files["tokenizer"]["path"]),
            tokenizer_sha256=str(files["tokenizer"]["sha256"]),
            pad_id=int(raw.get("pad_id", 0)),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path} lacks or garbles the field {exc}; export the model again ({MAKE_ONE})") from exc
    if manifest.space not in ("shared", "own"):
        raise ModelLoadError(f"{path}: space must be 'shared' or 'own', got {manifest.space!r}")
    return manifest


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class OnnxProvider(BaseProvider):
    """Embed with an ONNX export of a sentence-transformers model, on onnxruntime.

    Args:
        folder: a folder made by ``embedopt export onnx`` (:func:`embedopt.tools.export_onnx.export_onnx`).
        threads: onnxruntime intra-op threads; ``None`` lets onnxruntime choose (one per physical core).
        batch_size: most texts per inference call; texts are sorted by token length first so a batch pads little.
        max_batch_tokens: most tokens per inference call (texts x the longest one's tokens); ``None``: 2048 on the
            CPU (8 texts of 256 tokens: no slower than 32, and the activations of a call stay small, so the
            process stays small: 250 MiB for MiniLM against 450 MiB at 32 x 256), 16384 on CUDA.
        device: ``cpu``, ``cuda`` or ``cuda:N``; ``None`` picks CUDA when onnxruntime-gpu finds a GPU and the
            export is fp32, else the CPU. (The CUDA path follows onnxruntime's documentation; it is untested here.)
        fp16: on CUDA, run the graph converted to float16 (converted in memory at load, which needs the ``onnx``
            package); ``None`` means yes on CUDA when ``onnx`` is installed. The float16 graph is used only if it
            agrees with the float32 one on a few texts at load (cosine >= 0.999), else float32 runs, with a
            warning. The revision stays the export's, as for sentence-transformers on CUDA: it names the weights,
            not the arithmetic.
        verify: check the model and tokenizer files against the sha256 in the manifest at load (a fraction of a
            second for MiniLM), so a file swapped after export cannot serve under the export's revision.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        threads: int | None = None,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        device: str | None = None,
        fp16: bool | None = None,
        verify: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be >= 1 or None, got {max_batch_tokens}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1 or None (onnxruntime's choice), got {threads}")
        ort = require("onnxruntime", extra="onnx", feature="OnnxProvider")
        tokenizers = require("tokenizers", extra="onnx", feature="OnnxProvider")
        self._manifest = manifest = read_manifest(folder)
        root = Path(folder).expanduser().resolve()
        self.folder = root
        model_path, tok_path = root / manifest.model_file, root / manifest.tokenizer_file
        for p in (model_path, tok_path):
            if not p.is_file():
                raise ModelLoadError(f"{root} lacks {p.name}, which its manifest names; export again ({MAKE_ONE})")
        if verify:
            for p, want in ((model_path, manifest.model_sha256), (tok_path, manifest.tokenizer_sha256)):
                if file_sha256(p) != want:
                    raise ModelLoadError(
                        f"{p} does not match the sha256 in {MANIFEST}: the file changed after export, so its "
                        f"vectors may not be in the space the manifest claims; export again ({MAKE_ONE})")
        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(str(tok_path))
            self._counter = tokenizers.Tokenizer.from_file(str(tok_path))
        except Exception as exc:
            raise ModelLoadError(f"cannot load {tok_path}: {type(exc).__name__}: {exc}") from exc
        self._tokenizer.no_padding()
        if manifest.max_tokens is not None:
            self._tokenizer.enable_truncation(max_length=manifest.max_tokens)
        self._counter.no_padding()
        self._counter.no_truncation()
        # Rust tokenizers refuse concurrent use from threads ("Already borrowed"); onnxruntime's run() is
        # thread-safe, so only tokenizing is serialized.
        self._tok_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.batch_size = batch_size
        self.threads = threads
        self._session, self._device, cuda = _open_session(ort, model_path, manifest, threads=threads, device=device)
        self._fp16 = False
        self.max_batch_tokens = max_batch_tokens or (2048 if cuda is None else 16384)
        if fp16 and cuda is None:
            raise ConfigError("fp16 is for CUDA; on the CPU use an int8 export for speed")
        names = [i.name for i in self._session.get_inputs()]
        missing = [n for n in names if n not in ("input_ids", "attention_mask", "token_type_ids")]
        if missing:
            raise ModelLoadError(f"{model_path} takes inputs {missing} that embedopt does not know how to feed; "
                                 f"export it again ({MAKE_ONE})")
        self._input_names = names
        self._info = ProviderInfo(
            provider="onnx",
            model=manifest.model,
            revision=manifest.revision,
            dim=manifest.dim,
            kind="self_hosted",
            max_batch=max(256, batch_size),
            max_tokens=manifest.max_tokens,
            prompts={k: v for k, v in manifest.prompts.items() if v},
        )
        if cuda is not None and (fp16 or (fp16 is None and available("onnx"))):
            self._use_fp16(ort, model_path, *cuda)

    @property
    def info(self) -> ProviderInfo:
        return self._info

    @property
    def manifest(self) -> dict[str, Any]:
        """The export's manifest as written (source, precision, quantization, probe results, space)."""
        return dict(self._manifest.raw)

    @property
    def space(self) -> Space:
        """``shared``: same fingerprint space as the source model; ``own``: a space of its own (int8)."""
        return self._manifest.space

    @property
    def device(self) -> str:
        return self._device

    @property
    def fp16(self) -> bool:
        return self._fp16

    def _use_fp16(self, ort: Any, model_path: Path, options: Any, providers: list[Any]) -> None:
        """Switch to the float16 graph if it agrees with the float32 one (cosine >= 0.999 on a few texts): a graph
        whose masking constants do not survive the conversion is caught here, not in an index."""
        fp32 = self._session
        texts = ["a short query", "Café 中文 😀 emoji and scripts", "a longer sentence about files " * 40]
        full = self._embed(texts, "document")
        self._session = half_session = _session(ort, _to_fp16(model_path), options, providers, model_path)
        half = self._embed(texts, "document")
        agree = float(((half * full).sum(1) / (np.linalg.norm(half, axis=1) * np.linalg.norm(full, axis=1))).min())
        if agree >= 0.999:
            self._session, self._fp16 = half_session, True
        else:
            self._session = fp32
            logger.warning("the float16 graph of %s disagrees with float32 (cosine %.4f); running float32 on CUDA",
                           model_path.parent.name, agree)

    def _embed(self, texts: list[str], input_type: InputType) -> np.ndarray:
        prompt = self._info.prompt(input_type)
        if prompt:
            texts = [prompt + t for t in texts]
        with self._tok_lock:
            encodings = self._tokenizer.encode_batch(texts)
        ids = [e.ids for e in encodings]
        # longest first, as sentence-transformers does: the batch shapes shrink as the run goes
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.empty((len(texts), self._info.dim), dtype=np.float32)
        start = 0
        while start < len(order):
            # the first text of a chunk is its longest: it sets the padded width
            per_call = max(1, min(self.batch_size, self.max_batch_tokens // max(1, len(ids[order[start]]))))
            chunk = order[start:start + per_call]
            out[chunk] = self._run([ids[i] for i in chunk])
            start += per_call
        return out

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in batch)
        input_ids = np.full((len(batch), width), self._manifest.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            input_ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        try:
            (vectors,) = self._session.run([self._manifest.output], {n: feeds[n] for n in self._input_names})
        except Exception as exc:
            raise ProviderError(f"onnxruntime failed on a batch of {len(batch)}: {type(exc).__name__}: {exc}",
                                provider="onnx", model=self._info.model) from exc
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        with self._count_lock:
            encoded = self._counter.encode_batch(list(texts), add_special_tokens=True)
        return [len(e.ids) for e in encoded]

    def __repr__(self) -> str:
        return (f"OnnxProvider(model={self._info.model!r}, precision={self._manifest.precision!r}, "
                f"space={self.space!r}, device={self._device!r})")


def _open_session(ort: Any, model_path: Path, manifest: Manifest, *, threads: int | None,
                  device: str | None) -> tuple[Any, str, Any]:
    """An fp32 InferenceSession on the requested device: (session, device, CUDA provider list or None)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # memory patterns are planned per input shape; with the varying shapes of text batches they pile up (RSS 700
    # MiB instead of 450 after 64 MiniLM documents) and buy nothing
    options.enable_mem_pattern = False
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    if device is not None and device != "cpu" and device != "cuda" and not device.startswith("cuda:"):
        raise ConfigError(f"device must be 'cpu', 'cuda', 'cuda:N' or None, got {device!r}")
    cuda_available = "CUDAExecutionProvider" in ort.get_available_providers()
    if device is None:
        want_cuda = cuda_available and manifest.precision == "fp32"
    else:
        want_cuda = device.startswith("cuda")
        if want_cuda and not cuda_available:
            raise ConfigError(f"device {device!r} needs onnxruntime-gpu with CUDA (pip install onnxruntime-gpu); "
                              f"this onnxruntime offers {ort.get_available_providers()}")
        if want_cuda and manifest.precision != "fp32":
            raise ConfigError(f"this export is {manifest.precision}, a CPU format; on a GPU use an fp32 export "
                              "(it runs in fp16 there)")
    if not want_cuda:
        return _session(ort, str(model_path), options, ["CPUExecutionProvider"], model_path), "cpu", None
    device_id = int(device.split(":", 1)[1]) if device and ":" in device else 0
    providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    session = _session(ort, str(model_path), options, providers, model_path)
    if session.get_providers()[0] != "CUDAExecutionProvider":
        # onnxruntime-gpu without a usable GPU or CUDA libraries falls back to the CPU (with its own warning)
        if device is not None:
            raise ConfigError(f"onnxruntime could not use CUDA for device {device!r} (no GPU, or CUDA/cuDNN libraries "
                              "missing: see onnxruntime's CUDA requirements); use device='cpu'")
        logger.warning("onnxruntime-gpu found no usable GPU; running %s on the CPU", model_path.parent.name)
        return session, "cpu", None
    return session, f"cuda:{device_id}", (options, providers)


def _session(ort: Any, source: str | bytes, options: Any, providers: list[Any], model_path: Path) -> Any:
    try:
        return ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:
        raise ModelLoadError(f"onnxruntime cannot load {model_path}: {type(exc).__name__}: {exc}; "
                             f"export it again ({MAKE_ONE})") from exc


def _to_fp16(model_path: Path) -> bytes:
    """The graph with float16 weights and arithmetic, float32 inputs and outputs (onnxruntime's converter)."""
    onnx = require("onnx", extra="onnx-gpu", feature="fp16 ONNX inference on CUDA")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=True)
    data: bytes = model.SerializeToString()
    return data


def _build(name: str, **options: Any) -> OnnxProvider:
    return OnnxProvider(name, **options)


SPEC = ProviderEntry(
    prefix="onnx", build=_build, options=OnnxProvider, shared=True, claims=is_onnx_export,
    summary="a sentence-transformers model exported to ONNX (embedopt export onnx): onnxruntime, no torch",
    example="onnx:./minilm-onnx")
