"""What makes two vectors comparable.

A :class:`Fingerprint` names an embedding *space* as precisely as the vectors depend on it: which provider and
model produced them, which revision of the weights, whether they embed a query or a document, which prompt was
prepended, the native dimension and whether they were normalized. Two vectors may be compared, cached under one
key or stored in one index only when their fingerprints agree. Its :attr:`~Fingerprint.id` is stable across
processes and machines, and safe to put in a cache key (it holds no secret and no colon).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Literal

from .errors import ConfigError

__all__ = ["FINGERPRINT_VERSION", "Fingerprint", "InputType"]

InputType = Literal["query", "document"]
INPUT_TYPES: tuple[InputType, ...] = ("query", "document")

#: Bumped when the meaning of a field changes, so that old fingerprints stop matching new ones.
FINGERPRINT_VERSION = 1

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Fingerprint:
    """An immutable description of an embedding space; see the module docstring."""

    provider: str
    model: str
    revision: str
    input_type: InputType
    prompt: str
    dim: int
    normalize: bool

    def __post_init__(self) -> None:
        if self.input_type not in INPUT_TYPES:
            raise ConfigError(f"input_type must be one of {INPUT_TYPES}, got {self.input_type!r}")
        if self.dim <= 0:
            raise ConfigError(f"dim must be positive, got {self.dim}")

    def _digest(self, *, with_provider: bool) -> str:
        fields = asdict(self)
        if not with_provider:
            fields.pop("provider")
        fields["v"] = FINGERPRINT_VERSION
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    @cached_property
    def id(self) -> str:
        """A stable, readable identifier: ``{provider}.{model}.{input_type}.{hash of every field}``."""
        model = _SLUG.sub("_", self.model.strip("/"))[-60:]
        return f"{self.provider}.{model}.{self.input_type}.{self._digest(with_provider=True)}"

    @cached_property
    def space_id(self) -> str:
        """Like :attr:`id` but without the provider: the same open model served by two providers shares it."""
        return self._digest(with_provider=False)

    def with_input_type(self, input_type: InputType) -> Fingerprint:
        return replace(self, input_type=input_type)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "id": self.id, "version": FINGERPRINT_VERSION}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Fingerprint:
        fields = {k: data[k] for k in ("provider", "model", "revision", "input_type", "prompt", "dim", "normalize")}
        fp = cls(**fields)  # type: ignore[arg-type]
        if "id" in data and data["id"] != fp.id:
            raise ConfigError(
                f"fingerprint id {data['id']!r} does not match its fields (recomputed {fp.id!r}); "
                "it was written by another fingerprint version or edited by hand"
            )
        return fp
