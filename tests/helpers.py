"""Small builders shared by the tests."""

from __future__ import annotations

import torch
from torch import nn

import pimvae
from pimvae import aggregators, evaluation, likelihoods, priors

# Small sizes so that every aggregator runs in milliseconds. SelfAttention's blocks start as the identity by default
# (zero-initialised residual branches); tests of the attention itself need it to act, so they start random here.
SMALL = dict(embed_dim=16, chi_hidden=(16,), rho_hidden=(16,))
ATTENTION = dict(num_heads=2, ff_dim=16, zero_init_blocks=False)
AGGREGATOR_OPTIONS = {
    aggregators.PoE: {},
    aggregators.MoE: {},
    aggregators.MoPoE: {},
    aggregators.SumPooling: SMALL,
    aggregators.SelfAttention: dict(SMALL, **ATTENTION),
    aggregators.SumPoolingMixture: dict(SMALL, num_components=3),
    aggregators.SelfAttentionMixture: dict(SMALL, **ATTENTION, num_components=3),
}
ALL_AGGREGATORS = list(AGGREGATOR_OPTIONS)


def make_aggregator(cls, feature_dim: int, latent_dim: int):
    return cls(feature_dim, latent_dim, **AGGREGATOR_OPTIONS[cls])


def small_model(agg_cls=aggregators.PoE, prior="normal", dims=(3, 4, 5), latent_dim=2, feature_dim=6,
                dtype=torch.float64) -> pimvae.MultimodalVAE:
    mods = {
        f"x{i}": pimvae.Modality(
            nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, feature_dim)),
            nn.Linear(latent_dim, d),
            likelihoods.Normal(scale=0.7),
        )
        for i, d in enumerate(dims)
    }
    p = priors.StandardNormal(latent_dim) if prior == "normal" else priors.GaussianMixture(latent_dim, 3)
    return pimvae.MultimodalVAE(mods, make_aggregator(agg_cls, feature_dim, latent_dim), p).to(dtype)


def random_batch(model, b=6, dtype=torch.float64, present=None, seed=0) -> pimvae.Batch:
    g = torch.Generator().manual_seed(seed)
    data = {n: torch.randn(b, m.decoder.out_features, generator=g, dtype=dtype) for n, m in model.modalities.items()}
    return pimvae.Batch(data, present)


def exact_poe_model(truth, dtype=torch.float64) -> pimvae.MultimodalVAE:
    """The true linear Gaussian model with encoders whose PoE is the exact posterior for every subset (dense data:
    orthonormal ``W_s``)."""
    return evaluation.exact_experts_model(truth, "poe", dtype)
