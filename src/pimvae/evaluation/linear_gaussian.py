"""Exact references for linear Gaussian models (SPEC §6, Appendix M).

``z ~ N(0, I)``, ``x_s | z ~ N(W_s z + b_s, σ_s² I)``. For any subset S (modalities stacked in model order):
``x_S ~ N(b_S, W_S W_Sᵀ + Ψ_S)`` and ``p(z | x_S) = N(Σ W_Sᵀ Ψ_S⁻¹ (x_S − b_S), Σ)``,
``Σ = (I + W_Sᵀ Ψ_S⁻¹ W_S)⁻¹``, with ``Ψ_S`` the diagonal noise covariance (``σ² I`` when all σ_s are equal).

Besides :class:`LinearGaussian` this module gives what the paper's linear Gaussian tables need: the model that a
trained :class:`pimvae.MultimodalVAE` with linear decoders defines (:meth:`LinearGaussian.from_model`), its exact
log-likelihood and posteriors for any subset (missing modalities included), ``KL(q(z|x_S) || p(z|x_S))``, the PPCA
maximum-likelihood fit and the LLH / bound gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

__all__ = ["LinearGaussian", "ppca_fit", "exact_log_likelihood", "posterior_kl", "llh_gap", "bound_gap",
           "linear_gaussian_gaps", "exact_experts_model"]


@dataclass
class LinearGaussian:
    """Parameters of a linear Gaussian multi-modal model: ``W[name] (D_s, D)``, ``b[name] (D_s,)`` and the noise
    scale ``sigma`` — one float for every modality, or name → float."""

    W: dict[str, Tensor]
    b: dict[str, Tensor]
    sigma: Union[float, Mapping[str, float]]

    @property
    def names(self) -> list[str]:
        return list(self.W)

    @property
    def latent_dim(self) -> int:
        return next(iter(self.W.values())).shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.W.values())).dtype

    def scale(self, name: str) -> float:
        """The noise scale σ_s of modality ``name``."""
        return float(self.sigma[name]) if isinstance(self.sigma, Mapping) else float(self.sigma)

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model) -> "LinearGaussian":
        """The generative model of a :class:`pimvae.MultimodalVAE` with a ``N(0, I)`` prior, ``nn.Linear``
        decoders and Normal likelihoods with one scale per modality (fixed, or learned ``"shared"``).

        With private latents (a :class:`pimvae.private.WithPrivate` aggregator and a
        :class:`pimvae.private.PrivatePrior` around ``StandardNormal``) decoder s reads ``(z', z̃_s)``: its weight
        is placed in the columns of ``z'`` and ``z̃_s`` of ``W_s``, zero elsewhere, so the model is linear Gaussian
        in the whole latent ``[z', z̃_1, …, z̃_M]``.

        Raises ``ValueError`` naming the first part that is not linear Gaussian.
        """
        from ..likelihoods import Normal
        from ..priors import StandardNormal
        from ..private import PrivatePrior, WithPrivate

        prior = model.prior.shared if isinstance(model.prior, PrivatePrior) else model.prior
        if not isinstance(prior, StandardNormal):
            raise ValueError(f"a linear Gaussian model needs a StandardNormal prior, got {type(prior).__name__}")
        agg = model.aggregator
        private = isinstance(agg, WithPrivate)
        if private != isinstance(model.prior, PrivatePrior):
            raise ValueError("a model with private latents needs both a WithPrivate aggregator and a PrivatePrior")
        W, b, sigma = {}, {}, {}
        for name, mod in model.modalities.items():
            dec = mod.decoder
            if isinstance(dec, nn.Sequential) and len(dec) == 1:
                dec = dec[0]
            if not isinstance(dec, nn.Linear):
                raise ValueError(f"modality {name!r}: decoder is a {type(dec).__name__}, not an nn.Linear")
            if type(mod.likelihood) is not Normal:
                raise ValueError(f"modality {name!r}: likelihood is {type(mod.likelihood).__name__}, not Normal")
            scale = mod.likelihood.scale.detach()
            if scale.numel() != 1:
                raise ValueError(f"modality {name!r}: a per-dimension noise scale is not supported")
            if mod.shape is not None and len(mod.shape) != 1:
                raise ValueError(f"modality {name!r}: data of shape {mod.shape} are not vectors")
            w = dec.weight.detach()
            if private:
                full = w.new_zeros(w.shape[0], model.latent_dim)
                start = agg.shared_dim + model.names.index(name) * agg.private_dim
                full[:, : agg.shared_dim] = w[:, : agg.shared_dim]
                full[:, start: start + agg.private_dim] = w[:, agg.shared_dim:]
                w = full
            W[name] = w.clone()
            b[name] = (dec.bias.detach().clone() if dec.bias is not None
                       else torch.zeros(dec.out_features, dtype=dec.weight.dtype, device=dec.weight.device))
            sigma[name] = float(scale)
        values = set(sigma.values())
        return cls(W, b, values.pop() if len(values) == 1 else sigma)

    # -- helpers ------------------------------------------------------------------------------------------------
    def _stack(self, names: Sequence[str] | None) -> tuple[list[str], Tensor, Tensor]:
        names = self.names if names is None else list(names)
        unknown = [n for n in names if n not in self.W]
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r}; the model has {self.names}")
        if not names:
            raise ValueError("the subset is empty")
        names = [n for n in self.names if n in names]  # model order
        return names, torch.cat([self.W[n] for n in names]), torch.cat([self.b[n] for n in names])

    def noise_variance(self, names: Sequence[str] | None = None) -> Tensor:
        """The diagonal of ``Ψ_S``, ``(D_S,)``."""
        names, w, _ = self._stack(names)
        return torch.cat([torch.full((self.W[n].shape[0],), self.scale(n) ** 2, dtype=w.dtype, device=w.device)
                          for n in names])

    def _groups(self, names: Sequence[str] | None, present: Tensor | None, batch_size: int):
        """``(rows, names)`` per distinct observed pattern of the subset ``names`` ∩ ``present``."""
        wanted = self._stack(names)[0]  # validated, in model order
        if present is None:
            yield torch.arange(batch_size), wanted
            return
        if present.shape != (batch_size, len(self.names)):
            raise ValueError(f"present must have shape ({batch_size}, {len(self.names)}) (columns {self.names})")
        mask = present.cpu() & torch.tensor([n in wanted for n in self.names])
        patterns, inverse = torch.unique(mask, dim=0, return_inverse=True)
        for p, row in enumerate(patterns):
            yield (inverse == p).nonzero().flatten(), [n for n, on in zip(self.names, row.tolist()) if on]

    def _x(self, data: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
        return torch.cat([data[n].to(self.dtype) for n in names], dim=-1)

    # -- densities ----------------------------------------------------------------------------------------------
    def marginal(self, names: Sequence[str] | None = None) -> MultivariateNormal:
        """``p(x_S)`` over the stacked modalities of ``names`` (all by default)."""
        names, w, b = self._stack(names)
        cov = w @ w.T + torch.diag(self.noise_variance(names))
        return MultivariateNormal(b, covariance_matrix=cov)

    def log_likelihood(self, data: Mapping[str, Tensor], names: Sequence[str] | None = None,
                       present: Tensor | None = None) -> Tensor:
        """Exact ``log p(x_S)`` per data point, ``(B,)``.

        ``present`` (bool ``(B, M)``, columns in :attr:`names` order) restricts each data point to what it
        observes; a data point that observes nothing of S gets 0.
        """
        b = next(iter(data.values())).shape[0]
        out = torch.zeros(b, dtype=self.dtype, device=next(iter(self.W.values())).device)
        for rows, names_r in self._groups(names, present, b):
            if names_r:
                rows = rows.to(out.device)
                x = self._x({n: data[n][rows] for n in names_r}, names_r)
                out[rows] = self.marginal(names_r).log_prob(x)
        return out

    def posterior(self, data: Mapping[str, Tensor], names: Sequence[str] | None = None,
                  present: Tensor | None = None) -> MultivariateNormal:
        """Exact ``p(z | x_S)`` with batch shape ``(B,)`` (``present`` as in :meth:`log_likelihood`; a data point
        that observes nothing of S gets the prior)."""
        b = next(iter(data.values())).shape[0]
        d = self.latent_dim
        dev = next(iter(self.W.values())).device
        loc = torch.zeros(b, d, dtype=self.dtype, device=dev)
        cov = torch.eye(d, dtype=self.dtype, device=dev).repeat(b, 1, 1)
        for rows, names_r in self._groups(names, present, b):
            if not names_r:
                continue
            rows = rows.to(dev)
            _, w, bias = self._stack(names_r)
            x = self._x({n: data[n][rows] for n in names_r}, names_r)
            w_psi = w.T / self.noise_variance(names_r)  # Wᵀ Ψ⁻¹, (D, D_S)
            c = torch.linalg.inv(torch.eye(d, dtype=w.dtype, device=dev) + w_psi @ w)
            c = (c + c.T) / 2
            loc[rows] = (x - bias) @ w_psi.T @ c  # c is symmetric
            cov[rows] = c
        return MultivariateNormal(loc, covariance_matrix=cov)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """``n`` draws ``(x, z)`` from the model."""
        dev = next(iter(self.W.values())).device
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.dtype).to(dev)
        x = {}
        for name in self.names:
            eps = torch.randn(n, self.W[name].shape[0], generator=generator, dtype=self.dtype).to(dev)
            x[name] = z @ self.W[name].T + self.b[name] + self.scale(name) * eps
        return x, z


# ---------------------------------------------------------------------------------------------------------------
# PPCA maximum likelihood
# ---------------------------------------------------------------------------------------------------------------
def _stacked_data(data, names=None) -> tuple[list[str], list[int], Tensor]:
    from ..data.dataset import MultimodalDataset
    from ..model import Batch

    present = None
    if isinstance(data, (MultimodalDataset, Batch)):
        present = data.present
        data = data.data
    names = list(data) if names is None else list(names)
    if present is not None and not bool(present.all()):
        raise ValueError("the PPCA fit needs fully observed data; this data set has missing modalities")
    xs = [data[n].reshape(data[n].shape[0], -1).double() for n in names]
    return names, [x.shape[1] for x in xs], torch.cat(xs, -1)


def exact_experts_model(truth: LinearGaussian, aggregator: str = "poe", dtype: torch.dtype = torch.float64):
    """A :class:`pimvae.MultimodalVAE` with ``truth``'s decoders and experts set in closed form, no training.

    ``"poe"``: expert s is the likelihood factor ``N((W_sᵀW_s)⁻¹W_sᵀ(x_s − b_s), σ_s²(W_sᵀW_s)⁻¹)``, so its product
    with the prior is the exact posterior ``p(z | x_S)`` of every subset: the masked bound then equals
    ``log p(x)`` with no variance. ``"moe"``: expert s is the uni-modal posterior ``p(z | x_s)``; the mixture of
    the experts in S is what an MoE encoder that knows nothing beyond each modality can at best be (a reference
    for a trained one, whose experts can also memorise training points).

    The experts are diagonal Gaussians, so each covariance must be diagonal (orthogonal columns of ``W_s``, as in
    the dense and sparse data of SPEC §7.1); PoE also needs ``W_sᵀW_s`` invertible (``D_s ≥ D``, every latent
    dimension read by every modality). Raises ``ValueError`` otherwise.
    """
    from ..aggregators import MoE, PoE
    from ..likelihoods import Normal
    from ..modality import Modality
    from ..model import MultimodalVAE
    from ..nn import softplus_inverse
    from ..priors import StandardNormal

    if aggregator not in ("poe", "moe"):
        raise ValueError(f"aggregator must be 'poe' or 'moe', got {aggregator!r}")
    d = truth.latent_dim
    agg = (PoE if aggregator == "poe" else MoE)(2 * d, d, projection=False)
    eye = torch.eye(d, dtype=torch.float64)
    mods = {}
    for name in truth.names:
        w, b = truth.W[name].double().cpu(), truth.b[name].double().cpu()
        var = truth.scale(name) ** 2
        gram = w.T @ w / var
        if aggregator == "moe":
            cov = torch.linalg.inv(eye + gram)
        elif torch.linalg.matrix_rank(gram) < d:
            raise ValueError(f"modality {name!r}: W_sᵀW_s is singular (a latent dimension it does not read), so its "
                             "likelihood factor is no Gaussian expert; use aggregator='moe'")
        else:
            cov = torch.linalg.inv(gram)
        var_diag = torch.diagonal(cov)
        if not torch.allclose(cov, torch.diag(var_diag), atol=1e-6 * float(var_diag.max())):
            raise ValueError(f"modality {name!r}: the expert's covariance is not diagonal (W_s needs orthogonal "
                             "columns)")
        gain = cov @ w.T / var  # (D, D_s)
        raw = torch.tensor([softplus_inverse(float(s) - agg.min_scale) for s in var_diag.sqrt()], dtype=torch.float64)
        enc = nn.Linear(w.shape[0], 2 * d, dtype=dtype)
        dec = nn.Linear(d, w.shape[0], dtype=dtype)
        with torch.no_grad():
            enc.weight.copy_(torch.cat([gain, torch.zeros_like(gain)]))
            enc.bias.copy_(torch.cat([-(gain @ b), raw]))
            dec.weight.copy_(w)
            dec.bias.copy_(b)
        mods[name] = Modality(enc, dec, Normal(scale=truth.scale(name)), shape=(w.shape[0],))
    return MultimodalVAE(mods, agg, StandardNormal(d)).to(dtype)


def ppca_fit(data, latent_dim: int, names: Sequence[str] | None = None) -> LinearGaussian:
    """The PPCA maximum-likelihood fit over all modalities stacked (Tipping & Bishop; SPEC §6).

    ``b`` = the sample mean; with the eigenvalues ``λ_1 ≥ … ≥ λ_Dx`` of the (1/N) sample covariance and their
    eigenvectors ``U``: ``σ²_ML = mean(λ_{D+1..Dx})`` and ``W_ML = U_D (Λ_D − σ²_ML I)^{1/2}`` (W is identifiable
    only up to a rotation). ``data``: name → ``(N, D_s)``, a Batch or a fully observed MultimodalDataset.
    Returns a float64 :class:`LinearGaussian` with one shared σ.
    """
    names, dims, x = _stacked_data(data, names)
    n, dx = x.shape
    if not 1 <= latent_dim < dx:
        raise ValueError(f"latent_dim must lie in [1, {dx - 1}] for {dx} stacked data dimensions, got {latent_dim}")
    if n < 2:
        raise ValueError("the PPCA fit needs at least 2 data points")
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / n
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma2 = evals[latent_dim:].mean()
    w = evecs[:, :latent_dim] * (evals[:latent_dim] - sigma2).clamp(min=0).sqrt()
    W = dict(zip(names, w.split(dims)))
    b = dict(zip(names, mean.split(dims)))
    return LinearGaussian(W, b, float(sigma2.sqrt()))


# ---------------------------------------------------------------------------------------------------------------
# Model-level references
# ---------------------------------------------------------------------------------------------------------------
def _truth_of(model_or_truth) -> LinearGaussian:
    return model_or_truth if isinstance(model_or_truth, LinearGaussian) else LinearGaussian.from_model(model_or_truth)


def _data_present(data, names: list[str]) -> tuple[Mapping[str, Tensor], Tensor | None]:
    from ..data.dataset import MultimodalDataset
    from ..model import Batch

    if isinstance(data, (MultimodalDataset, Batch)):
        present = data.present
        d = dict(data.data)
        if present is not None and list(d) != names and isinstance(data, MultimodalDataset):
            present = torch.stack([present[:, list(d).index(n)] for n in names], 1)
        for n in names:  # modalities absent everywhere may be left out of a Batch
            if n not in d:
                d[n] = torch.zeros(len(data), 1)
        return d, present
    return data, None


def exact_log_likelihood(model_or_truth, data, subset: Sequence[str] | None = None) -> Tensor:
    """Exact ``log p(x_S)`` per data point under a linear Gaussian model (a :class:`LinearGaussian`, or a
    :class:`pimvae.MultimodalVAE` it can be read from); missing modalities are left out per data point."""
    truth = _truth_of(model_or_truth)
    d, present = _data_present(data, truth.names)
    return truth.log_likelihood(d, subset, present)


def posterior_kl(model, data, subset: Sequence[str] | None = None, truth: LinearGaussian | None = None,
                 num_samples: int = 256, seed: int | None = 0, batch_size: int = 256) -> Tensor:
    """``KL(q(z|x_S) || p(z|x_S))`` per data point: the model's encoder against the exact posterior of ``truth``
    (default: the model's own linear Gaussian generative model, as in the paper's Figures 3–5).

    Closed form when ``q`` is Gaussian; a Monte Carlo estimate with ``num_samples`` draws (seeded per data point)
    for mixture encoders.
    """
    from ._utils import ParticleNoise, as_mvn, evaluating, iter_batches, reparam, resolve_subset
    from torch.distributions import kl_divergence

    truth = _truth_of(model) if truth is None else truth
    out = []
    with evaluating(model):
        for batch, idx, rows in iter_batches(model, data, batch_size):
            d, present = model.validate(batch)
            sub = resolve_subset(model, subset, present, rows)
            q = model.posterior(model.embed(d, present), sub)
            cols = torch.stack([sub[:, model.names.index(n)] for n in truth.names], 1)
            full = {n: d.get(n, torch.zeros(len(batch), 1, device=present.device)) for n in truth.names}
            p = truth.posterior(full, None, cols)
            q_mvn = as_mvn(q)
            if q_mvn is not None:
                out.append(kl_divergence(q_mvn, p))
            else:
                loc = q.mean
                noise = ParticleNoise(num_samples, idx, model.latent_dim, seed, loc.dtype, loc.device, stream=3)
                z = reparam(q, *noise.take(0, num_samples))
                out.append((q.log_prob(z) - p.log_prob(z)).mean(0))
    return torch.cat(out)


def llh_gap(ll_ml, ll_model) -> float:
    """``(ℓ_ML − ℓ_model) / |ℓ_ML|`` with ℓ the mean log-likelihood over the data set (tensors are averaged)."""
    ml, m = float(torch.as_tensor(ll_ml).double().mean()), float(torch.as_tensor(ll_model).double().mean())
    return (ml - m) / abs(ml)


def bound_gap(ll_ml, bound) -> float:
    """``(ℓ_ML − L) / |ℓ_ML|`` with L the mean bound over the data set, evaluated with frozen parameters."""
    return llh_gap(ll_ml, bound)


def linear_gaussian_gaps(model, data, objective=None, fit_data=None, num_draws: int = 10, seed: int = 0,
                         batch_size: int = 500) -> dict[str, float]:
    """The paper's Table 1 numbers for a linear Gaussian model on ``data``.

    ``ll_ml``: mean exact log-likelihood of the PPCA maximum-likelihood fit (fitted on ``fit_data``, default
    ``data``, with the model's latent size); ``ll_model``: the same for the learned model; ``llh_gap``; and with
    an ``objective``, ``bound`` (its mean over ``num_draws`` evaluations with frozen parameters) and
    ``bound_gap``.
    """
    truth = LinearGaussian.from_model(model)
    ml = ppca_fit(data if fit_data is None else fit_data, truth.latent_dim, truth.names)
    d, _ = _data_present(data, truth.names)
    ll_ml = ml.log_likelihood({n: d[n].double() for n in truth.names})
    ll_model = exact_log_likelihood(truth, data)
    out = {"ll_ml": float(ll_ml.mean()), "ll_model": float(ll_model.double().mean()),
           "llh_gap": llh_gap(ll_ml, ll_model), "sigma_ml": ml.scale(truth.names[0])}
    if objective is not None:
        from .bound import evaluate_bound

        bound = evaluate_bound(model, data, objective, num_draws=num_draws, seed=seed, batch_size=batch_size)["bound"]
        out["bound"] = float(bound.double().mean())
        out["bound_gap"] = bound_gap(ll_ml, bound)
    return out
