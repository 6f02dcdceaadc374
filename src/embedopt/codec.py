"""What becomes of a full-precision vector on its way out: truncate (Matryoshka) → renormalize → quantize.

A :class:`Codec` holds those settings and applies them, the same way wherever vectors are derived: in the
:class:`~embedopt.Embedder` (what a caller gets), in the embedded store (what it keeps) and in the evaluation
grid (what it scores). The cache always keeps the full vector, so one entry serves every codec.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np

from .errors import CalibrationError, ConfigError
from .matryoshka import check_dim, truncate
from .quantization import Calibration, Precision, bytes_per_vector, check_precision, quantize

__all__ = ["VALUE_PRECISIONS", "Codec", "Precision", "ValuePrecision", "check_value_precision"]

#: The precisions whose vectors are still one number per dimension, so a framework that wants lists of floats
#: can take them (binary codes pack 8 dimensions a byte and belong in a store). The adapters restrict the one
#: precision vocabulary to these.
ValuePrecision = Literal["float32", "float16", "int8"]
VALUE_PRECISIONS: tuple[str, ...] = get_args(ValuePrecision)


@dataclass(frozen=True)
class Codec:
    """Derive vectors of ``dim`` dimensions at ``precision`` from full-precision ones.

    Args:
        dim: the Matryoshka dimension kept (a prefix of the model's vector).
        normalize: renormalize after truncation (and the full vectors are unit length too).
        precision: ``float32``, ``float16``, ``int8``/``uint8`` (needs ``calibration``), ``binary``/``ubinary``.
        calibration: int8/uint8 ranges fitted at ``dim`` on documents of the same embedding space.
    """

    dim: int
    normalize: bool = True
    precision: Precision = "float32"
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        check_dim(self.dim, self.dim)
        check_precision(self.precision)
        if self.precision in ("int8", "uint8") and self.calibration is None:
            raise CalibrationError(
                f"precision={self.precision!r} needs calibration=...: fit it once on a sample of documents "
                f"(Embedder(provider, dim={self.dim}).calibrate(texts), or Calibration.fit(vectors)) and save it "
                "with the index")
        if self.calibration is not None and self.calibration.dim != self.dim:
            raise CalibrationError(f"calibration was fitted on {self.calibration.dim}-d vectors but this codec "
                                   f"outputs {self.dim}-d; refit it at dim={self.dim}")

    @classmethod
    def for_model(cls, native_dim: int, *, dim: int | None = None, normalize: bool = True,
                  precision: Precision = "float32", calibration: Calibration | None = None) -> Codec:
        """A codec for a model of ``native_dim`` dimensions (``dim=None`` keeps them all)."""
        if dim is not None:
            check_dim(dim, native_dim)
        return cls(native_dim if dim is None else int(dim), normalize, precision, calibration)

    def derive(self, full: np.ndarray) -> np.ndarray:
        """Full vectors (2-D, or one 1-D vector) → ``dim`` dimensions at ``precision``."""
        return quantize(self.derive_float(full), self.precision, calibration=self.calibration)

    def derive_float(self, full: np.ndarray) -> np.ndarray:
        """Full vectors → float32 at ``dim`` (renormalized when ``normalize``), before quantization."""
        full = np.asarray(full, dtype=np.float32)
        if full.shape[-1] == self.dim:
            return full
        return truncate(full, self.dim, normalize=self.normalize)

    @property
    def bytes_per_vector(self) -> int:
        return bytes_per_vector(self.dim, self.precision)

    def with_precision(self, precision: Precision, calibration: Calibration | None = None) -> Codec:
        """The same truncation at another precision (int8/uint8 keep this codec's calibration unless given)."""
        return replace(self, precision=precision, calibration=calibration or self.calibration)

    def check_calibration(self, fingerprint_id: str) -> None:
        """Refuse a calibration fitted in another embedding space than ``fingerprint_id``'s documents."""
        cal = self.calibration
        if cal is not None and cal.fingerprint_id is not None and cal.fingerprint_id != fingerprint_id:
            raise CalibrationError(f"calibration was fitted for {cal.fingerprint_id}, not {fingerprint_id}: another "
                                   "model or settings; refit it with this Embedder's calibrate()")

    def fit_calibration(self, full: np.ndarray, *, fingerprint_id: str | None = None,
                        min_samples: int | None = None) -> Calibration:
        """int8/uint8 ranges fitted on ``full`` document vectors, at this codec's ``dim``."""
        kwargs = {} if min_samples is None else {"min_samples": min_samples}
        return Calibration.fit(self.derive_float(full), fingerprint_id=fingerprint_id, **kwargs)


def check_value_precision(precision: str) -> str:
    """``precision`` when it is one of :data:`VALUE_PRECISIONS`, else a ConfigError saying why."""
    if precision not in VALUE_PRECISIONS:
        raise ConfigError(f"precision must be one of {VALUE_PRECISIONS} here (values a framework takes as floats), "
                          f"got {precision!r}; binary codes belong in a store (QuantizedIndex, Qdrant's binary "
                          "quantization)")
    return precision
