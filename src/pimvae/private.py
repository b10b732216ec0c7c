"""Private latent variables (SPEC §5, Appendix F, Algorithm 2, Examples 16-18).

The latent is ``z = (z', z̃_1, …, z̃_M)``: a shared ``z'`` (size D') and one private ``z̃_s`` (size D̃) per
modality, stored as one flat vector ``[z', z̃_1, …, z̃_M]`` of size ``D' + M·D̃``. Decoder s reads
``(z', z̃_s)`` (:meth:`pimvae.MultimodalVAE.decoder_input`); the prior factorises ``p(z') Π_s N(z̃_s; 0, I)``.

The encoder is ``q(z' | x_S) Π_{s∈S} q(z̃_s | z', x_S) Π_{s∉S} N(z̃_s; 0, I)``:

* ``q(z' | x_S)``: any :class:`pimvae.aggregators.Aggregator` (permutation invariant);
* ``q(z̃_s | z', x_S)``: a permutation-**equivariant** private encoder — :class:`IndependentPrivate` (Example
  16, ``q(z̃_s | x_s)``), :class:`SumPoolingPrivate` (Example 17) or :class:`SelfAttentionPrivate` (Example 18).

:class:`WithPrivate` wraps the two as one aggregator whose posterior, :class:`PrivatePosterior`, is a
``Distribution`` over the flat vector with ``rsample``, ``log_prob`` and a registered :func:`detach`, so every
objective works unchanged: ``log q(z | x_S) = log q(z' | x_S) + Σ_{s∈S} log q(z̃_s | z', x_S) + Σ_{s∉S} log N(z̃_s)``
is exactly the sum of Algorithm 2's terms, and the decomposition of the KL terms of Remark 20 is what the
single-sample estimator estimates. :class:`PrivatePrior` wraps a shared prior.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, constraints

from .aggregators.base import Aggregator
from .aggregators.learned import AttentionBlock
from .distributions import detach, register_detach
from .nn import MLP, masked_sum, positive_scale
from .priors import Prior

__all__ = [
    "PrivateEncoder",
    "IndependentPrivate",
    "SumPoolingPrivate",
    "SelfAttentionPrivate",
    "PrivatePosterior",
    "PrivatePriorDistribution",
    "WithPrivate",
    "PrivatePrior",
    "REGISTRY",
]


def _zero(x: Tensor) -> Tensor:
    return torch.zeros((), dtype=x.dtype, device=x.device)


# ---------------------------------------------------------------------------------------------------------------
# Private encoders q(z̃_s | z', x_S): permutation-equivariant maps (z' (*S, B, D'), h (B, M, E), subset (B, M))
# → (loc, scale), each (*S, B, M, D̃). Slots outside S get (0, 1): the prior N(0, I).
# ---------------------------------------------------------------------------------------------------------------
class PrivateEncoder(nn.Module):
    """Base class. Subclasses implement :meth:`raw` → ``(*S, B, M, 2D̃)`` = ``[loc, raw scale]`` per slot, and may
    move the work that depends on neither z' nor the subset into :meth:`features`.

    :meth:`forward` zeroes ``h`` outside the subset before any network sees it (so NaN there reaches neither an
    output nor a gradient) and sets the slots outside S to ``loc = 0, scale = 1``.

    The split matters for the masked bound: the private encoder runs again for every ``log q`` (z' changes between
    draws, and sticking-the-landing scores with detached parameters), five times per step, but its per-slot
    features are computed once per batch (:class:`PrivatePosterior` holds them; the detached copy detaches them).
    """

    #: size of z' the encoder reads (``None``: it does not read z')
    shared_dim: int | None = None

    def __init__(self, feature_dim: int, private_dim: int, min_scale: float = 1e-3):
        super().__init__()
        if feature_dim < 1 or private_dim < 1:
            raise ValueError(f"feature_dim and private_dim must be positive, got {feature_dim}, {private_dim}")
        self.feature_dim, self.private_dim, self.min_scale = int(feature_dim), int(private_dim), float(min_scale)

    def forward(self, z_shared: Tensor, h: Tensor, subset: Tensor,
                features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``features``: :meth:`features` of an ``h`` that agrees with this one on the slots in S and is finite
        elsewhere, when already computed (shared between draws and subsets); else computed here from ``h``."""
        self._check(z_shared, h, subset)
        if features is None:
            features = self.features(torch.where(subset[..., None], h, _zero(h)))
        raw = self.raw(z_shared, features, subset)  # (*S, B, M, 2D̃)
        loc, raw_scale = raw.split(self.private_dim, dim=-1)
        scale = positive_scale(raw_scale, self.min_scale)
        on = subset[..., None]
        return torch.where(on, loc, _zero(loc)), torch.where(on, scale, torch.ones((), dtype=scale.dtype,
                                                                                    device=scale.device))

    def features(self, h: Tensor) -> Tensor:
        """Per-slot features ``(B, M, F')`` that depend on neither z' nor the subset (default: ``h`` itself).

        Slot s's features may depend on ``h_s`` only: slots outside S hold arbitrary finite values, which
        :meth:`raw` must ignore."""
        return h

    def raw(self, z_shared: Tensor, features: Tensor, subset: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _check(self, z_shared: Tensor, h: Tensor, subset: Tensor) -> None:
        if h.dim() != 3 or h.shape[-1] != self.feature_dim:
            raise ValueError(f"private encoder: features must have shape (B, M, {self.feature_dim}), got {tuple(h.shape)}")
        if subset.dtype != torch.bool or tuple(subset.shape) != tuple(h.shape[:2]):
            raise ValueError(f"private encoder: subset must be bool of shape {tuple(h.shape[:2])}, got "
                             f"{subset.dtype} {tuple(subset.shape)}")
        if z_shared.dim() < 2 or z_shared.shape[-2] != h.shape[0]:
            raise ValueError(f"private encoder: z_shared must have shape (*S, B, D') with B = {h.shape[0]}, "
                             f"got {tuple(z_shared.shape)}")
        if self.shared_dim is not None and z_shared.shape[-1] != self.shared_dim:
            raise ValueError(f"private encoder: z_shared has size {z_shared.shape[-1]}, expected shared_dim = "
                             f"{self.shared_dim}")

    def config(self) -> dict:
        return {"feature_dim": self.feature_dim, "private_dim": self.private_dim, "min_scale": self.min_scale}


class IndependentPrivate(PrivateEncoder):
    """``q(z̃_s | x_s) = N(μ̃_s(h_s), σ̃_s(h_s)²)`` from a linear head of ``h_s`` (Example 16, the PoE model).

    Depends neither on z' nor on the other modalities (trivially equivariant).
    """

    def __init__(self, feature_dim: int, private_dim: int, min_scale: float = 1e-3):
        super().__init__(feature_dim, private_dim, min_scale)
        self.head = nn.Linear(feature_dim, 2 * private_dim)

    def features(self, h: Tensor) -> Tensor:
        return self.head(h)  # (B, M, 2D̃)

    def raw(self, z_shared: Tensor, features: Tensor, subset: Tensor) -> Tensor:
        return features.expand(*z_shared.shape[:-2], *features.shape)


class SumPoolingPrivate(PrivateEncoder):
    """``[μ̃_s, raw σ̃_s] = ρ(Σ_{t∈S} χ₀(h_t) + χ₁(z') + χ₂(h_s))`` (Example 17); χ_j, ρ MLPs."""

    def __init__(self, feature_dim: int, shared_dim: int, private_dim: int, width: int = 128,
                 hidden: Sequence[int] = (128,), activation: str = "relu", min_scale: float = 1e-3):
        super().__init__(feature_dim, private_dim, min_scale)
        if shared_dim < 1 or width < 1:
            raise ValueError(f"shared_dim and width must be positive, got {shared_dim}, {width}")
        self.shared_dim, self.width, self.hidden, self.activation = int(shared_dim), int(width), list(hidden), activation
        self.chi0 = MLP(feature_dim, hidden, width, activation)
        self.chi1 = MLP(shared_dim, hidden, width, activation)
        self.chi2 = MLP(feature_dim, hidden, width, activation)
        self.rho = MLP(width, hidden, 2 * private_dim, activation)

    def features(self, h: Tensor) -> Tensor:
        return torch.cat([self.chi0(h), self.chi2(h)], dim=-1)  # (B, M, 2W)

    def raw(self, z_shared: Tensor, features: Tensor, subset: Tensor) -> Tensor:
        pooled_in, own = features.split(self.width, dim=-1)
        per_slot = own + masked_sum(pooled_in, subset)[:, None, :]  # (B, M, W)
        return self.rho(per_slot + self.chi1(z_shared)[..., None, :])  # (*S, B, M, 2D̃)

    def config(self) -> dict:
        return {**super().config(), "shared_dim": self.shared_dim, "width": self.width, "hidden": self.hidden,
                "activation": self.activation}


class SelfAttentionPrivate(PrivateEncoder):
    """A masked set transformer over ``g⁰_s = χ₁(h_s) + χ₂(z')``, ``s ∈ S``, then a per-slot head
    ``[μ̃_s, raw σ̃_s] = ρ(g^L_s)`` (Example 18). Slots outside S neither attend nor are attended to."""

    def __init__(self, feature_dim: int, shared_dim: int, private_dim: int, width: int = 128,
                 hidden: Sequence[int] = (128,), num_blocks: int = 1, num_heads: int = 4, ff_dim: int = 128,
                 activation: str = "relu", min_scale: float = 1e-3):
        super().__init__(feature_dim, private_dim, min_scale)
        if shared_dim < 1 or width < 1:
            raise ValueError(f"shared_dim and width must be positive, got {shared_dim}, {width}")
        self.shared_dim, self.width, self.hidden, self.activation = int(shared_dim), int(width), list(hidden), activation
        self.num_blocks, self.num_heads, self.ff_dim = int(num_blocks), int(num_heads), int(ff_dim)
        self.chi1 = MLP(feature_dim, hidden, width, activation)
        self.chi2 = MLP(shared_dim, hidden, width, activation)
        self.blocks = nn.ModuleList(AttentionBlock(width, num_heads, ff_dim, activation) for _ in range(num_blocks))
        self.rho = MLP(width, hidden, 2 * private_dim, activation)

    def features(self, h: Tensor) -> Tensor:
        return self.chi1(h)  # (B, M, W)

    def raw(self, z_shared: Tensor, features: Tensor, subset: Tensor) -> Tensor:
        lead = z_shared.shape[:-2]
        b, m, _ = features.shape
        g = features + self.chi2(z_shared)[..., None, :]  # (*S, B, M, W)
        g = g.reshape(-1, m, self.width)  # sample axes folded into the batch
        s = subset.expand(*lead, b, m).reshape(-1, m)
        for block in self.blocks:
            g = block(g, s)
        return self.rho(g).view(*lead, b, m, -1)

    def config(self) -> dict:
        return {**super().config(), "shared_dim": self.shared_dim, "width": self.width, "hidden": self.hidden,
                "num_blocks": self.num_blocks, "num_heads": self.num_heads, "ff_dim": self.ff_dim,
                "activation": self.activation}


#: name → class, for configs and saving
REGISTRY: dict[str, type[PrivateEncoder]] = {
    "independent": IndependentPrivate,
    "sum_pooling": SumPoolingPrivate,
    "self_attention": SelfAttentionPrivate,
}


# ---------------------------------------------------------------------------------------------------------------
# The posterior over [z', z̃_1, …, z̃_M]
# ---------------------------------------------------------------------------------------------------------------
class PrivatePosterior(Distribution):
    """``q(z' | x_S) Π_{s∈S} q(z̃_s | z', x_S) Π_{s∉S} N(z̃_s; 0, I)`` over the flat ``[z', z̃_1, …, z̃_M]``.

    Batch shape ``(B,)``, event shape ``(D' + M·D̃,)``. ``rsample`` draws z' from the shared posterior
    (reparameterised), then each private part by ``loc(z') + scale(z') ε``. ``log_prob`` re-runs the private encoder
    at the value's z', so it is the exact density of the joint. ``params``: parameters (and buffers) to run the
    private encoder with through ``torch.func.functional_call`` — the detached copy passes detached ones.
    ``features``: the encoder's :meth:`PrivateEncoder.features` of ``h``, computed once and reused by every draw
    and every ``log_prob`` (``h`` must then be finite outside the subset); ``None``: recomputed at each call.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, shared: Distribution, encoder: PrivateEncoder, h: Tensor, subset: Tensor,
                 params: dict[str, Tensor] | None = None, features: Tensor | None = None):
        if tuple(shared.batch_shape) != tuple(subset.shape[:1]) or len(shared.event_shape) != 1:
            raise ValueError(f"shared posterior must have batch shape ({subset.shape[0]},) and a vector event, got "
                             f"{tuple(shared.batch_shape)}, {tuple(shared.event_shape)}")
        self.shared, self.encoder, self.h, self.subset, self.params = shared, encoder, h, subset, params
        self.features = features
        self.shared_dim = shared.event_shape[0]
        self.num_modalities, self.private_dim = subset.shape[1], encoder.private_dim
        d = self.shared_dim + self.num_modalities * self.private_dim
        super().__init__(batch_shape=shared.batch_shape, event_shape=torch.Size([d]), validate_args=False)

    def private(self, z_shared: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of ``q(z̃_s | z', x_S)``, each ``(*S, B, M, D̃)``; ``(0, 1)`` for ``s ∉ S``."""
        args = (z_shared, self.h, self.subset, self.features)
        if self.params is None:
            return self.encoder(*args)
        return torch.func.functional_call(self.encoder, self.params, args)

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``[z', z̃_1, …, z̃_M]`` → ``z' (…, D')``, ``z̃ (…, M, D̃)``."""
        shared, private = z.split([self.shared_dim, self.num_modalities * self.private_dim], dim=-1)
        return shared, private.unflatten(-1, (self.num_modalities, self.private_dim))

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        z_shared = self.shared.rsample(torch.Size(sample_shape))  # (*S, B, D')
        loc, scale = self.private(z_shared)
        z_private = loc + scale * torch.randn_like(loc)
        return torch.cat([z_shared, z_private.flatten(-2)], dim=-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            z_shared = self.shared.sample(torch.Size(sample_shape))
            loc, scale = self.private(z_shared)
            return torch.cat([z_shared, (loc + scale * torch.randn_like(loc)).flatten(-2)], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        z_shared, z_private = self.split(value)
        loc, scale = self.private(z_shared)
        private = Independent(Normal(loc, scale, validate_args=False), 2, validate_args=False)
        return self.shared.log_prob(z_shared) + private.log_prob(z_private)

    @property
    def mean(self) -> Tensor:
        """A point estimate: the shared mean and the private locations at it (0 for ``s ∉ S``).

        (The exact mean of the private parts is ``E_{q(z')}[loc(z')]``; they coincide when loc does not depend on
        z', as for :class:`IndependentPrivate`.)
        """
        z_shared = self.shared.mean
        loc, _ = self.private(z_shared)
        return torch.cat([z_shared, loc.flatten(-2)], dim=-1)


@register_detach(PrivatePosterior)
def _(q: PrivatePosterior) -> PrivatePosterior:
    """Stop gradients to every encoder parameter (shared posterior, features, private encoder weights); the
    density keeps its gradient with respect to the value (what sticking-the-landing needs)."""
    source = q.params if q.params is not None else {**dict(q.encoder.named_parameters()),
                                                    **dict(q.encoder.named_buffers())}
    params = {k: v.detach() for k, v in source.items()}
    features = None if q.features is None else q.features.detach()  # a function of h and the weights only
    return PrivatePosterior(detach(q.shared), q.encoder, q.h.detach(), q.subset, params, features)


# ---------------------------------------------------------------------------------------------------------------
# The aggregator
# ---------------------------------------------------------------------------------------------------------------
class WithPrivate(Aggregator):
    """Any shared aggregator plus a private encoder: ``(h, subset) -> q(z', z̃ | x_S)`` (:class:`PrivatePosterior`).

    ``latent_dim = shared.latent_dim + num_modalities · private_dim``. ``embed`` returns
    ``[shared.embed(h), h]`` (absent slots of h zeroed), so the aggregator contract ``g (B, M, F)`` holds and the
    private encoder reads the features; ``pool_many`` lets the shared aggregator share work between subsets, and
    computes the private encoder's per-slot features once for all of them.
    """

    def __init__(self, shared: Aggregator, private: PrivateEncoder, num_modalities: int):
        if not isinstance(shared, Aggregator) or isinstance(shared, WithPrivate):
            raise ValueError(f"shared must be a (non-private) pimvae Aggregator, got {type(shared).__name__}")
        if not isinstance(private, PrivateEncoder):
            raise ValueError(f"private must be a pimvae.private.PrivateEncoder, got {type(private).__name__}")
        if num_modalities < 1:
            raise ValueError(f"num_modalities must be positive, got {num_modalities}")
        if private.feature_dim != shared.feature_dim:
            raise ValueError(f"private encoder feature_dim {private.feature_dim} != shared aggregator feature_dim "
                             f"{shared.feature_dim}")
        if private.shared_dim is not None and private.shared_dim != shared.latent_dim:
            raise ValueError(f"private encoder reads z' of size shared_dim={private.shared_dim}, but the shared "
                             f"aggregator's latent_dim is {shared.latent_dim}")
        super().__init__(shared.feature_dim, shared.latent_dim + num_modalities * private.private_dim,
                         shared.min_scale)
        self.shared, self.private = shared, private
        self.shared_dim, self.private_dim = shared.latent_dim, private.private_dim
        self.num_modalities = int(num_modalities)

    def embed(self, h: Tensor, present: Tensor) -> Tensor:
        if h.dim() != 3 or h.shape[1] != self.num_modalities:
            raise ValueError(f"features must have shape (B, M={self.num_modalities}, E), got {tuple(h.shape)}")
        h_zeroed = torch.where(present[..., None], h, _zero(h))
        return torch.cat([self.shared.embed(h, present), h_zeroed], dim=-1)

    def _split(self, g: Tensor) -> tuple[Tensor, Tensor]:
        return g[..., : -self.feature_dim], g[..., -self.feature_dim:]

    def pool(self, g: Tensor, subset: Tensor) -> PrivatePosterior:
        return self.pool_many(g, [subset])[0]

    def pool_many(self, g: Tensor, subsets: Sequence[Tensor]) -> list[Distribution]:
        g_shared, h = self._split(g)
        qs = self.shared.pool_many(g_shared, list(subsets))
        features = self.private.features(h)  # once for every subset, draw and log q (h is zero where absent)
        return [PrivatePosterior(q, self.private, h, s, features=features) for q, s in zip(qs, subsets)]

    def config(self) -> dict:
        """Nested: ``model.save`` describes the two parts with :func:`pimvae.io.describe_module`."""
        return {"num_modalities": self.num_modalities}


# ---------------------------------------------------------------------------------------------------------------
# The prior p(z') Π_s N(z̃_s; 0, I)
# ---------------------------------------------------------------------------------------------------------------
class PrivatePriorDistribution(Distribution):
    """``p(z') N(z̃; 0, I)`` over ``[z', z̃]`` with ``z̃`` of size ``private_size`` (all private parts together)."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, shared: Distribution, private_size: int):
        self.shared, self.private_size = shared, int(private_size)
        self.shared_dim = shared.event_shape[0]
        super().__init__(batch_shape=shared.batch_shape,
                         event_shape=torch.Size([self.shared_dim + self.private_size]), validate_args=False)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.shared.has_rsample

    def _private(self, like: Tensor) -> Independent:
        zero = like.new_zeros(*self.batch_shape, self.private_size)
        return Independent(Normal(zero, torch.ones_like(zero), validate_args=False), 1, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        z_shared, z_private = value.split([self.shared_dim, self.private_size], dim=-1)
        return self.shared.log_prob(z_shared) + self._private(value).log_prob(z_private)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        z_shared = self.shared.rsample(torch.Size(sample_shape))
        return torch.cat([z_shared, self._private(z_shared).sample(torch.Size(sample_shape))], dim=-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            z_shared = self.shared.sample(torch.Size(sample_shape))
            return torch.cat([z_shared, self._private(z_shared).sample(torch.Size(sample_shape))], dim=-1)

    @property
    def mean(self) -> Tensor:
        m = self.shared.mean
        return torch.cat([m, m.new_zeros(*m.shape[:-1], self.private_size)], dim=-1)


@register_detach(PrivatePriorDistribution)
def _(p: PrivatePriorDistribution) -> PrivatePriorDistribution:
    return PrivatePriorDistribution(detach(p.shared), p.private_size)


class PrivatePrior(Prior):
    """``p(z') Π_s N(z̃_s; 0, I)``: a shared prior (e.g. :class:`~pimvae.priors.StandardNormal` or
    :class:`~pimvae.priors.GaussianMixture`) over z' and standard normal private parts.

    ``model.prior()`` returns a :class:`PrivatePriorDistribution` over ``[z', z̃_1, …, z̃_M]``.
    """

    def __init__(self, shared: Prior, num_modalities: int, private_dim: int):
        if not isinstance(shared, Prior) or isinstance(shared, PrivatePrior):
            raise ValueError(f"shared must be a (non-private) pimvae Prior, got {type(shared).__name__}")
        if num_modalities < 1 or private_dim < 1:
            raise ValueError(f"num_modalities and private_dim must be positive, got {num_modalities}, {private_dim}")
        super().__init__(shared.latent_dim + num_modalities * private_dim)
        self.shared = shared
        self.shared_dim, self.num_modalities, self.private_dim = shared.latent_dim, int(num_modalities), int(private_dim)

    def forward(self) -> PrivatePriorDistribution:
        return PrivatePriorDistribution(self.shared(), self.num_modalities * self.private_dim)

    @property
    def cluster_posterior(self):
        """``p(c | z')`` of a mixture shared prior, as a function of the full latent (absent otherwise)."""
        inner = getattr(self.shared, "cluster_posterior", None)
        if inner is None:
            raise AttributeError(f"the shared prior {type(self.shared).__name__} has no clusters")
        return lambda z: inner(z[..., : self.shared_dim])

    def config(self) -> dict:
        return {"num_modalities": self.num_modalities, "private_dim": self.private_dim}
