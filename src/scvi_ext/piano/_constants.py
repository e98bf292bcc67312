"""Keys and defaults of the PIANO model (spec ``piano.md`` §1.6, §5)."""

from __future__ import annotations

from typing import NamedTuple


class _PianoKeys(NamedTuple):
    LATENT: str = "X_piano"  # obsm key of the embedding
    COUNTERFACTUAL: str = "piano_counterfactual"  # layers key of counterfactual expression
    UNLABELED: str = "Unknown"  # default value giving an all-zero covariate block (§1.1)
    SCALE_CONTINUOUS: str = "scale_continuous"  # setup argument name (kept in the registry)
    UNLABELED_ARG: str = "unlabeled_category"
    MARGINAL: str = "marginal"


class _PianoDefaults(NamedTuple):
    N_HIDDEN: int = 256
    N_LAYERS: int = 3
    N_LATENT: int = 32
    DROPOUT: float = 0.1
    BN_EPS: float = 1e-5
    BN_MOMENTUM: float = 0.1
    VAR_EPS: float = 1e-5  # floor of the posterior s.d.
    LR: float = 2e-4
    WEIGHT_DECAY: float = 0.0
    BATCH_SIZE: int = 128
    MAX_EPOCHS: int = 200
    MIN_TRAIN_STEPS: int = 1000  # scvi-ext: small data trains for more epochs (see default_max_epochs)
    MAX_KL_WEIGHT: float = 1.0
    MIN_KL_WEIGHT: float = 0.0
    N_EPOCHS_KL_WARMUP: int = 400  # paper: beta reaches 1 after 400 epochs, i.e. 0.5 at epoch 200 (§2.1)
    LIB_FLOOR: float = 200.0
    RHO_FLOOR: float = 1e-8
    MU_MIN: float = 1e-8
    MU_MAX: float = 2e4
    ETA_CLIP: float = 20.0
    PSI_CLIP: float = 20.0
    DENSE_MEMORY_FRACTION: float = 0.5  # dense data on device iff it takes < 50 % of free memory (§5.1)
    EARLY_STOPPING_MIN_DELTA: float = 1.0
    EARLY_STOPPING_PATIENCE: int = 5


PIANO_KEYS = _PianoKeys()
PIANO_DEFAULTS = _PianoDefaults()

DISTRIBUTIONS = ("nb", "zinb")
PARAMETERIZATIONS = ("ksi-psi", "mu-theta")
DATA_MODES = ("auto", "dense", "csr", "host")
HISTORY_KEYS = (
    "train_loss",
    "elbo_train",
    "reconstruction_loss_train",
    "kl_local_train",
    "kl_global_train",
    "kl_weight",
)
