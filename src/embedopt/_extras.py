"""Optional dependencies: import them lazily, and fail with an error that names the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingExtraError


def require(module: str, *, extra: str, feature: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install "embedopt[extra]"``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if importlib.util.find_spec(module.split(".")[0]) is not None and exc.name != module.split(".")[0]:
            raise  # the package is there but itself broken: show the real error, not a misleading hint
        raise MissingExtraError(extra, package or module.split(".")[0], feature) from exc


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
