"""scBIOT: batch-aware unbalanced-OT refinement (part A) and a dual-view prototype VAE (part B).

Part A (:func:`integrate_ot`, :func:`integrate`) works on any embedding (PCA, LSI, a model's latent); part B
(:class:`SCBIOT`) models the OT output; :func:`transfer_labels` transfers labels on the integrated embedding;
:func:`tfidf` / :func:`lsi` prepare ATAC peaks; :func:`build_query_map` / :func:`project_query` let a trained
:class:`SCBIOT` embed query cells given as counts.

Examples
--------
>>> import scvi_ext.scbiot as scb
>>> metrics = scb.integrate(adata, "rna", obsm_key="X_pca", batch_key="batch")  # doctest: +SKIP
"""

from __future__ import annotations

from ._atac import lsi, rna_atac_coembedding, tfidf
from ._integrate import run_scbiot
from ._model import SCBIOT, pseudo_labels
from ._module import SCBIOTVAE
from ._ot_refine import (
    batch_separation,
    guard_ratios,
    integrate,
    integrate_ot,
    rare_mask,
    smooth_shift,
    uot_barycentric,
)
from ._query import build_query_map, project_query
from ._trainingplan import BalancedBatchSampler, BalancedDataSplitter, SCBIOTTrainingPlan
from ._transfer import transfer_labels

__all__ = [
    "SCBIOT",
    "SCBIOTVAE",
    "BalancedBatchSampler",
    "BalancedDataSplitter",
    "SCBIOTTrainingPlan",
    "batch_separation",
    "build_query_map",
    "guard_ratios",
    "integrate",
    "integrate_ot",
    "lsi",
    "project_query",
    "pseudo_labels",
    "rare_mask",
    "rna_atac_coembedding",
    "run_scbiot",
    "smooth_shift",
    "tfidf",
    "transfer_labels",
    "uot_barycentric",
]
