"""The aggregator contract (SPEC §3).

``agg(h: float[B, M, E], subset: bool[B, M]) -> q`` with ``q`` a ``torch.distributions.Distribution`` of batch
shape ``(B,)`` and event shape ``(D,)``. Every aggregator is split in two stages so that the masked bound can
share work between its two encoder calls (SPEC §2, "Cost"):

* :meth:`Aggregator.embed` ``(h, present) -> g (B, M, F)`` — the per-modality part, which never looks at the
  subset. It is computed once per step.
* :meth:`Aggregator.pool` ``(g, subset) -> q`` — the subset-dependent part (masked pooling, ρ, attention);
  :meth:`Aggregator.pool_many` pools one ``g`` for several subsets and may share work between them.

Values in slots outside ``present`` / ``subset`` are arbitrary (NaN included) and never reach an output or a
gradient: ``embed`` replaces them with zeros before any network sees them, and pooling uses ``where``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..distributions import diag_normal, diag_normal_mixture
from ..nn import positive_scale

__all__ = ["Aggregator", "check_features"]


def check_features(h: Tensor, subset: Tensor, feature_dim: int) -> None:
    """Raise ``ValueError`` naming what is wrong with an aggregator's inputs."""
    if h.dim() != 3:
        raise ValueError(f"features must have shape (B, M, E), got {tuple(h.shape)}")
    if h.shape[-1] != feature_dim:
        raise ValueError(f"features have size {h.shape[-1]} on their last axis, the aggregator expects {feature_dim}")
    if subset.dtype != torch.bool:
        raise ValueError(f"subset must be a bool tensor, got dtype {subset.dtype}")
    if tuple(subset.shape) != tuple(h.shape[:2]):
        raise ValueError(f"subset has shape {tuple(subset.shape)}, expected (B, M) = {tuple(h.shape[:2])}")


class Aggregator(nn.Module):
    """Base class: a permutation-invariant map from a set of modality features to ``q(z | x_S)``."""

    def __init__(self, feature_dim: int, latent_dim: int, min_scale: float = 1e-3):
        super().__init__()
        if feature_dim < 1 or latent_dim < 1:
            raise ValueError(f"feature_dim and latent_dim must be positive, got {feature_dim}, {latent_dim}")
        self.feature_dim = int(feature_dim)
        self.latent_dim = int(latent_dim)
        self.min_scale = float(min_scale)

    # -- the two stages -------------------------------------------------------------------------------------
    def embed(self, h: Tensor, present: Tensor) -> Tensor:
        """``(B, M, E), (B, M) -> (B, M, F)``: per-modality embedding, independent of the subset."""
        h = torch.where(present[..., None], h, torch.zeros((), dtype=h.dtype, device=h.device))
        return self._embed(h)

    def pool(self, g: Tensor, subset: Tensor) -> Distribution:
        """``(B, M, F), (B, M) -> q`` with batch shape ``(B,)`` and event shape ``(D,)``."""
        raise NotImplementedError

    def pool_many(self, g: Tensor, subsets: Sequence[Tensor]) -> list[Distribution]:
        """:meth:`pool` of one embedding for several subsets (the masked bound needs S and O).

        Equal to ``[self.pool(g, s) for s in subsets]``; aggregators override it to share subset-independent
        work between the subsets (SelfAttention: its first block's query/key/value projection).
        """
        return [self.pool(g, s) for s in subsets]

    def _embed(self, h: Tensor) -> Tensor:
        return h

    def forward(self, h: Tensor, subset: Tensor) -> Distribution:
        check_features(h, subset, self.feature_dim)
        return self.pool(self.embed(h, subset), subset)

    # -- helpers for subclasses -----------------------------------------------------------------------------
    def scale_from_raw(self, raw: Tensor) -> Tensor:
        """A positive scale ``min_scale + softplus(raw)``."""
        return positive_scale(raw, self.min_scale)

    def gaussian_from_raw(self, raw: Tensor) -> Distribution:
        """``raw (B, 2D) = [loc, raw scale]`` → diagonal Gaussian."""
        loc, raw_scale = raw.split(self.latent_dim, dim=-1)
        return diag_normal(loc, self.scale_from_raw(raw_scale))

    def mixture_from_raw(self, raw: Tensor, num_components: int) -> Distribution:
        """``raw (B, K(2D+1))`` → mixture of K diagonal Gaussians with learned weights."""
        k, d = num_components, self.latent_dim
        logits, params = raw.split([k, k * 2 * d], dim=-1)
        params = params.unflatten(-1, (k, 2 * d))
        loc, raw_scale = params.split(d, dim=-1)
        return diag_normal_mixture(logits, loc, self.scale_from_raw(raw_scale))

    def config(self) -> dict:
        """Constructor arguments that rebuild this aggregator (used by ``model.save``)."""
        return {"feature_dim": self.feature_dim, "latent_dim": self.latent_dim, "min_scale": self.min_scale}
