"""sysVI: cVAE + VampPrior + latent cycle-consistency for substantial batch effects ("systems").

Hrovatin, Moinfar et al., BMC Genomics 26:974 (2025), doi:10.1186/s12864-025-12126-3.
The VampPrior (:class:`scvi_ext.nn.VampPrior`) and the cycle plan (:class:`scvi_ext.train.CycleTrainingPlan`,
:func:`scvi_ext.train.cycle_latent_distance`) are the suite's shared components.

Examples
--------
>>> from scvi_ext.sysvi import SysVI
>>> SysVI.setup_anndata(adata, batch_key="species", categorical_covariate_keys=["sample"])  # doctest: +SKIP
>>> model = SysVI(adata)  # doctest: +SKIP
"""

from __future__ import annotations

from ._constants import FIDELITY, LIKELIHOOD
from ._integrate import run_sysvi
from ._model import SysVI
from ._module import GaussianBlock, SysVIModule, VarianceHead, convert_reference_state_dict

__all__ = [
    "FIDELITY",
    "LIKELIHOOD",
    "GaussianBlock",
    "SysVI",
    "SysVIModule",
    "VarianceHead",
    "convert_reference_state_dict",
    "run_sysvi",
]
