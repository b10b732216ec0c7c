"""Running a model over a data set: latents, conditional generation, imputation and unconditional samples."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..data.dataset import MultimodalDataset
from ..model import MultimodalVAE
from ._utils import (
    Data,
    ParticleNoise,
    SubsetSpec,
    check_positive,
    evaluating,
    iter_batches,
    reparam,
    resolve_subset,
    seeded,
)

__all__ = ["latents", "latent_activity", "active_units", "generate", "reconstruct", "impute", "sample"]


def latents(model: MultimodalVAE, data: Data, subset: SubsetSpec = None, mean: bool = True,
            batch_size: int = 256, seed: int | None = None, index: Tensor | None = None) -> Tensor:
    """``(N, D)``: the mean of ``q(z | x_S)`` per data point, or one draw from it (``mean=False``; seeded per data
    point as in :func:`pimvae.evaluation.log_likelihood`)."""
    out = []
    with evaluating(model):
        for batch, idx, rows in iter_batches(model, data, batch_size, index):
            d, present = model.validate(batch)
            q = model.posterior(model.embed(d, present), resolve_subset(model, subset, present, rows))
            if mean:
                out.append(q.mean)
            else:
                loc = q.mean
                noise = ParticleNoise(1, idx, model.latent_dim, seed, loc.dtype, loc.device, stream=7)
                out.append(reparam(q, *noise.take(0, 1))[0])
    return torch.cat(out)


def latent_activity(model: MultimodalVAE, data: Data, subset: SubsetSpec = None, batch_size: int = 256) -> Tensor:
    """``(D,)``: the activity ``Var_x(E_q[z_d | x_S])`` of each latent dimension over the data (Burda et al., 2016).

    A dimension whose posterior mean does not move with the data carries no information about it: the encoder
    has collapsed it to the prior and the decoder ignores it. For the exact posterior of a model with prior
    N(0, I), the law of total variance gives ``1 − E_x[Var(z_d | x_S)]``."""
    return latents(model, data, subset, mean=True, batch_size=batch_size).double().var(0)


def active_units(model: MultimodalVAE, data: Data, subset: SubsetSpec = None, threshold: float = 0.01,
                 batch_size: int = 256) -> int:
    """The number of latent dimensions with :func:`latent_activity` above ``threshold`` (Burda et al.'s 0.01)."""
    return int((latent_activity(model, data, subset, batch_size) > threshold).sum())


def _given_names(model: MultimodalVAE, given) -> list[str]:
    if isinstance(given, str):
        given = [given]
    given = list(given)
    if not given:
        raise ValueError("`given` is empty: name at least one modality to condition on")
    unknown = [n for n in given if n not in model.modalities]
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}; the model has {model.names}")
    return given


def generate(model: MultimodalVAE, data: Data, given: Sequence[str], names: Sequence[str] | None = None,
             num_samples: int | None = None, mean: bool = True, batch_size: int = 256,
             seed: int | None = None) -> dict[str, Tensor]:
    """Conditional generation over a data set: ``z ~ q(z | x_given)``, then ``x_m ~ p(x_m | z)`` for each ``m`` in
    ``names`` (all modalities by default). Point estimates (mean, or mode for categorical data) when ``mean``.

    Returns name → ``(N, …)``, or ``(num_samples, N, …)``. Data points that observe nothing of ``given`` are
    generated from the empty encoding (the prior for PoE / MoE).
    """
    given = _given_names(model, given)
    names = model.names if names is None else list(names)
    unknown = [n for n in names if n not in model.modalities]
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}; the model has {model.names}")
    if num_samples is not None:
        num_samples = check_positive("num_samples", num_samples)
    out: dict[str, list[Tensor]] = {n: [] for n in names}
    with seeded(model, seed), evaluating(model):
        for batch, _, _ in iter_batches(model, data, batch_size):
            q = model.encode(batch, given)
            z = q.sample(() if num_samples is None else (num_samples,))
            p_x = model.decode(z, names)
            for n in names:
                out[n].append(model.modalities[n].point(p_x[n]) if mean else p_x[n].sample())
    axis = 0 if num_samples is None else 1
    return {n: torch.cat(v, axis) for n, v in out.items()}


def reconstruct(model: MultimodalVAE, data: Data, mean: bool = True, batch_size: int = 256,
                seed: int | None = None) -> dict[str, Tensor]:
    """Every modality generated from ``q(z | x_O)`` (all observed modalities)."""
    return generate(model, data, model.names, mean=mean, batch_size=batch_size, seed=seed)


def impute(model: MultimodalVAE, dataset: MultimodalDataset, mean: bool = True, batch_size: int = 256,
           seed: int | None = None) -> MultimodalDataset:
    """Fill every absent modality from ``q(z | x_O)`` of the data point's observed ones; observed values are kept.

    Returns a fully observed :class:`MultimodalDataset` (extras carried over).
    """
    if not isinstance(dataset, MultimodalDataset):
        raise TypeError(f"impute takes a MultimodalDataset, got {type(dataset).__name__}")
    gen = generate(model, dataset, model.names, mean=mean, batch_size=batch_size, seed=seed)
    filled = {}
    for i, name in enumerate(model.names):
        g = gen[name].to(dataset.present.device)
        if name not in dataset.data:
            filled[name] = g
            continue
        x = dataset.data[name]
        keep = dataset.present[:, i].view(-1, *([1] * (x.dim() - 1)))
        filled[name] = torch.where(keep, x, g.to(x.dtype))
    return MultimodalDataset(filled, None, dataset.extras)


def sample(model: MultimodalVAE, n: int, mean: bool = True, seed: int | None = None) -> dict[str, Tensor]:
    """``n`` unconditional samples ``z ~ p(z)``, ``x_s ~ p(x_s | z)`` (point estimates when ``mean``)."""
    n = check_positive("n", n)
    with seeded(model, seed), evaluating(model):
        return model.sample(n, mean=mean)
