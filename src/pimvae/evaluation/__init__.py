"""Evaluation (SPEC §6): likelihoods, bounds, rates and distortions, identifiability, coherence, generation,
exact linear-Gaussian references, figures and reports.

Every function runs the model in eval mode without gradients and accepts a :class:`pimvae.Batch` or a
:class:`pimvae.data.MultimodalDataset`. Monte Carlo estimates take ``seed``: with an integer seed a data point's
estimate depends only on its data, its index and the seed, never on batch or chunk sizes.
"""

# linear_gaussian first: pimvae.data imports it while this package initialises.
from .linear_gaussian import (
    LinearGaussian,
    bound_gap,
    exact_experts_model,
    exact_log_likelihood,
    linear_gaussian_gaps,
    llh_gap,
    posterior_kl,
    ppca_fit,
)
from .bound import evaluate_bound
from .classification import cluster_accuracy, coherence, latent_classification, matched_accuracy
from .generation import active_units, generate, impute, latent_activity, latents, reconstruct, sample
from .log_likelihood import conditional_log_likelihood, log_likelihood
from .mcc import correlation_matrix, mcc
from .rates import RATE_DISTORTION_KEYS, rate_distortion_table, rates_distortions
from .report import default_subsets, write_report
from . import figures

__all__ = [
    "log_likelihood",
    "conditional_log_likelihood",
    "evaluate_bound",
    "rates_distortions",
    "rate_distortion_table",
    "RATE_DISTORTION_KEYS",
    "mcc",
    "correlation_matrix",
    "latent_classification",
    "coherence",
    "cluster_accuracy",
    "matched_accuracy",
    "latent_activity",
    "active_units",
    "latents",
    "generate",
    "reconstruct",
    "impute",
    "sample",
    "LinearGaussian",
    "ppca_fit",
    "exact_log_likelihood",
    "posterior_kl",
    "llh_gap",
    "bound_gap",
    "linear_gaussian_gaps",
    "exact_experts_model",
    "write_report",
    "default_subsets",
    "figures",
]
