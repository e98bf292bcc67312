"""scCRAFT: adversarial multi-domain adaptation with a dual-resolution triplet loss (He et al. 2025).

Examples
--------
>>> from scvi_ext.sccraft import SCCRAFT, multi_resolution_cluster
>>> multi_resolution_cluster(adata)  # doctest: +SKIP
>>> SCCRAFT.setup_anndata(adata, batch_key="batch")  # doctest: +SKIP
>>> SCCRAFT(adata).train()  # doctest: +SKIP
"""

from __future__ import annotations

from ._clustering import multi_resolution_cluster as cluster_pseudo_labels
from ._constants import DEFAULTS, OBS_KEYS, OBSM_KEYS, REGISTRY_KEYS_SCCRAFT
from ._integrate import multi_resolution_cluster, obtain_embeddings, run_sccraft, train_integration_model
from ._model import SCCRAFT, SCCRAFTTrainingPlan
from ._module import SCCRAFTDecoder, SCCRAFTEncoder, SCCRAFTModule
from ._sampler import BalancedBatchDataModule, BalancedBatchSampler

__all__ = [
    "DEFAULTS",
    "OBSM_KEYS",
    "OBS_KEYS",
    "REGISTRY_KEYS_SCCRAFT",
    "SCCRAFT",
    "BalancedBatchDataModule",
    "BalancedBatchSampler",
    "SCCRAFTDecoder",
    "SCCRAFTEncoder",
    "SCCRAFTModule",
    "SCCRAFTTrainingPlan",
    "cluster_pseudo_labels",
    "multi_resolution_cluster",
    "obtain_embeddings",
    "run_sccraft",
    "train_integration_model",
]
