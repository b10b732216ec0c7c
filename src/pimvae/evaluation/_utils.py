"""Plumbing shared by the evaluation functions: data → batches, subsets, eval mode, seeded particle noise, KLs.

Reproducibility per data point. Monte Carlo evaluations take ``seed``. With ``seed=None`` they draw from torch's
global generator (results then agree across batch layouts only up to Monte Carlo noise). With an integer seed,
each data point owns a generator seeded from ``(seed, index)`` — ``index`` is the data point's position in the
data set (or what the caller passes) — and draws *all* of its particles' noise in one call. A data point's estimate
then depends only on its data, its index, the seed and the particle count: batch size and chunk size change
nothing, not even the last bit.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.distributions import (
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from ..data.dataset import MultimodalDataset
from ..model import Batch, MultimodalVAE
from ..private import PrivatePosterior

__all__ = ["Data", "SubsetSpec", "evaluating", "seeded", "iter_batches", "resolve_subset", "subset_key", "ParticleNoise",
           "reparam", "register_reparam", "kl", "as_mvn", "check_positive"]

#: what evaluation functions accept as data
Data = Union[Batch, MultimodalDataset]
#: a subset: ``None`` (the observed modalities), modality names, or a bool mask ``(M,)`` / ``(N, M)``
SubsetSpec = Union[None, Sequence[str], Tensor]


def check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@contextlib.contextmanager
def evaluating(model: MultimodalVAE):
    """``torch.no_grad`` and ``model.eval()`` inside; the training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def seeded(model: MultimodalVAE, seed: int | None):
    """Seed torch's generators (CPU, and the model's accelerator) inside a forked RNG state; ``None``: no-op."""
    if seed is None:
        yield
        return
    device = model_device(model)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def model_device(model: MultimodalVAE) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def num_points(data: Data) -> int:
    if isinstance(data, (Batch, MultimodalDataset)):
        return len(data)
    raise TypeError(f"expected a pimvae.Batch or a pimvae.data.MultimodalDataset, got {type(data).__name__}")


def iter_batches(model: MultimodalVAE, data: Data, batch_size: int, index: Tensor | None = None
                 ) -> Iterator[tuple[Batch, Tensor, slice]]:
    """Consecutive ``(batch, index, rows)``: a batch on the model's device, the data points' indices (for seeds)
    and the rows of ``data`` it holds. ``index`` defaults to ``0 … N−1``."""
    n = num_points(data)
    batch_size = check_positive("batch_size", batch_size)
    if index is None:
        index = torch.arange(n)
    else:
        index = torch.as_tensor(index).long().flatten().cpu()
        if index.shape[0] != n:
            raise ValueError(f"index has {index.shape[0]} entries for {n} data points")
    device = model_device(model)
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        if isinstance(data, MultimodalDataset):
            batch = data.batch(torch.arange(rows.start, rows.stop))
        elif rows.start == 0 and rows.stop == n:
            batch = data
        else:
            present = None if data.present is None else data.present[rows]
            batch = Batch({k: v[rows] for k, v in data.data.items()}, present)
        yield batch.to(device), index[rows], rows


def resolve_subset(model: MultimodalVAE, subset: SubsetSpec, present: Tensor, rows: slice | None = None,
                   allow_empty: bool = False) -> Tensor:
    """``bool (B, M)``: the subset intersected with what each data point observes.

    ``subset`` is ``None`` (everything observed), modality names, a bool ``(M,)`` row, or a bool ``(N, M)`` mask
    over the whole data set (then ``rows`` selects this batch's part).
    """
    b, m = present.shape
    if subset is None:
        return present
    if isinstance(subset, Tensor):
        if subset.dtype != torch.bool:
            raise ValueError(f"a subset mask must be a bool tensor, got dtype {subset.dtype}")
        if subset.dim() == 1:
            if subset.shape[0] != m:
                raise ValueError(f"a subset row must have {m} entries (one per modality {model.names}), got {subset.shape[0]}")
            mask = subset.to(present.device).expand(b, m)
        elif subset.dim() == 2 and subset.shape[1] == m:
            mask = subset[rows] if rows is not None else subset
            if mask.shape[0] != b:
                raise ValueError(f"subset mask has {mask.shape[0]} rows for a batch of {b}")
            mask = mask.to(present.device)
        else:
            raise ValueError(f"a subset mask must have shape ({m},) or (N, {m}), got {tuple(subset.shape)}")
        if not allow_empty and not bool(mask.any()):
            raise ValueError("the subset is empty: name at least one modality")
        return mask & present
    if isinstance(subset, str):
        subset = [subset]
    names = list(subset)
    if not names and not allow_empty:
        raise ValueError("the subset is empty: name at least one modality")
    return model.subset_mask(names, b, present.device) & present  # raises on an unknown name


def subset_names(model: MultimodalVAE, subset: SubsetSpec) -> list[str] | None:
    """Names of a subset given by names or a ``(M,)`` mask; ``None`` for the observed set or a per-point mask."""
    if subset is None:
        return None
    if isinstance(subset, Tensor):
        if subset.dim() == 1:
            return [n for n, on in zip(model.names, subset.tolist()) if on]
        return None
    if isinstance(subset, str):
        return [subset]
    return list(subset)


def subset_key(names: Sequence[str] | None) -> str:
    """A short printable key for a subset: ``"x0+x2"``, ``"observed"`` for ``None``, ``"empty"`` for ``[]``."""
    if names is None:
        return "observed"
    return "+".join(names) if names else "empty"


# ---------------------------------------------------------------------------------------------------------------
# Seeded particle noise and reparameterised draws
# ---------------------------------------------------------------------------------------------------------------
def point_seed(seed: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed mixed from ``(seed, index, stream)`` (numpy's SeedSequence hashing: nearby tuples give
    unrelated seeds). ``stream`` separates independent draws for the same data point (e.g. two proposals)."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    words = [seed & 0xFFFFFFFF, seed >> 32, int(index) & 0xFFFFFFFF, int(index) >> 32 & 0xFFFFFFFF, int(stream)]
    hi, lo = (int(w) for w in np.random.SeedSequence(words).generate_state(2))
    return (hi << 31) ^ (lo & 0x7FFFFFFF)


class ParticleNoise:
    """Base noise for ``num`` particles of ``B`` data points: ``u (K, B)`` uniform and ``eps (K, B, D)`` normal.

    ``seed=None``: drawn lazily, chunk by chunk, from the global generator. Integer ``seed``: every data point's
    noise for all ``num`` particles is drawn at once from its own generator (see the module docstring), so any
    chunking of the particles slices the same numbers.
    """

    def __init__(self, num: int, index: Tensor, latent_dim: int, seed: int | None, dtype: torch.dtype,
                 device: torch.device, stream: int = 0):
        self.num, self.dim, self.dtype, self.device = int(num), int(latent_dim), dtype, device
        self.b = int(index.shape[0])
        self.u = self.eps = None
        if seed is not None:
            us, es = [], []
            for i in index.tolist():
                g = torch.Generator().manual_seed(point_seed(seed, i, stream))
                us.append(torch.rand(self.num, generator=g, dtype=torch.float64))
                es.append(torch.randn(self.num, self.dim, generator=g, dtype=torch.float64))
            self.u = torch.stack(us, 1).to(device=device, dtype=dtype)  # (K, B)
            self.eps = torch.stack(es, 1).to(device=device, dtype=dtype)  # (K, B, D)

    def take(self, start: int, size: int) -> tuple[Tensor, Tensor]:
        if self.u is not None:
            return self.u[start:start + size], self.eps[start:start + size]
        u = torch.rand(size, self.b, dtype=self.dtype, device=self.device)
        eps = torch.randn(size, self.b, self.dim, dtype=self.dtype, device=self.device)
        return u, eps


_REPARAM: dict[type, Callable[[Distribution, Tensor, Tensor], Tensor]] = {}


def register_reparam(cls: type) -> Callable:
    """Register how a distribution type turns base noise ``u (K, *B)``, ``eps (K, *B, D)`` into a draw ``(K, *B, D)``."""

    def deco(fn):
        _REPARAM[cls] = fn
        return fn

    return deco


def reparam(q: Distribution, u: Tensor, eps: Tensor) -> Tensor:
    """A draw from ``q`` built from the given noise; types without a registered rule fall back on ``q.sample``
    (the global generator: not reproducible per data point)."""
    for cls in type(q).__mro__:
        fn = _REPARAM.get(cls)
        if fn is not None:
            return fn(q, u, eps)
    return q.sample((u.shape[0],))


@register_reparam(Independent)
def _(q: Independent, u: Tensor, eps: Tensor) -> Tensor:
    base = q.base_dist
    if isinstance(base, Normal) and q.reinterpreted_batch_ndims == 1:
        return base.loc + base.scale * eps
    return q.sample((u.shape[0],))


@register_reparam(PrivatePosterior)
def _(q: PrivatePosterior, u: Tensor, eps: Tensor) -> Tensor:
    # The first D' noise coordinates draw z' from the shared posterior, the rest the private parts given z'.
    eps_shared, eps_private = q.split(eps)
    z_shared = reparam(q.shared, u, eps_shared)  # (K, *B, D')
    loc, scale = q.private(z_shared)  # (K, *B, M, D̃); (0, 1) outside S
    return torch.cat([z_shared, (loc + scale * eps_private).flatten(-2)], dim=-1)


@register_reparam(MultivariateNormal)
def _(q: MultivariateNormal, u: Tensor, eps: Tensor) -> Tensor:
    return q.loc + (q.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)


@register_reparam(MixtureSameFamily)
def _(q: MixtureSameFamily, u: Tensor, eps: Tensor) -> Tensor:
    # Component by inverting the CDF of the mixture weights at u (zero-weight components are never picked),
    # then the same eps pushed through every component and the chosen one kept.
    probs = q.mixture_distribution.probs  # (*B, C)
    cdf = probs.cumsum(-1)
    c = probs.shape[-1]
    idx = torch.searchsorted(cdf.expand(*u.shape, c).contiguous(), u.unsqueeze(-1).contiguous(), right=True)
    idx = idx.clamp(max=c - 1)  # (K, *B, 1); rounding at the top end
    comp = q.component_distribution
    if isinstance(comp, Independent) and isinstance(comp.base_dist, Normal) and comp.reinterpreted_batch_ndims == 1:
        # Diagonal Gaussian components: gather the chosen component's parameters, (K, *B, D), not all C draws.
        d = eps.shape[-1]
        gather = idx.unsqueeze(-1).expand(*idx.shape, d)  # (K, *B, 1, D)
        loc = comp.base_dist.loc.expand(*u.shape, c, d).gather(-2, gather).squeeze(-2)
        scale = comp.base_dist.scale.expand(*u.shape, c, d).gather(-2, gather).squeeze(-2)
        return loc + scale * eps
    draws = reparam(comp, u.unsqueeze(-1), eps.unsqueeze(-2))  # (K, *B, C, D)
    return draws.gather(-2, idx.unsqueeze(-1).expand(*idx.shape, draws.shape[-1])).squeeze(-2)


# ---------------------------------------------------------------------------------------------------------------
# KL divergences
# ---------------------------------------------------------------------------------------------------------------
def as_mvn(q: Distribution) -> MultivariateNormal | None:
    """A diagonal ``Independent(Normal)`` or a ``MultivariateNormal`` as a ``MultivariateNormal``; else ``None``."""
    if isinstance(q, MultivariateNormal):
        return q
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        return MultivariateNormal(q.base_dist.loc, scale_tril=torch.diag_embed(q.base_dist.scale))
    return None


def kl(q: Distribution, p: Distribution, z: Tensor | None = None) -> Tensor:
    """``KL(q || p)``: closed form when torch registers one (Gaussians are promoted to ``MultivariateNormal`` for
    mixed pairs); otherwise the Monte Carlo mean of ``log q(z) − log p(z)`` over draws ``z (K, *B, D)`` from q."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        pass
    q_mvn, p_mvn = as_mvn(q), as_mvn(p)
    if q_mvn is not None and p_mvn is not None:
        return kl_divergence(q_mvn, p_mvn)
    if z is None:
        raise ValueError(f"no closed-form KL({type(q).__name__} || {type(p).__name__}): pass samples z from q")
    return (q.log_prob(z) - p.log_prob(z)).mean(0)


def logmeanexp(x: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])
