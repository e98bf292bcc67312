"""Keys, presets and fixed constants of scBIOT (spec: ../shared/specs/scbiot.md)."""

from __future__ import annotations

from typing import NamedTuple


class _Keys(NamedTuple):
    OT_OUT: str = "X_scbiot_ot"  # default obsm key of integrate_ot's output
    LATENT: str = "X_scbiot"  # default obsm key of the SCBIOT model's latent
    PSEUDO: str = "leiden_scbiot_ot"  # default obs key of the OT pseudo-labels
    LSI: str = "X_lsi"
    PRED_LABEL: str = "pred_cell_type"
    PRED_CONF: str = "pred_confidence"
    UNS: str = "scbiot"  # adata.uns entry with the OT metrics
    QUERY_MAP: str = (
        "scbiot_query_map"  # adata.uns entry read by SCBIOT (what a query needs; build_query_map)
    )
    LSI_PROJECTION: str = (
        "scbiot_lsi"  # adata.uns entry written by lsi() (TF-IDF + SVD projection of a query)
    )
    COUNTS_LAYER: str = "counts"


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"
    BATCH_KEY: str = "batch"
    LABELS_KEY: str = "labels"


class _MetricKeys(NamedTuple):
    MIX: str = "mix"
    OVERLAP0: str = "overlap0"
    STRAIN: str = "strain"
    TW: str = "tw"
    IT: str = "it"


class _QueryKinds(NamedTuple):
    PCA: str = "pca"  # log-normalised counts -> centred PCA loadings
    LSI: str = "lsi"  # peak counts -> TF-IDF -> SVD components (lsi())


class _Reference(NamedTuple):
    LARGEST: str = "largest"
    UNION: str = "union"


class _Prealign(NamedTuple):
    AUTO: str = "auto"
    NONE: str = "none"
    MEAN: str = "mean"


KEYS = _Keys()
REGISTRY_KEYS = _RegistryKeys()
METRIC_KEYS = _MetricKeys()
REFERENCE = _Reference()
QUERY_KINDS = _QueryKinds()
QUERY_MAP_K = 15  # reference neighbours whose OT displacement a query cell takes
PREALIGN = _Prealign()

UNLABELED_ALIASES = frozenset({"unknown", "unlabeled", "unlabelled", "unk", "na", "nan", "none", ""})

# Hard-coded constants of the v1.0.7 reference that the paper does not list (spec §2.13, §8).
BRIDGE_DAMP = 0.35  # alpha_i = s * (1 - 0.35 beta)
BRIDGE_DAMP_BALANCED = 0.20
GLOBAL_DAMP = 0.12  # shift *= (1 - 0.12 beta)
SHARPEN_BRIDGE_DAMP = 0.4
SHARPEN_BRIDGE_GATE = 0.7
SHARPEN_BRIDGE_PUSH = 0.6
SHARPEN_MARGIN_TEMP = 0.8
SHARPEN_SEED_OFFSET = 31
BATCH_SEED_OFFSET = 7
RELATIVE_OVERLAP_PENALTY = 0.45
GUARD_ROUNDS = 2
DENSITY_K = 15
# integrate_ot (knn_backend="auto", CPU) searches among BLAS_KNN_MIN_DATA..BLAS_KNN_MAX_DATA points with the exact
# "blas" backend of scvi_ext.neighbors.knn instead of faiss (benchmarks/results/scbiot/knn_exact.md: faiss / blas
# = 0.7x at 30 points, ~1.0x at 64, 1.4-2.6x at 128, 2.5-3.8x at 250-500, 1.6-1.8x at 700, 1.0-1.5x at 1000)
BLAS_KNN_MIN_DATA = 128
BLAS_KNN_MAX_DATA = 1024
ENTROPY_K = 15
RARE_QUANTILE = 0.85
CLIP_BIG = 50.0
SINKHORN_ITERS = 1000
SINKHORN_TOL = 1e-6
OT_SOLVERS = ("log", "reference")  # exact log-domain UOT | emulation of the paper code's float32 scaling
KMEANS_BACKENDS = (
    "minibatch",
    "kmeanspp",
    "faiss",
)  # sklearn mini-batch (paper code) | own k-means++ + Lloyd | faiss
LABEL_BRIDGE_DAMP = 0.20
# Paired (two-view) mode, spec §7.5 (v1.0.7 ``integrate_paired(mode="ufgw_barycenter")``).
PAIRED_OUTER = 5  # outer barycentre rounds per iteration
PAIRED_STRUCT_K = 10  # neighbours of the structural signatures
PAIRED_W_VIEW1 = 0.6  # feature-cost weight of the base view (view 2: 0.4)
PAIRED_LAMBDA = (0.3, 0.7)  # structure weight annealed over the outer rounds
PAIRED_VIEW_KEYS = ("X_pca", "X_lsi")

# Paper / v1.0.7 ``integrate_ot`` defaults (spec §2.13) and the presets of ``integrate``.
OT_DEFAULTS: dict = {
    "reference": REFERENCE.LARGEST,
    "K_ref": 1024,
    "K_batch": 448,
    "reg": 0.028,
    "reg_m": 0.40,
    "sharpen": 0.22,
    "K_pseudo": 28,
    "pull": 0.78,
    "push": 0.34,
    "lambda0_hi": 0.52,
    "lambda0_lo": 0.38,
    "smin_bulk": 0.72,
    "smax_bulk": 1.65,
    "smin_bridge": 0.88,
    "smax_bridge": 1.24,
    "max_step_local": 1.05,
    "step_lo": 0.78,
    "step_hi": 0.96,
    "q_start": 0.80,
    "q_end": 0.90,
    "overlap0_lo": 0.60,
    "overlap0_hi": 0.68,
    "w_overlap": 0.18,
    "penalty_gamma": 1.4,
    "w_strain": 1.0,
}

PRESETS: dict[str, dict] = {
    "rna": {
        "reference": REFERENCE.UNION,
        "K_ref": 1024,
        "K_batch": 448,
        "reg": 0.03,
        "reg_m": 0.40,
        "sharpen": 0.15,
        "K_pseudo": 24,
        "pull": 0.75,
        "push": 0.30,
        "lambda0_hi": 0.50,
        "lambda0_lo": 0.35,
        "smin_bulk": 0.75,
        "smax_bulk": 1.65,
        "smin_bridge": 0.85,
        "smax_bridge": 1.25,
        "max_step_local": 1.0,
        "step_lo": 0.75,
        "step_hi": 0.95,
        "q_start": 0.80,
        "q_end": 0.90,
        "overlap0_lo": 0.60,
        "overlap0_hi": 0.70,
        "w_overlap": 0.20,
        "penalty_gamma": 1.5,
        "w_strain": 1.0,
    },
    "atac": {
        "reference": REFERENCE.LARGEST,
        "K_ref": 1024,
        "K_batch": 512,
        "reg": 0.036,
        "reg_m": 0.30,
        "sharpen": 0.10,
        "K_pseudo": 15,
        "pull": 0.70,
        "push": 0.20,
        "lambda0_hi": 0.58,
        "lambda0_lo": 0.42,
        "smin_bulk": 0.78,
        "smax_bulk": 1.50,
        "smin_bridge": 0.92,
        "smax_bridge": 1.08,
        "max_step_local": 0.80,
        "step_lo": 0.70,
        "step_hi": 0.82,
        "q_start": 0.78,
        "q_end": 0.885,
        "overlap0_lo": 0.64,
        "overlap0_hi": 0.73,
        "w_overlap": 0.35,
        "penalty_gamma": 1.5,
        "w_strain": 1.0,
    },
}
PRESETS["supervised"] = dict(PRESETS["rna"])
# v1.0.7 ``integrate(modality="paired")`` preset (two views; the barycentre pools every batch).
PRESETS["paired"] = {
    "obsm_key": PAIRED_VIEW_KEYS[0],
    "view_keys": PAIRED_VIEW_KEYS,
    "reference": REFERENCE.UNION,
    "K_ref": 960,
    "K_batch": 360,
    "reg": 0.034,
    "reg_m": 0.28,
    "sharpen": 0.10,
    "K_pseudo": 20,
    "pull": 0.72,
    "push": 0.24,
    "lambda0_hi": 0.56,
    "lambda0_lo": 0.44,
    "smin_bulk": 0.80,
    "smax_bulk": 1.55,
    "smin_bridge": 0.92,
    "smax_bridge": 1.14,
    "max_step_local": 0.92,
    "step_lo": 0.70,
    "step_hi": 0.88,
    "q_start": 0.78,
    "q_end": 0.88,
    "overlap0_lo": 0.64,
    "overlap0_hi": 0.74,
    "w_overlap": 0.14,
    "w_strain": 1.1,
    "penalty_gamma": 1.6,
}
MODALITIES = ("rna", "atac", "supervised", "paired")

# Part B (dual-view prototype VAE), spec §4.8.
VAE_DEFAULTS: dict = {
    "proto_tau": 0.08,
    "cosface_m": 0.15,
    "repulse_target": 0.1,
    "conf_thr": 0.8,
    "label_eps": 0.1,
    "proto_ema_m": 0.95,
    "lam_clust": 1.0,
    "lam_center": 1.0,
    "lam_repulse": 1.0,
    "lam_margin": 1.5,
    "lam_sup": 1.0,
    "lam_cons": 1.5,
    "kl_view1": 0.001,
    "kl_view2": 0.1,
}
CENTER_RAMP_EPOCHS = 8
SUP_RAMP_EPOCHS = 5
# LR schedule: linear warm-up of LR_WARMUP_STEPS optimiser steps (v1.0.7), bounded by LR_WARMUP_MAX_FRACTION of the
# run's steps (package deviation: a run shorter than the warm-up never reached the LR and stayed undertrained,
# benchmarks/results/scbiot/latent_quality.md; runs of >= 1000 steps are unchanged), then cosine to 0.
LR_WARMUP_STEPS = 100
LR_WARMUP_MAX_FRACTION = 0.1
QUANTILE_CLIP = 5.199337582605575  # sklearn's normal clip: ndtri(1 - 1e-7)
VIEW2_SHRINK_N = 100.0
VIEW2_MIN_CELLS = 10
VIEW2_GLOBAL_MIX = 0.1
VIEW2_CLIP = 5.0
