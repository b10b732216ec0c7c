"""Linear Gaussian model with sparse decoders — the paper's Table 5 and Figure 4 (SPEC §7.1).

The same as :mod:`pimvae.experiments.linear_dense` except for the data: 5 shared latent dimensions read by every
modality and 5 private ones per modality (D = 30 = 5 + 5·5), ``[W'_s, W̃_s]`` orthonormal. The model is still the
general one without private latents, as in the paper's Table 5.
"""

from __future__ import annotations

from torch import nn

from .. import aggregators as agg_lib
from ..likelihoods import Normal
from ..modality import Modality
from ..model import MultimodalVAE
from ..nn import MLP
from ..priors import StandardNormal
from ..private import IndependentPrivate, PrivatePrior, SelfAttentionPrivate, SumPoolingPrivate, WithPrivate
from .base import Row, RunData, lecun_init, make_aggregator
from .linear_dense import LinearGaussianExperiment

__all__ = ["LinearSparse", "LinearSparsePrivate", "EXPERIMENT", "PRIVATE"]


class LinearSparse(LinearGaussianExperiment):
    name = "linear-sparse"
    sparse = True
    title = "Linear Gaussian model, sparse decoders (paper Table 5)"
    caption = ("Ground truth with 5 shared and 5 private latent dimensions per modality; the model has no private "
               "latents. Metrics as in Table 1.")
    # quick: D must exceed 5M for the sparse layout (5 shared + 5 private per modality)
    quick_size = dict(n=500, num_modalities=2, latent_dim=11, dim_range=(12, 16), width=32, expert_width=48)
    paper = {
        ("poe", "standard_normal", "masked"): {"LLH Gap": (0.00, 0.000), "Bound Gap": (0.00, 0.000), "MCC": (0.84, 0.004)},
        ("poe", "standard_normal", "mixture"): {"LLH Gap": (0.00, 0.007), "Bound Gap": (0.01, 0.001), "MCC": (0.87, 0.004)},
        ("moe", "standard_normal", "masked"): {"LLH Gap": (0.01, 0.001), "Bound Gap": (0.01, 0.001), "MCC": (0.81, 0.001)},
        ("moe", "standard_normal", "mixture"): {"LLH Gap": (0.01, 0.002), "Bound Gap": (0.01, 0.002), "MCC": (0.83, 0.003)},
        ("sum_pooling", "standard_normal", "masked"): {"LLH Gap": (0.00, 0.000), "Bound Gap": (0.00, 0.000), "MCC": (0.84, 0.015)},
        ("sum_pooling", "standard_normal", "mixture"): {"LLH Gap": (0.01, 0.001), "Bound Gap": (0.01, 0.002), "MCC": (0.84, 0.013)},
        ("self_attention", "standard_normal", "masked"): {"LLH Gap": (0.00, 0.001), "Bound Gap": (0.00, 0.000), "MCC": (0.84, 0.005)},
        ("self_attention", "standard_normal", "mixture"): {"LLH Gap": (0.01, 0.002), "Bound Gap": (0.01, 0.002), "MCC": (0.83, 0.004)},
    }


EXPERIMENT = LinearSparse()


class LinearSparsePrivate(LinearSparse):
    """The same data with private latents and permutation-equivariant private encoders — the paper's Table 6
    (Appendix F; SPEC §5).

    Model: ``z = (z', z̃_1, …, z̃_M)`` with z' of the generating model's shared size (5) and one z̃_s of 5 per
    modality (so the latent has the PPCA reference's 30 dimensions), decoder s linear in ``(z', z̃_s)`` with noise
    σ_ML, prior N(0, I). Encoders of Table 18: PoE reads ``h_s`` of ``D_s → 512 → 512 → 20`` (the shared expert and
    the private ``q(z̃_s | x_s)`` of Example 16 are linear heads of it; the paper has two such networks per
    modality), SumPooling / SelfAttention ``h_s`` of ``D_s → 128 → 128 → 10`` with χ, ρ of width 128 and the
    private encoders of Examples 17 and 18 (χ₀, χ₁, χ₂ / the set transformer, then ρ, all of width 128).
    """

    name = "linear-sparse-private"
    title = "Linear Gaussian model, sparse decoders, private latents and equivariant encoders (paper Table 6)"
    caption = ("Ground truth with 5 shared and 5 private latent dimensions per modality; the model has a shared z' "
               "of 5 and a private z̃_s of 5 per modality, its private encoders permutation-equivariant. Metrics "
               "as in Table 1 (MCC over the whole latent [z', z̃_1, …, z̃_M]).")
    rows = (Row("poe", display="PoE (equivariant)"), Row("sum_pooling", display="SumPooling (equivariant)"),
            Row("self_attention", display="SelfAttention (equivariant)"))
    private_dim = 5
    #: the private encoders run again for every draw of log q: 32 draws × 5,000 points fix the mean KL well enough
    kl_samples = 32
    full_size = dict(LinearSparse.full_size, width=128)  # Table 18: 128 for the learned aggregators
    paper = {
        ("poe", "standard_normal", "masked"): {"LLH Gap": (0.00, 0.000), "Bound Gap": (0.00, 0.000), "MCC": (0.91, 0.016)},
        ("poe", "standard_normal", "mixture"): {"LLH Gap": (0.01, 0.001), "Bound Gap": (0.02, 0.001), "MCC": (0.88, 0.011)},
        ("sum_pooling", "standard_normal", "masked"): {"LLH Gap": (0.00, 0.000), "Bound Gap": (0.00, 0.000), "MCC": (0.85, 0.004)},
        ("sum_pooling", "standard_normal", "mixture"): {"LLH Gap": (0.00, 0.000), "Bound Gap": (0.00, 0.001), "MCC": (0.82, 0.003)},
        ("self_attention", "standard_normal", "masked"): {"LLH Gap": (0.00, 0.000), "Bound Gap": (0.00, 0.000), "MCC": (0.83, 0.006)},
        ("self_attention", "standard_normal", "mixture"): {"LLH Gap": (0.00, 0.000), "Bound Gap": (0.00, 0.003), "MCC": (0.83, 0.003)},
    }

    def model(self, row: Row, data: RunData, quick: bool) -> MultimodalVAE:
        if row.aggregator not in ("poe", "sum_pooling", "self_attention"):
            raise ValueError(f"{self.name} has rows poe, sum_pooling and self_attention (Table 6), got "
                             f"{row.aggregator!r}")
        info = data.info
        m = info["num_modalities"]
        shared_dim = info["latent_dim"] - m * self.private_dim
        p = self.private_dim
        width = info["width"]
        if row.aggregator == "poe":
            feature_dim = 2 * (shared_dim + p)
            hidden = [info["expert_width"]] * 2
            shared = agg_lib.PoE(feature_dim, shared_dim, projection=True)
            private = IndependentPrivate(feature_dim, p)
        else:
            feature_dim = 2 * p
            hidden = [width] * 2
            shared = make_aggregator(row.aggregator, feature_dim, shared_dim, width)
            if row.aggregator == "sum_pooling":  # Table 18 (c): χ₀, χ₁, χ₂ with two hidden layers
                private = SumPoolingPrivate(feature_dim, shared_dim, p, width=width, hidden=(width, width))
            else:  # χ₁, χ₂ with one hidden layer, one block of 4 heads
                private = SelfAttentionPrivate(feature_dim, shared_dim, p, width=width, hidden=(width,),
                                               num_heads=4, ff_dim=width)
        mods = {
            name: Modality(MLP(x.shape[1], hidden, feature_dim), nn.Linear(shared_dim + p, x.shape[1]),
                           Normal(scale=info["sigma_ml"]), shape=(x.shape[1],))
            for name, x in data.train.data.items()
        }
        prior = PrivatePrior(StandardNormal(shared_dim), m, p)
        return lecun_init(MultimodalVAE(mods, WithPrivate(shared, private, m), prior))


PRIVATE = LinearSparsePrivate()
