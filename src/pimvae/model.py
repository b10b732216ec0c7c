"""``MultimodalVAE``: wiring only — modalities, one aggregator, one prior.

The model encodes a batch into ``q(z | x_S)`` for any subset S, decodes latents into ``p(x_s | z)`` for every
modality, and samples. It computes no loss (see :mod:`pimvae.objectives`) and owns no training loop.

Encoding is split in two so that objectives can share work between several subsets (SPEC §2, "Cost"):
``g = model.embed(batch)`` runs every feature encoder and the aggregator's per-modality embedding once;
``model.posterior(g, subset)`` then only pools. ``model.encode(batch, subset)`` does both.

Latent layout: every decoder reads the whole latent ``z (…, D)``, except with private latents (SPEC §5, a
:class:`pimvae.private.WithPrivate` aggregator), where ``z = [z', z̃_1, …, z̃_M]`` and decoder s reads
``(z', z̃_s)``. :meth:`decoder_input` is the single place that maps ``z`` to a decoder's input; the posterior is a
distribution over the concatenated latent, so the objectives do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .aggregators import Aggregator
from .modality import Modality
from .priors import Prior
from .private import PrivatePrior, WithPrivate

__all__ = ["Batch", "MultimodalVAE", "Embedding"]


@dataclass
class Batch:
    """A multi-modal batch.

    ``data[name]`` has a leading batch axis B. ``present`` is ``bool[B, M]`` with columns in the order of the
    model's modalities (``None``: everything observed). A modality absent for every data point may be left out
    of ``data``. Values in absent slots are ignored, whatever they are.
    """

    data: dict[str, Tensor]
    present: Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        present = None if self.present is None else self.present.to(device)
        return Batch({k: v.to(device) for k, v in self.data.items()}, present)

    def __len__(self) -> int:
        if self.present is not None:
            return self.present.shape[0]
        return next(iter(self.data.values())).shape[0]


@dataclass
class Embedding:
    """The subset-independent part of an encoding: ``g (B, M, F)`` and the observed mask ``present (B, M)``."""

    g: Tensor
    present: Tensor


class MultimodalVAE(nn.Module):
    """``p(z) Π_s p(x_s | z)`` with an aggregated encoder ``q(z | x_S)``.

    Args:
        modalities: name → :class:`Modality`; the dict order is the column order of ``present``.
        aggregator: any :class:`pimvae.aggregators.Aggregator`.
        prior: any :class:`pimvae.priors.Prior` with the same latent size.
    """

    def __init__(self, modalities: Mapping[str, Modality], aggregator: Aggregator, prior: Prior):
        super().__init__()
        if not modalities:
            raise ValueError("a MultimodalVAE needs at least one modality")
        for name, mod in modalities.items():
            if not isinstance(mod, Modality):
                raise TypeError(f"modality {name!r} must be a pimvae.Modality, got {type(mod).__name__}")
        if aggregator.latent_dim != prior.latent_dim:
            raise ValueError(f"aggregator latent_dim {aggregator.latent_dim} != prior latent_dim {prior.latent_dim}")
        if isinstance(aggregator, WithPrivate):
            if aggregator.num_modalities != len(modalities):
                raise ValueError(f"the private-latent aggregator has num_modalities={aggregator.num_modalities}, but the "
                                 f"model has {len(modalities)} modalities {list(modalities)}")
            if isinstance(prior, PrivatePrior) and (prior.shared_dim, prior.private_dim, prior.num_modalities) != (
                    aggregator.shared_dim, aggregator.private_dim, aggregator.num_modalities):
                raise ValueError(f"the private prior splits the latent as shared {prior.shared_dim} + "
                                 f"{prior.num_modalities} x private {prior.private_dim}, the aggregator as shared "
                                 f"{aggregator.shared_dim} + {aggregator.num_modalities} x private {aggregator.private_dim}")
        self.modalities = nn.ModuleDict(dict(modalities))
        self.aggregator = aggregator
        self.prior = prior

    # -- bookkeeping ------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.modalities.keys())

    @property
    def latent_dim(self) -> int:
        return self.aggregator.latent_dim

    def subset_mask(self, names: Iterable[str], batch_size: int, device: torch.device | None = None) -> Tensor:
        """``bool[B, M]`` that is true on the columns of ``names`` (raises on an unknown name)."""
        names = list(names)
        unknown = [n for n in names if n not in self.modalities]
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r}; the model has {self.names}")
        row = torch.tensor([n in names for n in self.names], dtype=torch.bool, device=device)
        return row.expand(batch_size, -1)

    def validate(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        """Check a batch and return ``(data, present)``; raises ``ValueError`` naming the problem.

        Shapes and dtypes only: no value is read, so no host synchronisation happens here.
        """
        if not isinstance(batch, Batch):
            raise TypeError(f"expected a pimvae.Batch, got {type(batch).__name__}")
        unknown = [k for k in batch.data if k not in self.modalities]
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r} in batch; the model has {self.names}")
        if not batch.data:
            raise ValueError("batch has no data")
        b = len(batch)
        present = batch.present
        if present is None:
            missing = [n for n in self.names if n not in batch.data]
            if missing:
                raise ValueError(f"modality {missing[0]!r} is missing from the batch and no `present` mask says it is absent")
            device = next(iter(batch.data.values())).device
            present = torch.ones(b, len(self.names), dtype=torch.bool, device=device)
        else:
            if present.dtype != torch.bool:
                raise ValueError(f"`present` must be a bool tensor, got dtype {present.dtype}")
            if present.dim() != 2 or present.shape[1] != len(self.names):
                raise ValueError(f"`present` must have shape (B, {len(self.names)}) (one column per modality {self.names}), got {tuple(present.shape)}")
        for name, x in batch.data.items():
            self.modalities[name].check(name, x, b)
        for i, name in enumerate(self.names):
            if name not in batch.data and bool(present[:, i].any()):
                raise ValueError(f"modality {name!r} is marked present but the batch has no data for it")
        return batch.data, present

    # -- encoder ----------------------------------------------------------------------------------------------
    def features(self, data: Mapping[str, Tensor], present: Tensor) -> Tensor:
        """Every modality's feature ``h_s`` once: ``(B, M, E)``; absent slots are zero.

        Absent inputs are replaced by zeros *before* the encoder sees them, so garbage or NaN there reaches
        neither an output nor a gradient.
        """
        b = present.shape[0]
        out = []
        for i, (name, mod) in enumerate(self.modalities.items()):
            x = data.get(name)
            if x is None:
                h = present.new_zeros(b, self.aggregator.feature_dim, dtype=self._dtype())
            else:
                keep = present[:, i].view(b, *([1] * (x.dim() - 1)))
                h = mod.features(torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)))
                if h.shape != (b, self.aggregator.feature_dim):
                    raise ValueError(f"modality {name!r}: encoder output has shape {tuple(h.shape)}, expected (B, E) = ({b}, {self.aggregator.feature_dim})")
            out.append(h)
        return torch.stack(out, dim=1)

    def embed(self, data: Mapping[str, Tensor], present: Tensor) -> Embedding:
        """Subset-independent encoder work (features and the aggregator's per-modality embedding)."""
        return Embedding(self.aggregator.embed(self.features(data, present), present), present)

    def posterior(self, emb: Embedding, subset: Tensor) -> Distribution:
        """``q(z | x_S)`` for ``subset ⊆ present`` (bool ``(B, M)``)."""
        if subset.shape != emb.present.shape or subset.dtype != torch.bool:
            raise ValueError(f"subset must be bool of shape {tuple(emb.present.shape)}, got {subset.dtype} {tuple(subset.shape)}")
        return self.aggregator.pool(emb.g, subset & emb.present)

    def posteriors(self, emb: Embedding, subsets: Sequence[Tensor]) -> list[Distribution]:
        """``[posterior(emb, s) for s in subsets]``, letting the aggregator share work between the subsets."""
        for subset in subsets:
            if subset.shape != emb.present.shape or subset.dtype != torch.bool:
                raise ValueError(f"subset must be bool of shape {tuple(emb.present.shape)}, got {subset.dtype} {tuple(subset.shape)}")
        return self.aggregator.pool_many(emb.g, [s & emb.present for s in subsets])

    def encode(self, batch: Batch, subset: Tensor | Sequence[str] | None = None) -> Distribution:
        """``q(z | x_S)``; ``subset``: bool ``(B, M)``, a list of modality names, or ``None`` (the observed ones).

        A named modality that is absent for a data point is left out of that point's subset.
        """
        data, present = self.validate(batch)
        if subset is None:
            subset = present
        elif not isinstance(subset, Tensor):
            subset = self.subset_mask(subset, present.shape[0], present.device)
        return self.posterior(self.embed(data, present), subset)

    # -- decoder ----------------------------------------------------------------------------------------------
    def decoder_input(self, z: Tensor, name: str) -> Tensor:
        """The part of the latent that modality ``name``'s decoder reads: all of it, or ``(z', z̃_name)`` with private
        latents (a :class:`pimvae.private.WithPrivate` aggregator; ``z = [z', z̃_1, …, z̃_M]``)."""
        agg = self.aggregator
        if not isinstance(agg, WithPrivate):
            return z
        start = agg.shared_dim + self.names.index(name) * agg.private_dim
        return torch.cat([z[..., : agg.shared_dim], z[..., start: start + agg.private_dim]], dim=-1)

    def decode(self, z: Tensor | Mapping[str, Tensor], names: Iterable[str] | None = None) -> dict[str, Distribution]:
        """``p(x_s | z)`` for each modality (or those in ``names``). ``z (*lead, D)``, or one ``z`` per modality."""
        names = self.names if names is None else list(names)
        out = {}
        for name in names:
            z_s = z[name] if isinstance(z, Mapping) else z
            out[name] = self.modalities[name].decode(self.decoder_input(z_s, name))
        return out

    def log_likelihoods(self, z: Tensor | Mapping[str, Tensor], data: Mapping[str, Tensor], present: Tensor,
                        weighted: bool = True) -> Tensor:
        """``log p(x_s | z)`` for every modality, zero where absent: ``(*lead, B, M)``.

        Each modality is decoded once, at ``z`` or at its own ``z[name]`` (objectives pass ``z_S`` for modalities
        in S and ``z_O`` for the others). ``weighted`` applies the modalities' weights.
        """
        cols = []
        for i, (name, mod) in enumerate(self.modalities.items()):
            z_s = z[name] if isinstance(z, Mapping) else z
            x = data.get(name)
            if x is None:
                cols.append(z_s.new_zeros(z_s.shape[:-1]))
                continue
            keep = present[:, i]
            x = torch.where(keep.view(-1, *([1] * (x.dim() - 1))), x, torch.zeros((), dtype=x.dtype, device=x.device))
            ll = mod.decode(self.decoder_input(z_s, name)).log_prob(x)  # (*lead, B)
            if weighted and mod.weight != 1.0:
                ll = ll * mod.weight
            cols.append(torch.where(keep, ll, torch.zeros((), dtype=ll.dtype, device=ll.device)))
        return torch.stack(cols, dim=-1)

    # -- generation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> dict[str, Tensor]:
        """``n`` unconditional samples ``z ~ p(z)``, ``x_s ~ p(x_s | z)`` (or its mean/mode when ``mean``)."""
        z = self.prior().sample((n,))
        return self._emit(self.decode(z), mean)

    @torch.no_grad()
    def generate(self, batch: Batch, given: Sequence[str] | Tensor, num_samples: int | None = None,
                 mean: bool = True) -> dict[str, Tensor]:
        """Conditional generation / imputation: ``z ~ q(z | x_given)``, then every modality from ``p(x_s | z)``.

        Returns name → tensor of shape ``(B, …)`` (or ``(num_samples, B, …)``). Point estimates (mean, or mode
        for categorical data) when ``mean``, else samples.
        """
        if not isinstance(given, Tensor):
            given = list(given)
            if not given:
                raise ValueError("`given` is empty: name at least one modality to condition on")
        q = self.encode(batch, given)
        z = q.sample(() if num_samples is None else (num_samples,))
        return self._emit(self.decode(z), mean)

    def _emit(self, p_x: dict[str, Distribution], mean: bool) -> dict[str, Tensor]:
        return {n: (self.modalities[n].point(p) if mean else p.sample()) for n, p in p_x.items()}

    # -- saving (the format lives in pimvae.io) ----------------------------------------------------------------
    def save(self, directory) -> None:
        """Write ``config.json`` (how to rebuild) and ``model.safetensors`` (weights) into ``directory``."""
        from .io import save_model

        save_model(self, directory)

    @classmethod
    def load(cls, directory, modules=None, map_location="cpu") -> "MultimodalVAE":
        """Rebuild a saved model; ``modules``: path → module for custom parts (see :mod:`pimvae.io`)."""
        from .io import load_model

        return load_model(directory, modules=modules, cls=cls, map_location=map_location)

    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()
