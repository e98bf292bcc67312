r"""Optimal transport in pure torch: log-domain (unbalanced) Sinkhorn, costs, barycentric maps.

Used by uniPort's minibatch OT loss and scBIOT's prototype transport. POT is used only as a test oracle.

Problem (entropic unbalanced OT, Chizat et al. 2018; Séjourné et al. 2019). For masses
:math:`a \in \mathbb R_+^n`, :math:`b \in \mathbb R_+^m`, costs :math:`C \in \mathbb R^{n\times m}`, a reference
measure :math:`c` (default :math:`a b^\top`, as in POT >= 0.9.5), :math:`\varepsilon` = ``reg`` and
:math:`\rho` = ``reg_m``:

.. math::
    \min_{T \ge 0}\; \langle C, T\rangle + \varepsilon\,\mathrm{KL}(T\,|\,c)
    + \rho\,\mathrm{KL}(T\mathbf 1\,|\,a) + \rho\,\mathrm{KL}(T^\top\mathbf 1\,|\,b),
    \qquad \mathrm{KL}(p\,|\,q) = \textstyle\sum p\log(p/q) - p + q.

:math:`\rho = \infty` turns the marginal penalties into constraints (balanced Sinkhorn). The optimum is
:math:`T_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)\,c_{ij}`, and the generalized Sinkhorn iterations
(the scaling updates :math:`u \leftarrow (a / Kv)^\tau`, :math:`v \leftarrow (b / K^\top u)^\tau` with
:math:`K = e^{-C/\varepsilon} c`) are run on the potentials :math:`f = \varepsilon \log u`,
:math:`g = \varepsilon\log v` with log-sum-exp:

.. math::
    f_i \leftarrow \tau\Bigl(\varepsilon\log a_i - \varepsilon\log\sum_j
        e^{(g_j - C_{ij})/\varepsilon} c_{ij}\Bigr), \qquad
    g_j \leftarrow \tau\Bigl(\varepsilon\log b_j - \varepsilon\log\sum_i
        e^{(f_i - C_{ij})/\varepsilon} c_{ij}\Bigr), \qquad
    \tau = \frac{\rho}{\rho + \varepsilon}.

No :math:`e^{-C/\varepsilon}` is ever formed, so small :math:`\varepsilon` (0.01 on costs of order 10, where
the kernel is :math:`e^{-1000} = 0` in float64) stays exact. At a fixed point the unbalanced optimality
conditions :math:`f = -\rho\log(T\mathbf 1 / a)`, :math:`g = -\rho\log(T^\top\mathbf 1 / b)` hold.

Gradient idiom: solve with the plan as a constant and back-propagate ``<C, T>`` (:func:`ot_loss`); its
gradient in ``C`` is ``T``, the gradient of the optimal regularized objective (envelope theorem).

References
----------
Chizat, Peyré, Schmitzer, Vialard (2018), Math. Comp. 87:2563-2609 (scaling algorithms for unbalanced OT).
Séjourné, Feydy, Vialard, Trouvé, Peyré (2019), arXiv:1910.12958 (Sinkhorn divergences for unbalanced OT).
Peyré & Cuturi (2019), "Computational Optimal Transport", §4.4 (log-domain Sinkhorn).

Examples
--------
>>> import torch
>>> from scvi_ext.ot import barycentric_projection, ot_loss, sinkhorn_unbalanced, squared_euclidean_cost
>>> z_q = torch.randn(6, 2, requires_grad=True)
>>> z_r = torch.randn(5, 2)
>>> C = squared_euclidean_cost(z_q, z_r)
>>> res = sinkhorn_unbalanced(None, None, C, reg=0.1, reg_m=1.0)
>>> loss = ot_loss(C, res.plan)
>>> loss.backward()
>>> barycentric_projection(res.plan, z_r).shape
torch.Size([6, 2])
"""

from __future__ import annotations

from ._barycentric import barycentric_projection
from ._costs import gaussian_w2_cost, squared_euclidean_cost
from ._sinkhorn import OTResult, ot_loss, sinkhorn, sinkhorn_unbalanced

__all__ = [
    "OTResult",
    "barycentric_projection",
    "gaussian_w2_cost",
    "ot_loss",
    "sinkhorn",
    "sinkhorn_unbalanced",
    "squared_euclidean_cost",
]
