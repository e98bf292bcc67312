"""Keys and defaults of the uniPort model (spec ``../shared/specs/uniport.md``)."""

from __future__ import annotations

from typing import NamedTuple


class _Keys(NamedTuple):
    # registry keys of the extra fields (scvi's REGISTRY_KEYS cover X / batch / labels / indices)
    SPECIFIC: str = "uniport_specific"
    WEIGHT: str = "uniport_weight"
    # obs / obsm / uns names written by prepare_anndata and setup_anndata
    SOURCE_OBS: str = "source"
    SPECIFIC_OBSM: str = "uniport_specific"
    INDICES_OBS: str = "_indices"
    UNS: str = "uniport"
    UNS_SOURCES: str = "sources"
    UNS_SPECIFIC_FEATURES: str = "specific_features"
    UNS_INPUT_WIDTHS: str = "input_widths"
    UNS_MODE: str = "mode"
    # extra metrics logged by the module
    OT_LOSS: str = "ot_loss"
    REC_COMMON: str = "rec_common"
    REC_SPECIFIC: str = "rec_specific"
    KL: str = "kl"


class _Modes(NamedTuple):
    HORIZONTAL: str = "h"
    VERTICAL: str = "v"
    DIAGONAL: str = "d"


class _Defaults(NamedTuple):
    N_LATENT: int = 16
    N_HIDDEN: int = 1024
    LAMBDA_S: float = 0.5
    LAMBDA_RECON: float = 1.0
    LAMBDA_KL: float = 0.5
    LAMBDA_OT: float = 1.0
    REG: float = 0.1
    REG_M: float = 1.0
    N_OUTER: int = 10
    N_INNER: int = 10
    RECON_SCALE: float = 2000.0
    COST_EPS: float = 1e-6
    BATCH_SIZE: int = 256
    LR: float = 2e-4
    WEIGHT_DECAY: float = 5e-4
    ADAM_EPS: float = 1e-8
    MAX_ITERATIONS: int = 30000
    PATIENCE: int = 30
    # early_stopping_monitor="auto": epochs with fewer steps than this use the smoothed (EMA) step loss
    ES_MIN_STEPS_PER_EPOCH: int = 10
    # the fast loop keeps X dense on the device up to this size (else CSR rows are densified per step)
    MAX_DENSE_X_BYTES: int = 2 * 2**30
    SEED: int = 124
    # a global plan bigger than this is kept in a disk-backed np.memmap instead of RAM
    MAX_DENSE_PLAN_BYTES: int = 256 * 2**20
    N_HVG: int = 2000
    PLAN_DIR: str = "ot_plan"


class _Losses(NamedTuple):
    BCE: str = "bce"
    MSE: str = "mse"
    L1: str = "l1"


class _ESMonitors(NamedTuple):
    AUTO: str = "auto"
    EPOCH: str = "epoch"
    EMA: str = "ema"


class _BNModes(NamedTuple):
    BATCH: str = "batch"
    RUNNING: str = "running"


KEYS = _Keys()
MODES = _Modes()
DEFAULTS = _Defaults()
LOSSES = _Losses()
BN_MODES = _BNModes()
ES_MONITORS = _ESMonitors()
