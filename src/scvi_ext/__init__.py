"""scvi-ext: single-cell integration methods as scvi-tools models.

Heavy dependencies (torch, scvi-tools, scanpy) are imported lazily, so ``import scvi_ext`` is fast;
submodules and model classes load on first attribute access.

Examples
--------
>>> import scvi_ext
>>> scvi_ext.__version__  # doctest: +SKIP
'0.1.0.dev0'
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("scvi-ext")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

_SUBMODULES = (
    "benchmark",
    "datasets",
    "methods",
    "metrics",
    "neighbors",
    "nn",
    "ot",
    "piano",
    "plotting",
    "sccraft",
    "scbiot",
    "sysvi",
    "train",
    "uniport",
)
# Model classes, added here by each method as it lands: name -> module path.
_MODELS: dict[str, str] = {
    "PIANO": "scvi_ext.piano",
    "SCCRAFT": "scvi_ext.sccraft",
    "SysVI": "scvi_ext.sysvi",
    "UniPort": "scvi_ext.uniport",
    "SCBIOT": "scvi_ext.scbiot",
}

__all__ = [*_SUBMODULES, *_MODELS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _MODELS:
        return getattr(importlib.import_module(_MODELS[name]), name)
    raise AttributeError(f"module 'scvi_ext' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
