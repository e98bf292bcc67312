"""uniPort (Cao et al., Nat. Commun. 13:7419, 2022): coupled VAE + minibatch unbalanced OT.

Integrates datasets that share features (mode ``h``, e.g. RNA + ATAC gene activity), paired modalities
(mode ``v``) or datasets without shared features (mode ``d``); the global OT plan gives label transfer and
spatial deconvolution. Spec: ``shared/specs/uniport.md``.

Examples
--------
>>> from scvi_ext.uniport import UniPort, prepare_anndata
>>> ad = prepare_anndata({"atac": atac_gene_activity, "rna": rna})  # doctest: +SKIP
>>> UniPort.setup_anndata(ad)  # doctest: +SKIP
>>> model = UniPort(ad)  # doctest: +SKIP
>>> model.train(max_iterations=1500, save_ot=True)  # doctest: +SKIP
"""

from __future__ import annotations

from ._constants import BN_MODES, DEFAULTS, ES_MONITORS, KEYS, LOSSES, MODES
from ._data import export_reference_inputs, prepare_anndata, prepare_mudata
from ._deconvolution import deconvolve_plan, make_pseudo_spots, proportion_scores
from ._fast import ResidentFields, fast_train
from ._integrate import run_uniport
from ._model import UniPort, label_reweight
from ._module import DSBatchNorm1d, UniPortVAE
from ._ot import GlobalPlanStore, LossEarlyStopper, UniPortTrainingPlan, uot_minibatch
from ._sampler import BalancedSourceSampler
from ._transfer import knn_transfer, plan_label_scores
from ._workflows import deconvolve_spots, transfer_labels_datasets

__all__ = [
    "BN_MODES",
    "DEFAULTS",
    "ES_MONITORS",
    "KEYS",
    "LOSSES",
    "MODES",
    "BalancedSourceSampler",
    "DSBatchNorm1d",
    "GlobalPlanStore",
    "LossEarlyStopper",
    "ResidentFields",
    "UniPort",
    "UniPortTrainingPlan",
    "UniPortVAE",
    "deconvolve_plan",
    "deconvolve_spots",
    "export_reference_inputs",
    "fast_train",
    "knn_transfer",
    "label_reweight",
    "make_pseudo_spots",
    "plan_label_scores",
    "prepare_anndata",
    "prepare_mudata",
    "proportion_scores",
    "run_uniport",
    "transfer_labels_datasets",
    "uot_minibatch",
]
