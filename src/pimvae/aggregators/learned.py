"""Learnable permutation-invariant aggregators: SumPooling (DeepSets) and SelfAttention (set transformer).

Both embed each modality with ``χ`` once (subset-independent), pool ``Σ_{s∈S}`` and map the pooled vector with
``ρ`` to the parameters of ``q(z | x_S)`` — one Gaussian, or K Gaussians and K logits for the mixture versions.
SelfAttention runs masked pre-layer-norm transformer blocks between ``χ`` and the pooling: slots outside S
neither attend nor are attended to. No positional or modality embedding is used, so the map is permutation
invariant; modality awareness comes from the modality-specific feature encoders (SPEC §3).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from ..nn import MLP, flat, is_compiling, masked_sum
from .base import Aggregator

__all__ = ["SumPooling", "SelfAttention", "SumPoolingMixture", "SelfAttentionMixture", "AttentionBlock"]


class AttentionBlock(nn.Module):
    """Pre-LN block: ``g + MHA(LN(g))`` then ``g + FF(LN(g))``; attention restricted to the subset.

    ``zero_init``: start both residual branches at zero (the attention's output projection and the feed-forward's
    last layer have zero weights and biases), so the block is the identity at initialisation and learns from
    there (SkipInit, De & Smith 2020). Those two layers carry ``zero_init = True``, which
    :func:`pimvae.experiments.base.lecun_init` respects when it re-initialises a model.
    """

    def __init__(self, dim: int, num_heads: int, ff_dim: int, activation: str = "relu", zero_init: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = MLP(dim, [ff_dim], dim, activation)
        if zero_init:
            for layer in (self.out, self.ff[-1]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
                layer.zero_init = True

    def project(self, g: Tensor) -> Tensor:
        """Queries, keys and values ``qkv(LN(g))``, ``(B, M, 3F)``: they do not depend on the subset."""
        return self.qkv(self.norm1(flat(g))).view(*g.shape[:-1], -1)

    def forward(self, g: Tensor, subset: Tensor, qkv: Tensor | None = None, attn: Tensor | None = None) -> Tensor:
        """``qkv``: :meth:`project` of ``g``, ``attn``: :meth:`attention` of ``(g, subset)``, when already computed
        (shared between several subsets)."""
        g = self.attend(g, subset, qkv, attn)
        return g + self.ff(self.norm2(g))

    def pooled(self, g: Tensor, subset: Tensor, qkv: Tensor | None = None, compact: bool | None = None,
               attn: Tensor | None = None) -> Tensor:
        """``Σ_{s∈S} forward(g, subset)_s``, ``(B, F)``, computing per-slot work only where it is pooled.

        After the attention every step is per slot, and only slots in S are summed, so:

        * ``compact`` (default: on CPU, outside ``torch.compile``): the output projection, layer norm and
          feed-forward run on the slots in S only, gathered into ``(N_S, F)`` — the S pass of the masked bound
          then does about half the work. The gather has a data-dependent size, which would synchronise an
          accelerator with the host and break a compiled graph, so there the dense ``(B, M, F)`` path runs.
        * the feed-forward's last linear layer runs after the sum: ``Σ_s (W a_s + b) = W Σ_s a_s + |S| b``.

        ``attn``: :meth:`attention` of ``(g, subset)`` when already computed (see :meth:`attention_many`).
        """
        b, m, f = g.shape
        if compact is None:
            compact = g.device.type == "cpu" and not is_compiling()
        if attn is None:
            attn = self.attention(g, subset, qkv)  # (B, M, F)
        *hidden, last = self.ff
        if compact:
            rows = subset.reshape(-1).nonzero().squeeze(-1)  # (N_S,) indices into B·M
            g = g.reshape(b * m, f).index_select(0, rows) + self.out(attn.reshape(b * m, f).index_select(0, rows))
        else:
            g = flat(g) + self.out(flat(attn))  # (B·M, F)
        a = self.norm2(g)
        for layer in hidden:
            a = layer(a)  # (N_S or B·M, ff_dim), after the activation
        if compact:
            owner = torch.div(rows, m, rounding_mode="floor")  # data point of each gathered slot
            g_sum = g.new_zeros(b, f).index_add(0, owner, g)
            a_sum = a.new_zeros(b, a.shape[-1]).index_add(0, owner, a)
        else:
            g_sum, a_sum = masked_sum(g.view(b, m, f), subset), masked_sum(a.view(b, m, -1), subset)
        size = subset.sum(-1, keepdim=True).to(g.dtype)  # (B, 1)
        return g_sum + F.linear(a_sum, last.weight) + size * last.bias

    def attend(self, g: Tensor, subset: Tensor, qkv: Tensor | None = None, attn: Tensor | None = None) -> Tensor:
        """The attention half of the block, ``g + MHA(LN(g))``, ``(B, M, F)``."""
        if attn is None:
            attn = self.attention(g, subset, qkv)
        return g + self.out(flat(attn)).view(g.shape)

    def attention(self, g: Tensor, subset: Tensor, qkv: Tensor | None = None) -> Tensor:
        """Masked multi-head attention over the slots, heads concatenated, before the output projection."""
        b, m, f = g.shape
        q, k, v = self._heads(g, qkv)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=_keys(subset)[:, None, None, :])  # (B, H, M, f/H)
        return attn.transpose(1, 2).reshape(b, m, f)

    def attention_many(self, g: Tensor, subsets: Sequence[Tensor], qkv: Tensor | None = None) -> list[Tensor]:
        """:meth:`attention` for several subsets of the same slots, sharing the scores ``q kᵀ``.

        Queries, keys and values do not depend on the subset, so the scores are computed once; each subset masks
        them with its own keys, and one product with the values serves every subset. At the set sizes of
        multimodal data (a handful of slots) the attention is bound by per-call overhead, not FLOPs: for the
        masked bound's S and O this costs about 0.75 of two ``scaled_dot_product_attention`` calls.
        """
        b, m, f = g.shape
        n, h = len(subsets), self.num_heads
        if m > _SHARED_SCORES_MAX_SLOTS:  # dense (B, H, n, M, M) scores: let the fused kernel tile large sets
            return [self.attention(g, s, qkv) for s in subsets]
        q, k, v = self._heads(g, qkv)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (f // h) ** -0.5  # (B, H, M, M)
        keys = torch.stack([_keys(s) for s in subsets], dim=1)  # (B, n, M)
        scores = scores[:, :, None].masked_fill(~keys[:, None, :, None, :], float("-inf"))  # (B, H, n, M, M)
        weights = torch.softmax(scores, dim=-1).view(b, h, n * m, m)
        out = torch.matmul(weights, v).view(b, h, n, m, f // h)  # (B, H, n, M, F/H)
        return list(out.permute(2, 0, 3, 1, 4).reshape(n, b, m, f).unbind(0))

    def _heads(self, g: Tensor, qkv: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values, ``(B, H, M, F/H)`` each."""
        b, m, f = g.shape
        if qkv is None:
            qkv = self.project(g)
        # split + transpose (not a permute + unbind, whose backward stacks and copies)
        return tuple(t.view(b, m, self.num_heads, f // self.num_heads).transpose(1, 2) for t in qkv.split(f, dim=-1))


#: above this many slots `attention_many` calls the fused kernel once per subset instead of sharing dense scores
_SHARED_SCORES_MAX_SLOTS = 16


def _keys(subset: Tensor) -> Tensor:
    """The slots a query may attend to: those in S. A row with an empty S has no key at all: let it attend
    everywhere — its outputs are discarded by the masked pooling, and the values are finite (absent slots were
    zeroed before any network saw them)."""
    return subset | ~subset.any(-1, keepdim=True)  # (B, M)


class _Pooling(Aggregator):
    """χ → (blocks) → masked sum → ρ → distribution parameters."""

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        embed_dim: int = 256,
        chi_hidden: Sequence[int] = (256, 256),
        rho_hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        min_scale: float = 1e-3,
        num_components: int | None = None,
    ):
        super().__init__(feature_dim, latent_dim, min_scale)
        self.embed_dim = int(embed_dim)
        self.chi_hidden, self.rho_hidden, self.activation = list(chi_hidden), list(rho_hidden), activation
        self.num_components = num_components
        out = 2 * latent_dim if num_components is None else num_components * (2 * latent_dim + 1)
        self.chi = MLP(feature_dim, chi_hidden, embed_dim, activation)
        self.rho = MLP(embed_dim, rho_hidden, out, activation)

    def _embed(self, h: Tensor) -> Tensor:
        return self.chi(h)

    def mix(self, g: Tensor, subset: Tensor) -> Tensor:
        """Interaction between the slots in S before pooling (none for DeepSets)."""
        return g

    def pool(self, g: Tensor, subset: Tensor) -> Distribution:
        return self._head(masked_sum(self.mix(g, subset), subset))

    def _head(self, pooled: Tensor) -> Distribution:
        raw = self.rho(pooled)
        if self.num_components is None:
            return self.gaussian_from_raw(raw)
        return self.mixture_from_raw(raw, self.num_components)

    def config(self) -> dict:
        return {
            **super().config(),
            "embed_dim": self.embed_dim,
            "chi_hidden": self.chi_hidden,
            "rho_hidden": self.rho_hidden,
            "activation": self.activation,
        }


class SumPooling(_Pooling):
    """DeepSets: ``[μ, σ] = ρ(Σ_{s∈S} χ(h_s))`` (Example 6).

    χ's last layer is linear, so it commutes with the sum: ``Σ_s (W a_s + b) = W Σ_s a_s + |S| b``. ``embed``
    therefore stops at χ's last hidden activations ``a_s`` and ``pool`` applies the last layer once per data point
    after the masked sum, instead of once per modality (and once per subset in the masked bound).
    """

    def _embed(self, h: Tensor) -> Tensor:
        x = flat(h)
        for layer in list(self.chi)[:-1]:
            x = layer(x)
        return x.view(*h.shape[:-1], x.shape[-1])

    def pool(self, g: Tensor, subset: Tensor) -> Distribution:
        return self.pool_many(g, [subset])[0]

    def pool_many(self, g: Tensor, subsets: Sequence[Tensor]) -> list[Distribution]:
        """The masked sums of every subset as one batched product ``(B, n, M) @ (B, M, A)``, then χ's last layer
        once for all of them. A 0/1 weight excludes a slot exactly as long as ``g`` is finite: absent slots hold χ
        of zeroed features (:meth:`embed`), and observed data are finite (:class:`pimvae.data.MultimodalDataset`
        checks; a non-finite observed value would make ``q(z | x_O)``, hence the loss, non-finite anyway)."""
        last = self.chi[-1]
        mask = torch.stack(list(subsets), dim=1).to(g.dtype)  # (B, n, M)
        pooled = F.linear(torch.bmm(mask, g), last.weight) + mask.sum(-1, keepdim=True) * last.bias  # (B, n, E)
        return [self._head(p) for p in pooled.unbind(1)]


class SelfAttention(_Pooling):
    """Set transformer: ``ρ(Σ_{s∈S} SAB^L(χ(h))_s)`` with masked attention (Example 7, Appendix E).

    ``zero_init_blocks`` (default on): the blocks start as the identity (:class:`AttentionBlock`), so at
    initialisation this is SumPooling with the same χ and ρ. With randomly initialised branches the residual
    stream starts several times larger than χ's output: on the paper's linear-Gaussian data (Table 1 networks,
    LeCun init) the initial posterior has location RMS 2.3–3.2 and scales up to 8 (SumPooling: 0.8 and 2.2), the
    initial loss is 3–22 times SumPooling's, and on 3 of 5 seeds 1–2 latent dimensions collapse for good
    (``docs/results/linear-dense/``).
    """

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        embed_dim: int = 256,
        chi_hidden: Sequence[int] = (256, 256),
        rho_hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        min_scale: float = 1e-3,
        num_blocks: int = 1,
        num_heads: int = 4,
        ff_dim: int = 256,
        num_components: int | None = None,
        zero_init_blocks: bool = True,
    ):
        super().__init__(
            feature_dim, latent_dim, embed_dim, chi_hidden, rho_hidden, activation, min_scale, num_components
        )
        self.num_blocks, self.num_heads, self.ff_dim = int(num_blocks), int(num_heads), int(ff_dim)
        self.zero_init_blocks = bool(zero_init_blocks)
        self.blocks = nn.ModuleList(AttentionBlock(embed_dim, num_heads, ff_dim, activation, self.zero_init_blocks)
                                    for _ in range(num_blocks))

    def mix(self, g: Tensor, subset: Tensor, qkv: Tensor | None = None) -> Tensor:
        """The attention blocks; ``qkv``: the first block's projection of ``g``, when already computed."""
        for i, block in enumerate(self.blocks):
            g = block(g, subset, qkv if i == 0 else None)
        return g

    def pool(self, g: Tensor, subset: Tensor, qkv: Tensor | None = None, attn: Tensor | None = None) -> Distribution:
        """``ρ(Σ_{s∈S} mix(g, subset)_s)``; the last block pools before its last linear layer (see ``pooled``).

        ``qkv`` / ``attn``: the first block's projection of ``g`` and attention for ``subset``, when already computed.
        """
        if not self.blocks:
            return super().pool(g, subset)
        *first, last = self.blocks
        for i, block in enumerate(first):
            g = block(g, subset, qkv, attn) if i == 0 else block(g, subset)
        return self._head(last.pooled(g, subset) if first else last.pooled(g, subset, qkv, attn=attn))

    def pool_many(self, g: Tensor, subsets: Sequence[Tensor]) -> list[Distribution]:
        if len(subsets) < 2 or not self.blocks:
            return super().pool_many(g, subsets)
        # The first block's LN, qkv projection and attention scores read g only, not the subset: computed once.
        first = self.blocks[0]
        qkv = first.project(g)  # (B, M, 3F)
        return [self.pool(g, s, qkv, a) for s, a in zip(subsets, first.attention_many(g, subsets, qkv))]

    def config(self) -> dict:
        return {**super().config(), "num_blocks": self.num_blocks, "num_heads": self.num_heads, "ff_dim": self.ff_dim,
                "zero_init_blocks": self.zero_init_blocks}


class SumPoolingMixture(SumPooling):
    """SumPooling whose ρ outputs a K-component Gaussian mixture."""

    def __init__(self, feature_dim: int, latent_dim: int, num_components: int = 5, **options):
        super().__init__(feature_dim, latent_dim, num_components=int(num_components), **options)

    def config(self) -> dict:
        return {**super().config(), "num_components": self.num_components}


class SelfAttentionMixture(SelfAttention):
    """SelfAttention whose ρ outputs a K-component Gaussian mixture."""

    def __init__(self, feature_dim: int, latent_dim: int, num_components: int = 5, **options):
        super().__init__(feature_dim, latent_dim, num_components=int(num_components), **options)

    def config(self) -> dict:
        return {**super().config(), "num_components": self.num_components}
