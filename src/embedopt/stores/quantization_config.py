"""One description of how Qdrant quantizes and searches, for the embedded engine and for a server alike.

:class:`QuantizationConfig` maps onto qdrant-edge's config objects (:meth:`QuantizationConfig.to_edge`,
:class:`~embedopt.stores.EdgeStore`) and onto qdrant-client's collection models (:meth:`QuantizationConfig.to_qdrant`,
:class:`~embedopt.stores.QdrantStore` against a server or cluster), so moving from the in-process engine to a
Qdrant server is a change of store class with the same config. :class:`HnswConfig` does the same for the graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["HnswConfig", "QuantizationConfig", "QuantizationKind"]

QuantizationKind = Literal["none", "binary", "scalar", "product"]
QueryEncoding = Literal["default", "binary", "scalar4", "scalar8"]

_BITS_EDGE = {1: "OneBit", 1.5: "OneAndHalfBits", 2: "TwoBits"}
_BITS_CLIENT = {1: "ONE_BIT", 1.5: "ONE_AND_HALF_BITS", 2: "TWO_BITS"}
_QUERY_EDGE = {"default": "Default", "binary": "Binary", "scalar4": "Scalar4Bits", "scalar8": "Scalar8Bits"}
_QUERY_CLIENT = {"default": "DEFAULT", "binary": "BINARY", "scalar4": "SCALAR4BITS", "scalar8": "SCALAR8BITS"}
_COMPRESSIONS = (4, 8, 16, 32, 64)


@dataclass(frozen=True)
class QuantizationConfig:
    """How the vectors are quantized for the first pass of a search (the originals stay for rescoring).

    Args:
        kind: ``binary`` (1 bit a dimension, or 1.5/2 with ``bits``), ``scalar`` (int8), ``product`` (PQ) or
            ``none`` (float only).
        bits: binary encoding: 1, 1.5 or 2 bits a dimension (more bits, better ranking, more RAM).
        query_encoding: how a query is encoded against binary codes: ``default`` (the engine's choice),
            ``binary``, ``scalar4`` or ``scalar8`` (asymmetric: finer query, same codes).
        quantile: scalar int8 range: the quantile of values kept (outliers clipped).
        compression: product quantization's compression ratio (4, 8, 16, 32 or 64).
        always_ram: keep the quantized codes in RAM (the originals may stay on disk).
        oversample: default search oversampling: the quantized pass keeps ``k * oversample`` candidates.
        rescore: default for rescoring those candidates with the original vectors.
    """

    kind: QuantizationKind = "binary"
    bits: float = 1
    query_encoding: QueryEncoding = "default"
    quantile: float | None = 0.99
    compression: int = 16
    always_ram: bool = True
    oversample: float = 4.0
    rescore: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("none", "binary", "scalar", "product"):
            raise ConfigError(f"kind must be 'none', 'binary', 'scalar' or 'product', got {self.kind!r}")
        if self.bits not in _BITS_EDGE:
            raise ConfigError(f"bits must be 1, 1.5 or 2 (binary encodings), got {self.bits!r}")
        if self.query_encoding not in _QUERY_EDGE:
            raise ConfigError(f"query_encoding must be one of {list(_QUERY_EDGE)}, got {self.query_encoding!r}")
        if self.compression not in _COMPRESSIONS:
            raise ConfigError(f"compression must be one of {_COMPRESSIONS}, got {self.compression!r}")
        if self.quantile is not None and not 0.5 <= self.quantile <= 1.0:
            raise ConfigError(f"quantile must lie in [0.5, 1], got {self.quantile}")
        if self.oversample < 1:
            raise ConfigError(f"oversample must be >= 1, got {self.oversample}")

    @classmethod
    def of(cls, value: QuantizationConfig | str | None) -> QuantizationConfig:
        """A config from itself, or from the short names ``binary``, ``binary-1.5bit``, ``binary-2bit``,
        ``scalar``/``int8``, ``product``, ``none``."""
        if isinstance(value, QuantizationConfig):
            return value
        names: dict[str | None, QuantizationConfig] = {
            None: cls("none"), "none": cls("none"), "binary": cls("binary"), "binary-1.5bit": cls("binary", bits=1.5),
            "binary-2bit": cls("binary", bits=2), "scalar": cls("scalar"), "int8": cls("scalar"),
            "product": cls("product")}
        if value not in names:
            raise ConfigError(f"quantization must be a QuantizationConfig or one of {sorted(n for n in names if n)}, "
                              f"got {value!r}")
        return names[value]

    @property
    def label(self) -> str:
        """A short name: ``binary``, ``binary-2bit``, ``scalar``, ``product-x16``, ``none``."""
        if self.kind == "binary" and self.bits != 1:
            return f"binary-{self.bits}bit"
        if self.kind == "product":
            return f"product-x{self.compression}"
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantizationConfig:
        return cls(**data)

    # ------------------------------------------------------------------------------------------ qdrant-edge
    def to_edge(self, qe: Any) -> Any:
        """The ``qdrant_edge`` quantization config (``None`` for ``none``)."""
        if self.kind == "binary":
            return qe.BinaryQuantizationConfig(
                always_ram=self.always_ram, encoding=getattr(qe.BinaryQuantizationEncoding, _BITS_EDGE[self.bits]),
                query_encoding=getattr(qe.BinaryQuantizationQueryEncoding, _QUERY_EDGE[self.query_encoding]))
        if self.kind == "scalar":
            return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=self.quantile,
                                               always_ram=self.always_ram)
        if self.kind == "product":
            return qe.ProductQuantizationConfig(compression=getattr(qe.CompressionRatio, f"X{self.compression}"),
                                                always_ram=self.always_ram)
        return None

    # --------------------------------------------------------------------------------------- qdrant-client
    def to_qdrant(self, m: Any) -> Any:
        """The ``qdrant_client.models`` quantization config of a server collection (``None`` for ``none``)."""
        if self.kind == "binary":
            return m.BinaryQuantization(binary=m.BinaryQuantizationConfig(
                always_ram=self.always_ram, encoding=getattr(m.BinaryQuantizationEncoding, _BITS_CLIENT[self.bits]),
                query_encoding=getattr(m.BinaryQuantizationQueryEncoding, _QUERY_CLIENT[self.query_encoding])))
        if self.kind == "scalar":
            return m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8,
                                                                         quantile=self.quantile,
                                                                         always_ram=self.always_ram))
        if self.kind == "product":
            return m.ProductQuantization(product=m.ProductQuantizationConfig(
                compression=getattr(m.CompressionRatio, f"X{self.compression}"), always_ram=self.always_ram))
        return None

    # ------------------------------------------------------------------------------------------- searching
    def search_params(self, m: Any, *, oversample: float | None = None, rescore: bool | None = None,
                      hnsw_ef: int | None = None, exact: bool = False) -> Any:
        """``SearchParams`` for one search, from ``m``: ``qdrant_client.models`` or the ``qdrant_edge`` module
        (their SearchParams and QuantizationSearchParams take the same arguments)."""
        quant = None
        if self.kind != "none":
            quant = m.QuantizationSearchParams(ignore=False, rescore=self.rescore if rescore is None else rescore,
                                               oversampling=float(oversample or self.oversample))
        return m.SearchParams(hnsw_ef=hnsw_ef, exact=exact, quantization=quant)


@dataclass(frozen=True)
class HnswConfig:
    """The HNSW graph: ``m`` edges a node, ``ef_construct`` candidates while building, ``ef`` while searching
    (``None``: the engine's default), and below ``full_scan_threshold`` KB of vectors a segment is scanned."""

    m: int = 16
    ef_construct: int = 100
    ef: int | None = None
    full_scan_threshold: int = 10_000
    max_indexing_threads: int = 0

    def to_edge(self, qe: Any) -> Any:
        return qe.HnswIndexConfig(m=self.m, ef_construct=self.ef_construct,
                                  full_scan_threshold=self.full_scan_threshold,
                                  max_indexing_threads=self.max_indexing_threads)

    def to_qdrant(self, m: Any) -> Any:
        return m.HnswConfigDiff(m=self.m, ef_construct=self.ef_construct,
                                full_scan_threshold=self.full_scan_threshold,
                                max_indexing_threads=self.max_indexing_threads)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
