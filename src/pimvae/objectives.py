"""Multi-modal variational objectives (SPEC §2) and subset distributions ρ.

An objective is a small object called as ``objective(model, batch) -> LossOutput``; it is independent of the
model's parts, so any aggregator combines with any objective and any prior.

All four share one single-sample estimator with sticking-the-landing (Algorithm 1). Per data point it draws
``z_A ~ q(z | x_A)`` for at most two subsets A (S and the observed set O), decodes every modality **once** (at
``z_S`` or ``z_O``, whichever its term needs) and scores ``log q`` terms with the parameter-detached ``q'`` where
STL asks for it. Each modality's features are computed once and shared by both posteriors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from .distributions import detach
from .nn import is_compiling
from .model import Batch, MultimodalVAE

__all__ = [
    "LossOutput",
    "SubsetSampler",
    "Hierarchical",
    "IndependentBernoulli",
    "Fixed",
    "SingleModality",
    "Objective",
    "MaskedBound",
    "MixtureBound",
    "TCBound",
    "ELBO",
    "REGISTRY",
]


@dataclass
class LossOutput:
    """``loss``: minus the batch mean of the bound estimate. ``terms``: per-data-point tensors ``(B,)``."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# Subset distributions ρ. Each maps present (B, M) → subset (B, M) with subset ⊆ present.
# ---------------------------------------------------------------------------------------------------------------
class SubsetSampler:
    def __call__(self, present: Tensor, names: Sequence[str]) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class Hierarchical(SubsetSampler):
    """Per data point ``γ ~ U(0, 1)``, ``m_s ~ Bernoulli(γ)``: the subset size is about uniform (Remark 1)."""

    def __call__(self, present: Tensor, names: Sequence[str]) -> Tensor:
        gamma = torch.rand(present.shape[0], 1, device=present.device)
        return present & (torch.rand(present.shape, device=present.device) < gamma)

    def __repr__(self) -> str:
        return "Hierarchical()"


class IndependentBernoulli(SubsetSampler):
    """Each observed modality independently with probability ``p`` (the reference code's ρ, with p = 1/2)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, present: Tensor, names: Sequence[str]) -> Tensor:
        return present & (torch.rand(present.shape, device=present.device) < self.p)

    def __repr__(self) -> str:
        return f"IndependentBernoulli(p={self.p})"


class Fixed(SubsetSampler):
    """Always the same subset, given by modality names (intersected with what is observed)."""

    def __init__(self, names: Sequence[str]):
        self.subset_names = list(names)

    def __call__(self, present: Tensor, names: Sequence[str]) -> Tensor:
        unknown = [n for n in self.subset_names if n not in names]
        if unknown:
            raise ValueError(f"Fixed subset names unknown modality {unknown[0]!r}; the model has {list(names)}")
        row = torch.tensor([n in self.subset_names for n in names], dtype=torch.bool, device=present.device)
        return present & row

    def __repr__(self) -> str:
        return f"Fixed({self.subset_names})"


class SingleModality(SubsetSampler):
    """One observed modality, chosen uniformly (ρ of the total-correlation bound)."""

    def __call__(self, present: Tensor, names: Sequence[str]) -> Tensor:
        return _one_of(present)

    def __repr__(self) -> str:
        return "SingleModality()"


def _one_of(present: Tensor) -> Tensor:
    """A uniformly chosen single observed modality per row (all-false rows stay all false)."""
    score = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
    pick = torch.nn.functional.one_hot(score.argmax(-1), present.shape[-1]).bool()
    return pick & present


def _non_empty(subset: Tensor, present: Tensor) -> Tensor:
    """Replace empty subsets by a uniformly chosen single observed modality."""
    return torch.where(subset.any(-1, keepdim=True), subset, _one_of(present))


# ---------------------------------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------------------------------
def _masked_sum(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(-1)


class Objective:
    """Base: validation, sampling of subsets and the K-sample reduction.

    Args:
        beta: weight of the KL-type terms (β = 1: a proper bound).
        subsets: the subset distribution ρ (a :class:`SubsetSampler`); each objective has its paper default.
        num_samples: K reparameterised samples per data point; the estimate is their mean, or with
            ``importance_weighted=True`` their log-mean-exp (a tighter, IWAE-style estimate).
    """

    default_sampler: type[SubsetSampler] | None = Hierarchical
    #: the objective needs every data point to observe at least one modality
    needs_observation = True

    def __init__(self, beta: float = 1.0, subsets: SubsetSampler | None = None, num_samples: int = 1,
                 importance_weighted: bool = False):
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        self.beta = float(beta)
        self.subsets = subsets if subsets is not None else (self.default_sampler() if self.default_sampler else None)
        self.num_samples = int(num_samples)
        self.importance_weighted = bool(importance_weighted)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta={self.beta}, subsets={self.subsets!r}, num_samples={self.num_samples})"

    def __call__(self, model: MultimodalVAE, batch: Batch) -> LossOutput:
        data, present = model.validate(batch)
        if self.needs_observation:
            _check_observed(present)
        emb = model.embed(data, present)
        subset = self.sample_subset(present, model.names)
        terms = self.estimate(model, emb, data, present, subset)  # each (K, B)
        total = sum(v for k, v in terms.items() if k in self.parts)
        if self.importance_weighted and self.num_samples > 1:
            bound = torch.logsumexp(total, 0) - math.log(self.num_samples)
        else:
            bound = total.mean(0)
        out = {"bound": bound, **{k: v.mean(0) for k, v in terms.items()}, "subset_size": subset.sum(-1).to(bound.dtype)}
        return LossOutput(loss=-bound.mean(), terms=out)

    # overridden -----------------------------------------------------------------------------------------------
    parts: tuple[str, ...] = ()

    def sample_subset(self, present: Tensor, names: Sequence[str]) -> Tensor:
        return self.subsets(present, names)

    def estimate(self, model, emb, data, present, subset) -> dict[str, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    # shared pieces ------------------------------------------------------------------------------------------
    def _draw(self, q):
        return q.rsample((self.num_samples,))  # (K, B, D)


def _check_observed(present: Tensor) -> None:
    observed = present.any(-1).all()
    if present.device.type == "cpu" and not is_compiling():
        # One read on CPU (no device to wait for) buys a ValueError that names the data points.
        if not bool(observed):
            idx = (~present.any(-1)).nonzero().flatten()[:5].tolist()
            raise ValueError(f"data point(s) {idx} observe no modality; this objective needs at least one per data point")
    else:  # no host synchronisation on accelerators, no graph break under torch.compile: fail asynchronously
        torch._assert_async(observed, "a data point observes no modality")


class MaskedBound(Objective):
    """The paper's masked bound ``L_S(x_S) + L_\\S(x)`` with ``S ~ ρ`` inside the observed set (eq. 4, 5).

    ``terms``: ``L_S`` and ``L_not_S`` (the two parts), ``bound`` their sum.

    It equals ``log p(x)`` when both encoders are the true posteriors. It is a lower bound on ``log p(x)`` only
    when ``q(z | x_S)`` is the true ``p(z | x_S)``: ``L_\\S`` bounds ``log ∫ p(x_\\S | z) q(z | x_S) dz``, not
    ``log p(x_\\S | x_S)``, so one data point's value can exceed ``log p(x)`` (a closed-form example is in
    ``tests/test_objectives.py``). Compare models with importance-sampled log-likelihoods
    (:func:`pimvae.evaluation.log_likelihood`), not with this value.
    """

    parts = ("L_S", "L_not_S")

    def estimate(self, model, emb, data, present, subset):
        q_s, q_o = model.posteriors(emb, [subset, present])
        z_s, z_o = self._draw(q_s), self._draw(q_o)
        # Decode each modality once: at z_S if it is in S, else at z_O.
        z = {n: torch.where(subset[:, i, None], z_s, z_o) for i, n in enumerate(model.names)}
        ll = model.log_likelihoods(z, data, present)  # (K, B, M)
        p_z = model.prior()
        l_s = _masked_sum(ll, subset) + self.beta * (p_z.log_prob(z_s) - detach(q_s).log_prob(z_s))
        l_not_s = _masked_sum(ll, present & ~subset) + self.beta * (q_s.log_prob(z_o) - detach(q_o).log_prob(z_o))
        # S = O: L_\S is exactly zero (its estimate would be a zero-mean score term).
        l_not_s = torch.where((subset == present).all(-1), torch.zeros((), dtype=l_not_s.dtype), l_not_s)
        return {"L_S": l_s, "L_not_S": l_not_s}


class MixtureBound(Objective):
    """``E_{q(z|x_S)}[log p(x_O | z)] − β KL(q(z|x_S) || p(z))`` with non-empty ``S ~ ρ`` (eq. 1)."""

    parts = ("log_lik", "neg_kl")

    def sample_subset(self, present, names):
        return _non_empty(self.subsets(present, names), present)

    def estimate(self, model, emb, data, present, subset):
        q_s = model.posterior(emb, subset)
        z_s = self._draw(q_s)
        ll = model.log_likelihoods(z_s, data, present)
        kl = model.prior().log_prob(z_s) - detach(q_s).log_prob(z_s)  # minus a one-sample KL estimate
        return {"log_lik": _masked_sum(ll, present), "neg_kl": self.beta * kl}


class TCBound(Objective):
    """``E_{q(z|x_O)}[log p(x_O | z)] − β KL(q(z|x_O) || q(z|x_S))``, ρ on single modalities (L^TC)."""

    default_sampler = SingleModality
    parts = ("log_lik", "neg_kl")

    def sample_subset(self, present, names):
        return _non_empty(self.subsets(present, names), present)

    def estimate(self, model, emb, data, present, subset):
        q_s, q_o = model.posteriors(emb, [subset, present])
        z_o = self._draw(q_o)
        ll = model.log_likelihoods(z_o, data, present)
        kl = q_s.log_prob(z_o) - detach(q_o).log_prob(z_o)
        return {"log_lik": _masked_sum(ll, present), "neg_kl": self.beta * kl}


class ELBO(Objective):
    """The plain ELBO on the observed set, ``L_O``."""

    default_sampler = None
    parts = ("log_lik", "neg_kl")

    def sample_subset(self, present, names):
        return present

    def estimate(self, model, emb, data, present, subset):
        q_o = model.posterior(emb, present)
        z_o = self._draw(q_o)
        ll = model.log_likelihoods(z_o, data, present)
        kl = model.prior().log_prob(z_o) - detach(q_o).log_prob(z_o)
        return {"log_lik": _masked_sum(ll, present), "neg_kl": self.beta * kl}


REGISTRY: dict[str, type[Objective]] = {"masked": MaskedBound, "mixture": MixtureBound, "tc": TCBound, "elbo": ELBO}
SUBSET_SAMPLERS: dict[str, type[SubsetSampler]] = {
    "hierarchical": Hierarchical,
    "bernoulli": IndependentBernoulli,
    "fixed": Fixed,
    "single": SingleModality,
}
