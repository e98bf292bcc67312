"""Names used by the sysVI model: fidelity modes, likelihoods, tensor/output keys, loss metrics."""

from __future__ import annotations

from typing import NamedTuple


class _Fidelity(NamedTuple):
    REFERENCE: str = "reference"  # bit-compatible with scvi.external.SysVI (scvi-tools 1.4.2 / 1.5.1)
    PAPER: str = "paper"  # the paper / research-code semantics (sysvi.md §6 A1, A2, A3, A5)


class _Likelihood(NamedTuple):
    GAUSSIAN: str = "gaussian"  # Gaussian on log-normalised data (published)
    NB: str = "nb"  # negative binomial on raw counts (extension)


class _Keys(NamedTuple):
    # generative outputs
    PX: str = "px"
    PX_CYCLE: str = "px_cycle"
    CYCLE_BATCH: str = "cycle_batch"
    LIBRARY: str = "library"
    # inference outputs
    QZ_CYCLE: str = "qz_cycle"
    # encoder/decoder block outputs
    Q_DIST: str = "q_dist"
    Q_SAMPLE: str = "q"
    # covariate bundle
    CATEGORICAL: str = "categorical"
    CONTINUOUS: str = "continuous"
    # obs column written by setup_anndata(weight_batches=True), as in scvi-tools
    BATCH_WEIGHTS: str = "batch_weights"
    # embedding names of extra categorical covariates (scvi-tools' "cov{j}")
    EMBEDDING_PREFIX: str = "cov"


class _LossNames(NamedTuple):
    CYCLE: str = "cycle_loss"
    CYCLE_WEIGHT_KWARG: str = "z_distance_cycle_weight"
    RECONSTRUCTION_WEIGHT_KWARG: str = "reconstruction_weight"
    KL_WEIGHT_KWARG: str = "kl_weight"


FIDELITY = _Fidelity()
LIKELIHOOD = _Likelihood()
SYSVI_KEYS = _Keys()
LOSS_NAMES = _LossNames()

#: scvi-tools SysVI default cycle weight (``plan_kwargs['z_distance_cycle_weight']``).
DEFAULT_CYCLE_WEIGHT = 2.0
#: Default prior and number of VampPrior components (scvi-tools SysVI).
DEFAULT_PRIOR = "vamp"
DEFAULT_N_PRIOR_COMPONENTS = 5
