"""Version shims: the one place that touches scvi-tools internals that differ (or may) between 1.4 and 1.5.

Everything else in the suite imports these names from here, so a change in scvi-tools is fixed once.
"""

from __future__ import annotations

try:  # scvi-tools 1.4.x and 1.5.x keep these private helpers at the same path
    from scvi.distributions._negative_binomial import log_nb_positive
    from scvi.train._trainingplans import _compute_kl_weight as compute_kl_weight
except ImportError as err:  # pragma: no cover - only on an unsupported scvi-tools
    raise ImportError(
        "scvi-ext needs scvi-tools>=1.4.2,<1.6 (private helpers moved); reinstall with pip install 'scvi-tools>=1.4.2,<1.6'"
    ) from err

__all__ = ["compute_kl_weight", "log_nb_positive"]
