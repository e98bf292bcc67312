"""Reusable torch blocks for the integration models: gradient reversal, a batch discriminator,
latent priors (standard normal, VampPrior) and count log-likelihoods.

Examples
--------
>>> from scvi_ext.nn import BatchDiscriminator, make_prior
>>> disc = BatchDiscriminator(n_input=10, n_batches=3)
>>> prior = make_prior("standard_normal", n_latent=10)
"""

from __future__ import annotations

from ._discriminator import ADVERSARIAL_LOSSES, BatchDiscriminator
from ._distributions import nb_log_prob, nb_log_prob_logits, zinb_log_prob
from ._grl import GradientReversal, grad_reverse
from ._priors import (
    PRIOR_NAMES,
    LatentPrior,
    StandardNormalPrior,
    VampPrior,
    make_prior,
    select_pseudoinput_indices,
)

__all__ = [
    "ADVERSARIAL_LOSSES",
    "PRIOR_NAMES",
    "BatchDiscriminator",
    "GradientReversal",
    "LatentPrior",
    "StandardNormalPrior",
    "VampPrior",
    "grad_reverse",
    "make_prior",
    "nb_log_prob",
    "nb_log_prob_logits",
    "select_pseudoinput_indices",
    "zinb_log_prob",
]
