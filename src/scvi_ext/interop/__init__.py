"""Bridges to R: the functions the ``scviext`` R package calls, and Seurat/SCE file readers and writer.

:func:`integrate_from_r` and :func:`map_query_from_r` take plain vectors from reticulate (a ``dgCMatrix``'s
slots and meta.data columns) and return plain lists, so no NumPy array ever crosses to R.
:func:`read_r` / :func:`write_seurat` use rpy2 (``pip install 'scvi-ext[r]'``, ``rpy2<3.6``) and need R.

Examples
--------
>>> from scvi_ext.interop import get_model_class
>>> get_model_class("scvi").__name__
'SCVI'
"""

from __future__ import annotations

from ._bridge import (
    DATA_METHODS,
    anndata_from_r,
    environment_info,
    integrate_anndata,
    integrate_from_r,
    map_query_anndata,
    map_query_from_r,
    read_model_info,
    sparse_from_r,
    transfer_labels,
)
from ._constants import FILES, MODEL_CLASSES, SUITE_METHODS
from ._models import available_models, get_model_class
from ._rio import R_SUFFIXES, read_r, write_seurat

__all__ = [
    "DATA_METHODS",
    "FILES",
    "MODEL_CLASSES",
    "R_SUFFIXES",
    "SUITE_METHODS",
    "anndata_from_r",
    "available_models",
    "environment_info",
    "get_model_class",
    "integrate_anndata",
    "integrate_from_r",
    "map_query_anndata",
    "map_query_from_r",
    "read_model_info",
    "read_r",
    "sparse_from_r",
    "transfer_labels",
    "write_seurat",
]
