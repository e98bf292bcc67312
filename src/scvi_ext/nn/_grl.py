"""Gradient reversal: identity in the forward pass, ``-lambd * grad`` in the backward pass."""

from __future__ import annotations

import torch
from torch import nn


class _GradReverse(torch.autograd.Function):
    """Autograd function behind :func:`grad_reverse`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float | torch.Tensor) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambd * grad_output, None


def grad_reverse(x: torch.Tensor, lambd: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Return ``x`` unchanged, but multiply the gradient flowing back through it by ``-lambd``.

    Parameters
    ----------
    x
        Any tensor.
    lambd
        Reversal strength, a float or a 0-d tensor (a device scalar avoids host syncs when it is
        updated every step). ``0`` blocks the gradient, ``1`` is the plain reversal of Ganin & Lempitsky (2015).

    Returns
    -------
    torch.Tensor
        A view of ``x`` (same values).

    Examples
    --------
    >>> x = torch.ones(3, requires_grad=True)
    >>> grad_reverse(x, 2.0).sum().backward()
    >>> x.grad
    tensor([-2., -2., -2.])
    """
    return _GradReverse.apply(x, lambd)


class GradientReversal(nn.Module):
    """Gradient-reversal layer (GRL) with a settable weight.

    Parameters
    ----------
    lambd
        Reversal strength (``grad -> -lambd * grad``). Change it during training by assigning
        ``layer.lambd = value`` (e.g. from a warm-up schedule).

    Examples
    --------
    >>> grl = GradientReversal(lambd=0.5)
    >>> x = torch.ones(2, requires_grad=True)
    >>> grl(x).sum().backward()
    >>> x.grad
    tensor([-0.5000, -0.5000])
    """

    def __init__(self, lambd: float = 1.0):
        super().__init__()
        self.lambd = lambd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity on values, reversed and scaled gradient.

        Parameters
        ----------
        x
            Input tensor.

        Returns
        -------
        torch.Tensor
            ``x`` (as a view).
        """
        return grad_reverse(x, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"
