"""Keys and defaults of the scCRAFT model (sccraft.md)."""

from __future__ import annotations

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    LOW_KEY: str = "sccraft_low"  # low-resolution cluster codes (c_lo)
    HIGH_KEY: str = "sccraft_high"  # high-resolution cluster codes (c_hi)


class _ObsKeys(NamedTuple):
    LOW: str = "leiden1"  # the reference's column names, whatever the clustering method
    HIGH: str = "leiden2"
    ORIGIN: str = "sccraft_origin"  # "reference" / "query" rows of a mixed fine-tuning AnnData (§9.5)


class _Origins(NamedTuple):
    REFERENCE: str = "reference"
    QUERY: str = "query"
    QUERY_CLUSTER_PREFIX: str = "query:"  # query pseudo-labels never equal a reference cluster


class _ObsmKeys(NamedTuple):
    LATENT: str = "X_scCRAFT"  # what the reference's obtain_embeddings writes


class _UnsKeys(NamedTuple):
    CLUSTERING: str = "sccraft_clustering"  # settings of multi_resolution_cluster


class _Defaults(NamedTuple):
    N_LATENT: int = 256
    MAX_EPOCHS: int = 150
    WARMUP_EPOCHS: int = 50
    LARGE_N_OBS: int = 100_000  # above this the default epoch count scales with N (§7)
    CELLS_PER_BATCH: int = 512
    BATCH_SIZE: int = 1024
    D_STEPS: int = 10
    LR: float = 1e-3
    D_COEF: float = 0.2
    KL_COEF: float = 0.005
    COS_COEF: float = 20.0
    TRIPLET_COEF: float = 1.0
    MARGIN: float = 5.0
    N_TRIPLETS_PER_CLUSTER: int = 15
    VAR_EPS: float = 1e-4
    NB_EPS: float = 1e-8
    NLL_CLAMP: float = 1e5
    SEED: int = 22
    RESOLUTION_LOW: float = 0.5
    RESOLUTION_HIGH: float = 7.0
    N_PCS_CLUSTER: int = 50
    N_NEIGHBORS_CLUSTER: int = 15
    N_PCS_OUTPUT: int = 50
    ENCODE_BATCH_SIZE: int = 2048
    MIN_CELLS_PER_BATCH: int = 2


class _Metrics(NamedTuple):
    RECONSTRUCTION: str = "nb_nll"
    COSINE: str = "cosine_loss"
    TRIPLET: str = "triplet_loss"
    N_TRIPLETS: str = "n_triplets"


REGISTRY_KEYS_SCCRAFT = _RegistryKeys()
OBS_KEYS = _ObsKeys()
ORIGINS = _Origins()
OBSM_KEYS = _ObsmKeys()
UNS_KEYS = _UnsKeys()
DEFAULTS = _Defaults()
METRICS = _Metrics()
CLUSTER_METHODS = ("leiden", "louvain")
LEIDEN_FLAVORS = ("leidenalg", "igraph")
