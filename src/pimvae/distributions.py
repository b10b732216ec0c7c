"""Small helpers on top of ``torch.distributions``.

Every stochastic object in pimvae is a ``torch.distributions.Distribution``. This module adds the three things
the multi-modal objectives need and torch does not provide:

* :func:`diag_normal` — a diagonal Gaussian with event shape ``(D,)``;
* :class:`ReparamMixture` — a Gaussian mixture whose ``rsample`` draws the component index without gradient and
  reparameterises inside the chosen component (the estimator of SPEC §2);
* :func:`detach` — the same distribution with its parameters detached (the ``q'`` of sticking-the-landing),
  mixture weights included. Distribution types register how they are detached, instead of being branched on.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Independent,
    Laplace,
    MixtureSameFamily,
    Normal,
)

__all__ = ["diag_normal", "diag_normal_mixture", "ReparamMixture", "detach", "register_detach"]


def diag_normal(loc: Tensor, scale: Tensor) -> Independent:
    """``N(loc, diag(scale²))`` with batch shape ``loc.shape[:-1]`` and event shape ``loc.shape[-1:]``.

    Built without torch's argument validation: it reads values back to the host (``bool(tensor)``) at every
    construction and every ``log_prob``, i.e. several synchronisations per training step. Scales are positive by
    construction here (``min_scale + softplus``, ``rsqrt`` of a precision ≥ 1).
    """
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


class ReparamMixture(MixtureSameFamily):
    """A mixture of diagonal Gaussians with a reparameterised sample inside the sampled component.

    The component index is drawn without gradient; the draw inside the component is ``loc + scale * eps``, so
    gradients flow to the component's parameters (not to the mixture weights, as in SPEC §2).
    """

    has_rsample = True

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        sample_shape = torch.Size(sample_shape)
        with torch.no_grad():
            idx = self.mixture_distribution.sample(sample_shape)  # (*S, *B)
        parts = _diag_normal_parts(self.component_distribution)
        if parts is None:  # another reparameterisable family: draw every component, keep the chosen one
            comp = self.component_distribution.rsample(sample_shape)  # (*S, *B, K, D)
            return comp.gather(-2, idx[..., None, None].expand(*idx.shape, 1, comp.shape[-1])).squeeze(-2)
        # Draw only the chosen component: gather its parameters, then loc + scale * eps, (*S, *B, D).
        loc, scale = (p.expand(*sample_shape, *p.shape) for p in parts)  # (*S, *B, K, D)
        index = idx[..., None, None].expand(*idx.shape, 1, loc.shape[-1])
        loc, scale = loc.gather(-2, index).squeeze(-2), scale.gather(-2, index).squeeze(-2)
        return loc + scale * torch.randn_like(loc)

    def log_prob(self, value: Tensor) -> Tensor:
        parts = _diag_normal_parts(self.component_distribution)
        if parts is None:
            return super().log_prob(value)
        loc, scale = parts  # (*B, K, D)
        # The Gaussian log-density in four passes over (*S, *B, K, D) instead of torch's seven; Σ log σ is per
        # component, computed before broadcasting against the samples. Measured against torch's
        # MixtureSameFamily.log_prob: 0.55-0.73x at K = 32, 0.84-0.96x at K = 5 (python -m bench.mixture_log_prob);
        # with the one-component rsample above, MoPoE masked step 0.90x (docs/performance.md, "mixtures"). Equal to
        # torch's, values and gradients, to 1e-12
        # (tests/test_optimisations.py::test_mixture_log_prob_equals_torch_mixture_same_family).
        y = (value.unsqueeze(-2) - loc) / scale
        log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)  # (*B, K)
        comp = -0.5 * y.square().sum(-1) - log_norm  # (*S, *B, K)
        return torch.logsumexp(comp + torch.log_softmax(self.mixture_distribution.logits, dim=-1), dim=-1)


def _diag_normal_parts(dist: Distribution) -> tuple[Tensor, Tensor] | None:
    """``(loc, scale)`` when ``dist`` is a diagonal Gaussian with event shape ``(D,)``, else ``None``."""
    if isinstance(dist, Independent) and dist.reinterpreted_batch_ndims == 1 and type(dist.base_dist) is Normal:
        return dist.base_dist.loc, dist.base_dist.scale
    return None


def diag_normal_mixture(logits: Tensor, loc: Tensor, scale: Tensor) -> ReparamMixture:
    """Mixture ``Σ_k softmax(logits)_k N(loc_k, diag scale_k²)``; ``logits (*B, K)``, ``loc, scale (*B, K, D)``."""
    return ReparamMixture(Categorical(logits=logits, validate_args=False), diag_normal(loc, scale), validate_args=False)


_DETACHERS: dict[type, Callable[[Distribution], Distribution]] = {}


def register_detach(cls: type) -> Callable:
    """Register how a distribution type builds its parameter-detached copy."""

    def deco(fn: Callable[[Distribution], Distribution]) -> Callable[[Distribution], Distribution]:
        _DETACHERS[cls] = fn
        return fn

    return deco


def detach(dist: Distribution) -> Distribution:
    """The same distribution with every parameter detached from the autograd graph (STL's ``q'``)."""
    for cls in type(dist).__mro__:
        fn = _DETACHERS.get(cls)
        if fn is not None:
            return fn(dist)
    raise TypeError(f"don't know how to detach a {type(dist).__name__}; register it with pimvae.distributions.register_detach")


@register_detach(Normal)
def _(d: Normal) -> Normal:
    return Normal(d.loc.detach(), d.scale.detach(), validate_args=False)


@register_detach(Laplace)
def _(d: Laplace) -> Laplace:
    return Laplace(d.loc.detach(), d.scale.detach(), validate_args=False)


@register_detach(Categorical)
def _(d: Categorical) -> Categorical:
    return Categorical(logits=d.logits.detach(), validate_args=False)


@register_detach(Bernoulli)
def _(d: Bernoulli) -> Bernoulli:
    return Bernoulli(logits=d.logits.detach(), validate_args=False)


@register_detach(Independent)
def _(d: Independent) -> Independent:
    return Independent(detach(d.base_dist), d.reinterpreted_batch_ndims, validate_args=False)


@register_detach(MixtureSameFamily)
def _(d: MixtureSameFamily) -> MixtureSameFamily:
    return type(d)(detach(d.mixture_distribution), detach(d.component_distribution), validate_args=False)
