"""Input conversion and validation shared by the OT functions (all raise ``ValueError`` naming the argument)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def as_float_tensor(x, name: str, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x`` as a floating torch tensor (on ``like``'s device/dtype when given).

    Parameters
    ----------
    x
        Tensor, NumPy array, sequence or scalar.
    name
        Argument name used in error messages.
    like
        Reference tensor whose device and dtype the result adopts.

    Returns
    -------
    torch.Tensor
        Floating tensor. Integer inputs become the default float dtype.

    Examples
    --------
    >>> as_float_tensor([1, 2], "a").dtype == torch.get_default_dtype()
    True
    """
    try:
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}.") from err
    if t.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}.")
    if like is not None:
        return t.to(device=like.device, dtype=like.dtype)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def check_positive_scalar(value, name: str, *, allow_inf: bool = False) -> float:
    """Return ``float(value)`` after checking it is a number > 0 (finite unless ``allow_inf``).

    Parameters
    ----------
    value
        Scalar to check.
    name
        Argument name used in error messages.
    allow_inf
        Whether ``+inf`` is accepted.

    Returns
    -------
    float
        The value.

    Examples
    --------
    >>> check_positive_scalar(0.1, "reg")
    0.1
    """
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a positive number, got {value!r}.") from err
    if math.isnan(v) or v <= 0 or (math.isinf(v) and not allow_inf):
        expected = "a number > 0 (float('inf') allowed)" if allow_inf else "a finite number > 0"
        raise ValueError(f"{name} must be {expected}, got {value!r}.")
    return v


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise if ``t`` holds NaN or infinite values (one host sync).

    Parameters
    ----------
    t
        Tensor to check.
    name
        Argument name used in error messages.

    Examples
    --------
    >>> check_finite(torch.ones(2), "C")
    """
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ValueError(
            f"{name} contains {n_nan} NaN and {n_inf} infinite values; it must be finite "
            "(to forbid pairs, give them zero weight in the reference measure `c` instead)."
        )


def check_nonnegative(t: torch.Tensor, name: str) -> None:
    """Raise if ``t`` is not finite or has negative entries.

    Parameters
    ----------
    t
        Tensor to check.
    name
        Argument name used in error messages.

    Examples
    --------
    >>> check_nonnegative(torch.zeros(3), "a")
    """
    check_finite(t, name)
    if t.numel() and bool((t < 0).any()):
        raise ValueError(
            f"{name} must be non-negative (masses/weights), but its minimum is {float(t.min()):g}."
        )


def broadcast_batch(shapes: Sequence[tuple[str, torch.Size]]) -> torch.Size:
    """Broadcast the leading (batch) shapes of several arguments, raising a readable error on mismatch.

    Parameters
    ----------
    shapes
        ``(argument description, batch shape)`` pairs.

    Returns
    -------
    torch.Size
        Common batch shape.

    Examples
    --------
    >>> broadcast_batch([("C", torch.Size([3])), ("a", torch.Size([]))])
    torch.Size([3])
    """
    try:
        return torch.broadcast_shapes(*(s for _, s in shapes))
    except RuntimeError as err:
        desc = ", ".join(f"{n}: {tuple(s)}" for n, s in shapes)
        raise ValueError(f"Leading (batch) dimensions do not broadcast ({desc}).") from err
