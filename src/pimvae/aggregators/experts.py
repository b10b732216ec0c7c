"""Aggregators built from per-modality Gaussian experts: PoE, MoE and MoPoE (SPEC §3).

Each modality's feature ``h_s`` gives an expert ``N(μ_s, σ_s²)``: either directly (``projection=False``, then
``h_s = [μ_s, raw σ_s]`` and E must equal 2D, as in the paper's reference code) or through a linear head.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..distributions import diag_normal, diag_normal_mixture
from ..nn import masked_sum
from .base import Aggregator

__all__ = ["PoE", "MoE", "MoPoE"]

_NEG_INF = float("-inf")


class _Experts(Aggregator):
    def __init__(self, feature_dim: int, latent_dim: int, projection: bool = True, min_scale: float = 1e-3):
        super().__init__(feature_dim, latent_dim, min_scale)
        self.projection = bool(projection)
        if projection:
            self.head = nn.Linear(feature_dim, 2 * latent_dim)
        elif feature_dim != 2 * latent_dim:
            raise ValueError(
                f"projection=False reads features as [loc, raw scale]: feature_dim must be 2 * latent_dim = "
                f"{2 * latent_dim}, got {feature_dim}"
            )
        else:
            self.head = nn.Identity()

    def experts(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``h (B, M, E) -> (μ, σ)``, each ``(B, M, D)``."""
        loc, raw_scale = self.head(h).split(self.latent_dim, dim=-1)
        return loc, self.scale_from_raw(raw_scale)

    def config(self) -> dict:
        return {**super().config(), "projection": self.projection}


class PoE(_Experts):
    """Product of experts with the prior ``N(0, I)`` as an expert that is always present.

    Precision-weighted: ``τ = 1 + Σ_{s∈S} σ_s⁻²``, mean ``Σ_{s∈S} μ_s σ_s⁻² / τ``, variance ``1/τ``.
    The empty subset gives ``N(0, I)``.
    """

    def _embed(self, h: Tensor) -> Tensor:
        loc, scale = self.experts(h)
        precision = scale.pow(-2)
        return torch.cat([loc * precision, precision], dim=-1)  # (B, M, 2D): pooling is then a masked sum

    def pool(self, g: Tensor, subset: Tensor) -> Distribution:
        weighted_loc, precision = masked_sum(g, subset).split(self.latent_dim, dim=-1)  # (B, D) each
        precision = 1.0 + precision
        return diag_normal(weighted_loc / precision, precision.rsqrt())


class MoE(_Experts):
    """Uniform mixture of the experts in S; the empty subset gives the prior ``N(0, I)``."""

    def _embed(self, h: Tensor) -> Tensor:
        loc, scale = self.experts(h)
        return torch.cat([loc, scale], dim=-1)

    def pool(self, g: Tensor, subset: Tensor) -> Distribution:
        loc, scale = g.split(self.latent_dim, dim=-1)  # (B, M, D)
        b = g.shape[0]
        # The prior N(0, I) is an extra component that carries all the weight when S is empty.
        loc = torch.cat([loc, loc.new_zeros(b, 1, self.latent_dim)], dim=1)
        scale = torch.cat([scale, scale.new_ones(b, 1, self.latent_dim)], dim=1)
        empty = ~subset.any(-1, keepdim=True)
        on = torch.cat([subset, empty], dim=1)  # (B, M+1)
        logits = torch.where(on, 0.0, _NEG_INF).to(g.dtype)
        return diag_normal_mixture(logits, loc, scale)


class MoPoE(_Experts):
    """Uniform mixture over the PoEs of all non-empty subsets of S (Remark 14).

    Exact enumeration is exponential in the number of modalities: past ``max_modalities`` it refuses, unless
    ``num_subsets`` is given, in which case each call draws that many random non-empty subsets of S per data
    point (a stochastic encoder: an approximation that trades exactness for cost).
    """

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        projection: bool = True,
        min_scale: float = 1e-3,
        max_modalities: int = 10,
        num_subsets: int | None = None,
    ):
        super().__init__(feature_dim, latent_dim, projection, min_scale)
        self.max_modalities = int(max_modalities)
        self.num_subsets = None if num_subsets is None else int(num_subsets)
        self._subset_cache: dict[tuple[int, torch.device], Tensor] = {}

    def config(self) -> dict:
        return {**super().config(), "max_modalities": self.max_modalities, "num_subsets": self.num_subsets}

    def _embed(self, h: Tensor) -> Tensor:
        loc, scale = self.experts(h)
        precision = scale.pow(-2)
        return torch.cat([loc * precision, precision], dim=-1)

    def _all_subsets(self, m: int, device: torch.device) -> Tensor:
        key = (m, device)
        if key not in self._subset_cache:
            rows = [[i in c for i in range(m)] for k in range(1, m + 1) for c in itertools.combinations(range(m), k)]
            rows.append([False] * m)  # the empty subset last: its "PoE" is the prior
            self._subset_cache[key] = torch.tensor(rows, dtype=torch.bool, device=device)  # (2^M, M)
        return self._subset_cache[key]

    def _sampled_subsets(self, subset: Tensor) -> Tensor:
        """``(B, C, M)`` random non-empty subsets of each row of ``subset`` (all-empty rows stay empty)."""
        b, m = subset.shape
        c = self.num_subsets
        coin = torch.rand(b, c, m, device=subset.device) < 0.5
        t = coin & subset[:, None, :]
        # Rows that came out empty get one element of S chosen uniformly.
        pick = torch.rand(b, c, m, device=subset.device).masked_fill(~subset[:, None, :], -1.0).argmax(-1)
        forced = nn.functional.one_hot(pick, m).bool() & subset[:, None, :]
        return torch.where(t.any(-1, keepdim=True), t, forced)

    def pool(self, g: Tensor, subset: Tensor) -> Distribution:
        return self.pool_many(g, [subset])[0]

    def pool_many(self, g: Tensor, subsets: Sequence[Tensor]) -> list[Distribution]:
        """The subsets' mixtures share their components when the subsets are enumerated exactly.

        With full enumeration the component for T is ``PoE(T)`` whatever S is; S only decides which components are
        on (T ⊆ S). So the PoEs are built once, from the features of the union of the subsets (the masked bound's
        S ⊆ O: the components of O), and each subset gets its own mixture weights. Components outside a subset
        have weight exactly zero, so neither their values nor their gradients reach that subset's mixture.
        """
        b, m, _ = g.shape
        if m > self.max_modalities:
            if self.num_subsets is None:
                raise ValueError(
                    f"MoPoE enumerates 2^M - 1 subsets: {m} modalities exceed max_modalities={self.max_modalities} "
                    f"(2^{m} - 1 = {2**m - 1} components). Raise max_modalities, or pass num_subsets=K to sample K "
                    "subsets per data point."
                )
            return [self._pool_sampled(g, s) for s in subsets]
        union = subsets[0]
        for s in subsets[1:]:
            union = union | s
        g = torch.where(union[..., None], g, torch.zeros((), dtype=g.dtype, device=g.device))
        # Components: the PoEs of subsets T (rows of t), the empty subset last. Its sums are zero, so its PoE is the
        # prior N(0, I) without building that component separately.
        t = self._all_subsets(m, g.device)  # (C + 1, M)
        loc, scale = self._poe(torch.matmul(t.to(g.dtype), g))  # (C + 1, M) @ (B, M, F) -> (B, C + 1, D) each
        out = []
        for subset in subsets:
            on = ~(t[None] & ~subset[:, None, :]).any(-1)  # (B, C + 1): T ⊆ S
            out.append(self._mixture(on, subset, loc, scale))
        return out

    def _pool_sampled(self, g: Tensor, subset: Tensor) -> Distribution:
        """``num_subsets`` random non-empty subsets of S per data point (past ``max_modalities``)."""
        b, m, _ = g.shape
        g = torch.where(subset[..., None], g, torch.zeros((), dtype=g.dtype, device=g.device))
        t = self._sampled_subsets(subset)  # (B, C, M), all empty when S is
        t = torch.cat([t, t.new_zeros(b, 1, m)], dim=1)  # (B, C + 1, M)
        loc, scale = self._poe(torch.bmm(t.to(g.dtype), g))  # (B, C + 1, D) each
        return self._mixture(t.any(-1), subset, loc, scale)

    def _poe(self, sums: Tensor) -> tuple[Tensor, Tensor]:
        """Subset sums of ``[μ σ⁻², σ⁻²]`` → (loc, scale) of each product with the prior expert."""
        weighted_loc, precision = sums.split(self.latent_dim, dim=-1)
        precision = 1.0 + precision
        return weighted_loc / precision, precision.rsqrt()

    def _mixture(self, on: Tensor, subset: Tensor, loc: Tensor, scale: Tensor) -> Distribution:
        """Uniform over the non-empty components that are ``on``; the last (the prior) only when S = ∅."""
        empty = ~subset.any(-1, keepdim=True)  # (B, 1)
        on = torch.cat([on[..., :-1], empty], dim=-1)
        logits = torch.where(on, 0.0, _NEG_INF).to(loc.dtype)
        return diag_normal_mixture(logits, loc, scale)
