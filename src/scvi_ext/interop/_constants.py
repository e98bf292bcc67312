"""Keys and defaults of the R bridge (:mod:`scvi_ext.interop`)."""

from __future__ import annotations

from typing import NamedTuple

#: The five methods of the suite, in the order the R package lists them.
SUITE_METHODS: tuple[str, ...] = ("piano", "sysvi", "sccraft", "uniport", "scbiot")

#: Trainable scvi-tools model classes by method name, as ``"module:Class"``. A method lands with one line here;
#: a module that exists but lacks the class name is searched for its single ``BaseModelClass`` subclass.
MODEL_CLASSES: dict[str, str] = {
    "scvi": "scvi.model:SCVI",
    "piano": "scvi_ext.piano:PIANO",
    "sysvi": "scvi_ext.sysvi:SysVI",
    "sccraft": "scvi_ext.sccraft:SCCRAFT",
    "uniport": "scvi_ext.uniport:UniPort",
    "scbiot": "scvi_ext.scbiot:SCBIOT",
}


#: Methods whose query mapping the bridge cannot do generically yet, with the reason.
QUERY_UNSUPPORTED: dict[str, str] = {}


class _Files(NamedTuple):
    SIDECAR: str = "scviext_r.json"  # what RunScviExt recorded next to the scvi-tools model
    REFERENCE_LATENT: str = "reference_latent.npy"  # reference embedding for kNN label transfer


class _Layers(NamedTuple):
    COUNTS: str = "counts"
    DATA: str = "data"


class _Keys(NamedTuple):
    EMBEDDING: str = "embedding"
    DIMS: str = "dims"
    CELLS: str = "cells"
    METHOD: str = "method"
    INFO: str = "info"
    LABELS: str = "labels"
    CONFIDENCE: str = "confidence"


FILES = _Files()
LAYERS = _Layers()
KEYS = _Keys()

#: Neighbours used by the kNN label transfer of :func:`map_query_from_r`.
LABEL_TRANSFER_K: int = 15
#: Query batch name used when the query has no batch column.
QUERY_BATCH: str = "query"
