"""The generating model's own log-likelihood for the non-linear synthetic data: a ceiling for a learned model's.

``log p(x_O)`` is an integral over the latent; importance sampling with any proposal estimates ``p(x_O)``
without bias. The proposal here is centred near the data point's *true* latent ``z*`` (known for synthetic
data): one Gauss–Newton step on ``log p(x_O | z) + log N(z; μ_c, σ_c²)`` from ``z*``. It is an equal mixture of
``N(·, 1.25² Λ⁻¹)`` with ``Λ = Σ_{s∈O} J_sᵀ J_s / σ² + diag(σ_c⁻²)`` (``J_s`` the exact Jacobian of the piecewise
linear ``f_s`` at ``z*``) and a wider component with every LeakyReLU on its flat side, for posteriors that reach
across a kink of ``f_s``. Half the particles come from each component (a stratified draw; the estimate stays
unbiased for the mixture).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal
from torch.distributions import Normal

from ..data.dataset import MultimodalDataset
from ..data.synthetic import NonlinearTruth

__all__ = ["oracle_log_likelihood", "oracle_posterior"]


def oracle_log_likelihood(truth: NonlinearTruth, ds: MultimodalDataset, num_particles: int = 256, seed: int = 0,
                          label: str | None = None, batch: int = 500) -> Tensor:
    """Per data point: ``log p(x_O)`` under ``truth`` for the continuous modalities in ``truth.maps``.

    ``label``: the name of a modality that *is* the cluster (the bi-modal model): then the result is
    ``log p(x_O, c) = log p(c) + log ∫ p(z | c) p(x_O | z) dz`` (``c`` observed where that modality is).
    Otherwise the latent's prior is the cluster mixture ``p(z)``.
    """
    return oracle_posterior(truth, ds, num_particles, seed, label, batch)[0]


def oracle_posterior(truth: NonlinearTruth, ds: MultimodalDataset, num_particles: int = 256, seed: int = 0,
                     label: str | None = None, batch: int = 500) -> tuple[Tensor, Tensor, Tensor]:
    """``(log p(x_O), E[z | x_O], one draw of z | x_O)`` per data point under ``truth`` (see
    :func:`oracle_log_likelihood` for ``label``).

    The posterior mean and the draw use the same importance weights, self-normalised (the draw resamples one
    particle in proportion to its weight): consistent as ``num_particles`` grows, with an ``O(1/K)`` bias. They
    give the MCC that the generating model's own posterior attains, a reference for a learned encoder's.
    """
    g = torch.Generator().manual_seed(seed)
    lat = truth.latent
    mixture = lat.distribution()
    names = list(truth.maps)
    cols = [ds.names.index(n) for n in names]
    var = truth.noise**2
    g_draw = torch.Generator().manual_seed(seed + 1)  # its own stream: the log-likelihood's draws stay as they were
    out, means, draws = [], [], []
    for i in range(0, len(ds), batch):
        zs = ds.extras["z"][i:i + batch].double()
        present = ds.present[i:i + batch]
        xs = {n: ds.data[n][i:i + batch].double() for n in names}
        nearest = Normal(lat.loc, lat.scale).log_prob(zs[:, None, :]).sum(-1).argmax(-1)  # (b,)
        known = None
        if label is not None:
            known = present[:, ds.names.index(label)]
            comp = torch.where(known, ds.data[label][i:i + batch], nearest)
        else:
            comp = nearest
        prior_prec = lat.scale[comp].pow(-2)  # (b, D)
        prec = torch.diag_embed(prior_prec)
        flat = prec.clone()  # the same with every LeakyReLU on its flat side: a wider, defensive component
        grad = -(zs - lat.loc[comp]) * prior_prec
        for j, n in zip(cols, names):
            f = truth.maps[n]
            jac = f.jacobian(zs)  # (b, D_s, D)
            jac_flat = f.negative_slope ** (len(f.weights) - 1) * torch.linalg.multi_dot([*f.weights[::-1]]) \
                if len(f.weights) > 1 else f.weights[0]
            keep = present[:, j, None, None].double()
            prec = prec + keep * jac.transpose(1, 2) @ jac / var
            flat = flat + keep * (jac_flat.T @ jac_flat) / var
            grad = grad + keep[..., 0] * (jac.transpose(1, 2) @ (xs[n] - f(zs))[..., None])[..., 0] / var
        centre = zs + torch.linalg.solve(prec, grad)
        # proposal: ½ N(centre, 1.25² Λ⁻¹) + ½ N(centre, 1.25² Λ_flat⁻¹); the second covers a posterior that
        # reaches across a kink of f onto its flat side
        comps = MultivariateNormal(centre, precision_matrix=torch.stack([prec, flat]) / 1.25**2)  # batch (2, b)
        eps = torch.randn(num_particles, *zs.shape, generator=g, dtype=torch.float64)
        pick = (torch.arange(num_particles) % 2)[:, None, None, None]  # half the particles from each component
        tril = torch.where(pick == 0, comps.scale_tril[0], comps.scale_tril[1])  # (K, b, D, D)
        z = centre + (tril @ eps[..., None])[..., 0]  # (K, b, D)
        log_q = torch.logsumexp(comps.log_prob(z[:, None]), 1) - math.log(2)  # (K, b)
        log_prior = mixture.log_prob(z)
        if known is not None:  # p(z | c) p(c) where the label is observed
            log_cond = Normal(lat.loc[comp], lat.scale[comp]).log_prob(z).sum(-1) - math.log(lat.num_clusters)
            log_prior = torch.where(known, log_cond, log_prior)
        log_w = log_prior - log_q
        for j, n in zip(cols, names):
            ll = Normal(truth.maps[n](z), truth.noise).log_prob(xs[n]).sum(-1)
            log_w = log_w + torch.where(present[:, j], ll, torch.zeros((), dtype=ll.dtype))
        out.append(torch.logsumexp(log_w, 0) - math.log(num_particles))
        w = torch.softmax(log_w, 0)  # (K, b)
        means.append((w[..., None] * z).sum(0))
        pick = torch.multinomial(w.T, 1, generator=g_draw)[:, 0]  # (b,)
        draws.append(z[pick, torch.arange(z.shape[1])])
    return torch.cat(out), torch.cat(means), torch.cat(draws)
