"""Network building blocks used by aggregators and the built-in encoders/decoders."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "ACTIVATIONS", "masked_sum", "softplus_inverse", "positive_scale", "is_compiling", "flat"]


def softplus_inverse(y: float) -> float:
    """``x`` with ``softplus(x) = y`` (y > 0), computed stably."""
    return y + math.log(-math.expm1(-y))


def positive_scale(raw: Tensor, min_scale: float) -> Tensor:
    """``min_scale + softplus(raw)``.

    ``raw`` is usually a slice of a network's output (``[loc, raw scale]``), i.e. not contiguous; torch's CPU
    softplus on such a view is 5–6 times slower than copying it first and running on the copy (measured in
    ``bench/optimisations.md``).
    """
    return min_scale + torch.nn.functional.softplus(raw.contiguous())


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


class MLP(nn.Sequential):
    """``in_dim → hidden[0] → … → out_dim`` with an activation after every hidden layer (none after the last).

    Works on any number of leading axes, as ``nn.Linear`` does.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        dims = [in_dim, *hidden, out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)
        self.in_dim, self.hidden, self.out_dim, self.activation = in_dim, list(hidden), out_dim, activation

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() <= 2:
            return super().forward(x)
        return super().forward(flat(x)).unflatten(0, x.shape[:-1])

    def config(self) -> dict:
        return {"in_dim": self.in_dim, "hidden": self.hidden, "out_dim": self.out_dim, "activation": self.activation}


def flat(x: Tensor) -> Tensor:
    """``(*lead, F) -> (N, F)`` for per-slot layers.

    The same in eager mode, but ``torch.compile`` on CPU lowers a linear layer on a 3-D input about twice as
    slowly as on the flattened 2-D one (forward + backward of χ at 500 × 5 slots: 31.9 vs 14.7 ms).
    """
    return x.reshape(-1, x.shape[-1])


def is_compiling() -> bool:
    """Whether ``torch.compile`` is tracing this call (``False`` on torch versions without the query)."""
    query = getattr(torch.compiler, "is_compiling", None)
    return bool(query()) if query is not None else False


def masked_sum(x: Tensor, subset: Tensor) -> Tensor:
    """Sum of ``x (*, M, F)`` over the modality axis where ``subset (*, M)`` is true.

    ``where`` (not a multiply) so that non-finite values in excluded slots cannot leak in.
    """
    return torch.where(subset[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(-2)
