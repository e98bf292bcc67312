"""Count log-likelihoods as pure functions (thin, tested wrappers around ``scvi.distributions``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._compat import log_nb_positive


def nb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Element-wise negative-binomial log-pmf in the mean / inverse-dispersion parametrisation.

    ``log NB(x; mu, theta) = theta [log(theta+eps) - log(theta+mu+eps)] + x [log(mu+eps) - log(theta+mu+eps)]
    + lgamma(x+theta) - lgamma(theta) - lgamma(x+1)`` — scvi-tools' ``log_nb_positive`` (also scCRAFT's
    formula with ``eps = 1e-8``, sccraft.md §4 L1). Equals ``torch.distributions.NegativeBinomial(
    total_count=theta, logits=log(mu) - log(theta))`` and ``scipy.stats.nbinom(n=theta, p=theta/(theta+mu))``.

    Parameters
    ----------
    x
        Counts (float tensor, non-negative).
    mu
        Mean, ``> 0``, broadcastable with ``x``.
    theta
        Inverse dispersion (``Var = mu + mu^2 / theta``), ``> 0``; a 1-D ``(G,)`` tensor broadcasts over cells.
    eps
        Numerical floor inside the logarithms.

    Returns
    -------
    torch.Tensor
        Log-probabilities with the broadcast shape (no reduction).

    Examples
    --------
    >>> x = torch.tensor([0.0, 3.0])
    >>> nb_log_prob(x, torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0])).shape
    torch.Size([2])
    """
    return log_nb_positive(x, mu, theta, eps=eps)


def zinb_log_prob(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Element-wise zero-inflated negative-binomial log-pmf.

    ``p(x) = pi * 1[x=0] + (1 - pi) NB(x; mu, theta)`` with ``pi = sigmoid(zi_logits)``, computed with
    softplus identities for stability. Same formula as scvi-tools' ``log_zinb_positive`` (whose NB part
    is reused), but zeros are detected with ``x == 0`` rather than ``x < eps``, so ``eps=0`` stays valid.

    Parameters
    ----------
    x
        Counts.
    mu
        NB mean, ``> 0``.
    theta
        NB inverse dispersion, ``> 0``.
    zi_logits
        Logits of the zero-inflation probability (real-valued).
    eps
        Numerical floor inside the logarithms.

    Returns
    -------
    torch.Tensor
        Log-probabilities with the broadcast shape.

    Examples
    --------
    >>> x = torch.tensor([0.0, 2.0])
    >>> zinb_log_prob(x, torch.ones(2), torch.ones(2), torch.zeros(2)).shape
    torch.Size([2])
    """
    log_theta_mu = torch.log(theta + mu + eps)
    log_nb_zero = theta * (torch.log(theta + eps) - log_theta_mu)
    case_zero = F.softplus(log_nb_zero - zi_logits) - F.softplus(-zi_logits)  # log(pi + (1 - pi) NB(0))
    case_non_zero = log_nb_positive(x, mu, theta, eps=eps) - F.softplus(zi_logits)  # log(1 - pi) + log NB(x)
    return torch.where(x == 0, case_zero, case_non_zero)


def nb_log_prob_logits(x: torch.Tensor, total_count: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Element-wise NB log-pmf in the ``(total_count, logits)`` parametrisation of ``torch.distributions``.

    ``log p = lgamma(x + r) - lgamma(r) - lgamma(x + 1) + r * logsigmoid(-psi) + x * logsigmoid(psi)``
    with ``r = total_count`` and ``psi = logits``; mean ``r * exp(psi)``. This is PIANO's ``(xi, psi)``
    likelihood (piano.md §1.4) and is exact where ``logits`` are large in magnitude.

    Parameters
    ----------
    x
        Counts.
    total_count
        ``r > 0``.
    logits
        Log-odds ``psi``.

    Returns
    -------
    torch.Tensor
        Log-probabilities with the broadcast shape.

    Examples
    --------
    >>> nb_log_prob_logits(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.0]))
    tensor([-1.3863])
    """
    return (
        torch.lgamma(x + total_count)
        - torch.lgamma(total_count)
        - torch.lgamma(x + 1.0)
        + total_count * F.logsigmoid(-logits)
        + x * F.logsigmoid(logits)
    )
