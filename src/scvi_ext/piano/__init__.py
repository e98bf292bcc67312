"""PIANO: NB-GLM VAE over all covariates with a fast, device-resident training loop.

Wang et al. (2025), bioRxiv 2025.11.16.686778. Spec: ``../shared/specs/piano.md``.

Examples
--------
>>> from scvi_ext.piano import PIANO
>>> PIANO.setup_anndata(adata, layer="counts", batch_key="lane")  # doctest: +SKIP
>>> model = PIANO(adata)  # doctest: +SKIP
>>> model.train(max_epochs=20)  # doctest: +SKIP
>>> z = model.get_latent_representation()  # doctest: +SKIP
"""

from __future__ import annotations

from ._constants import PIANO_DEFAULTS, PIANO_KEYS
from ._fast import choose_data_mode, expand_csr_rows, fast_train, kl_weight_at, make_resident_data
from ._integrate import run_piano
from ._model import PIANO, default_max_epochs
from ._module import PIANOModule, nb_log_prob_log_xi_psi, nb_log_prob_xi_psi, zinb_log_prob_xi_psi
from ._trainingplan import PIANOTrainingPlan

__all__ = [
    "PIANO",
    "PIANO_DEFAULTS",
    "PIANO_KEYS",
    "PIANOModule",
    "PIANOTrainingPlan",
    "choose_data_mode",
    "default_max_epochs",
    "expand_csr_rows",
    "fast_train",
    "kl_weight_at",
    "make_resident_data",
    "nb_log_prob_log_xi_psi",
    "nb_log_prob_xi_psi",
    "run_piano",
    "zinb_log_prob_xi_psi",
]
