"""Linear Gaussian references: reading a model, exact densities, posterior KLs, the PPCA fit and the gaps."""

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

import pimvae
from helpers import exact_poe_model, small_model
from pimvae import aggregators, evaluation, likelihoods, objectives
from pimvae.data import MultimodalDataset, linear_gaussian
from pimvae.evaluation import LinearGaussian
from pimvae.evaluation._utils import kl


@pytest.fixture(scope="module")
def lg():
    return linear_gaussian(n=64, num_modalities=3, latent_dim=4, dim_range=(5, 8), seed=3, dtype=torch.float64)


def test_from_model_reads_the_generative_model(lg):
    model = exact_poe_model(lg.truth)
    truth = LinearGaussian.from_model(model)
    assert truth.sigma == pytest.approx(lg.truth.sigma)
    for n in lg.truth.names:
        torch.testing.assert_close(truth.W[n], lg.truth.W[n])
        torch.testing.assert_close(truth.b[n], lg.truth.b[n])
    ds = MultimodalDataset(lg.data)
    torch.testing.assert_close(evaluation.exact_log_likelihood(model, ds, ["x1"]), lg.truth.log_likelihood(lg.data, ["x1"]))


def test_from_model_refuses_what_is_not_linear_gaussian():
    model = small_model(prior="mixture")
    with pytest.raises(ValueError, match="StandardNormal prior"):
        LinearGaussian.from_model(model)
    model = small_model()
    model.modalities["x1"].decoder = nn.Sequential(nn.Linear(2, 4), nn.Tanh())
    with pytest.raises(ValueError, match="'x1': decoder is a Sequential"):
        LinearGaussian.from_model(model)
    model = small_model()
    model.modalities["x0"].likelihood = likelihoods.Laplace(scale=1.0)
    with pytest.raises(ValueError, match="'x0': likelihood is Laplace"):
        LinearGaussian.from_model(model)


def test_per_modality_scales_match_gaussian_conditioning():
    torch.manual_seed(0)
    model = small_model(dims=(3, 4, 5), latent_dim=2)
    for name, s in zip(model.names, (0.5, 1.0, 2.0)):
        model.modalities[name].likelihood = likelihoods.Normal(scale=s).double()
    truth = LinearGaussian.from_model(model)
    assert isinstance(truth.sigma, dict) and truth.sigma["x2"] == 2.0
    x, _ = truth.sample(10, torch.Generator().manual_seed(0))
    names = ["x0", "x2"]
    w = torch.cat([truth.W[n] for n in names])
    b = torch.cat([truth.b[n] for n in names])
    psi = torch.cat([torch.full((truth.W[n].shape[0],), truth.scale(n) ** 2, dtype=torch.float64) for n in names])
    cov_xx = w @ w.T + torch.diag(psi)
    xs = torch.cat([x[n] for n in names], -1)
    # moment form of p(z | x_S): mean Wᵀ C⁻¹ (x − b), covariance I − Wᵀ C⁻¹ W
    gain = torch.linalg.solve(cov_xx, w).T
    post = truth.posterior(x, names)
    torch.testing.assert_close(post.mean, (xs - b) @ gain.T)
    torch.testing.assert_close(post.covariance_matrix[0], torch.eye(2, dtype=torch.float64) - gain @ w)
    torch.testing.assert_close(truth.log_likelihood(x, names), MultivariateNormal(b, cov_xx).log_prob(xs))


def test_missing_modalities_are_left_out_per_data_point(lg):
    present = torch.tensor([[True, False, True], [False, True, False], [True, True, True]])
    data = {n: v[:3] for n, v in lg.data.items()}
    ll = lg.truth.log_likelihood(data, None, present)
    for i, row in enumerate(present.tolist()):
        names = [n for n, on in zip(lg.truth.names, row) if on]
        torch.testing.assert_close(ll[i], lg.truth.log_likelihood({n: v[i:i + 1] for n, v in data.items()}, names)[0])
    post = lg.truth.posterior(data, ["x1"], present)
    torch.testing.assert_close(post.mean[0], torch.zeros(4, dtype=torch.float64))  # nothing of S: the prior
    torch.testing.assert_close(post.covariance_matrix[0], torch.eye(4, dtype=torch.float64))


def test_closed_form_kl_against_monte_carlo(lg):
    torch.manual_seed(0)
    model = small_model(dims=tuple(lg.truth.W[n].shape[0] for n in lg.truth.names), latent_dim=4)
    batch = pimvae.Batch(lg.data)
    closed = evaluation.posterior_kl(model, batch, ["x0", "x1"], truth=lg.truth)
    q = model.encode(batch, ["x0", "x1"])
    p = lg.truth.posterior(lg.data, ["x0", "x1"])
    z = q.sample((20000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    sd = (q.log_prob(z) - p.log_prob(z)).std(0) / 20000**0.5
    assert ((closed - mc).abs() < 5 * sd).all()
    assert closed.min() > 0.1  # a random encoder is far from the posterior
    # the exact encoder is at KL 0 from its own model's posterior
    assert evaluation.posterior_kl(exact_poe_model(lg.truth), batch, ["x2"]).abs().max() < 1e-8
    # the generic helper: diagonal Normal vs full Gaussian is promoted to a registered pair
    torch.testing.assert_close(kl(q, p), closed)


def test_mixture_encoder_kl_is_monte_carlo(lg):
    exact = exact_poe_model(lg.truth)
    moe = pimvae.MultimodalVAE(dict(exact.modalities), aggregators.MoE(8, 4, projection=False).double(), exact.prior)
    batch = pimvae.Batch(lg.data)
    a = evaluation.posterior_kl(moe, batch, ["x0", "x1"], num_samples=20000, seed=0)
    q, p = moe.encode(batch, ["x0", "x1"]), lg.truth.posterior(lg.data, ["x0", "x1"])
    with torch.no_grad():
        z = q.sample((20000,))
        diff = q.log_prob(z) - p.log_prob(z)
    sd = diff.std(0) / 20000**0.5  # per estimate; two independent estimates differ by √2 of that
    assert ((a - diff.mean(0)).abs() < 5 * 2**0.5 * sd).all()
    assert a.min() > 0.5


def test_ppca_fit_recovers_the_generating_parameters():
    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(5, 3, generator=g, dtype=torch.float64), "b": torch.randn(7, 3, generator=g, dtype=torch.float64)}
    b = {"a": torch.randn(5, generator=g, dtype=torch.float64), "b": torch.randn(7, generator=g, dtype=torch.float64)}
    truth = LinearGaussian(w, b, 0.5)
    x, _ = truth.sample(40000, g)
    ml = evaluation.ppca_fit(x, 3)
    wt, wm = torch.cat([w["a"], w["b"]]), torch.cat([ml.W["a"], ml.W["b"]])
    # W is identifiable only up to a rotation: compare W Wᵀ
    err = (wm @ wm.T - wt @ wt.T).abs().max() / (wt @ wt.T).abs().max()
    assert err < 0.05
    assert ml.sigma**2 == pytest.approx(0.25, rel=0.02)
    for n in w:
        torch.testing.assert_close(ml.b[n], b[n], atol=0.03, rtol=0)
    # the maximum-likelihood fit beats the generating parameters on its own data
    assert ml.log_likelihood(x).mean() >= truth.log_likelihood(x).mean()
    with pytest.raises(ValueError, match="latent_dim must lie in"):
        evaluation.ppca_fit(x, 12)


def test_gaps_are_relative_differences_and_masked_bound_is_tight(lg):
    assert evaluation.llh_gap(-100.0, -103.0) == pytest.approx(0.03)
    assert evaluation.bound_gap(torch.tensor([-100.0, -100.0]), torch.tensor([-110.0, -100.0])) == pytest.approx(0.05)
    model = exact_poe_model(lg.truth)
    ds = MultimodalDataset(lg.data)
    gaps = evaluation.linear_gaussian_gaps(model, ds, objectives.MaskedBound(), num_draws=3)
    assert gaps["llh_gap"] >= 0  # nothing beats the ML fit on its own data
    assert gaps["ll_ml"] == pytest.approx(evaluation.ppca_fit(ds, 4).log_likelihood(lg.data).mean().item())
    # at the exact posterior the masked bound is the log-likelihood: the two gaps coincide
    assert gaps["bound_gap"] == pytest.approx(gaps["llh_gap"], abs=1e-10)
    mix = evaluation.linear_gaussian_gaps(model, ds, objectives.MixtureBound(), num_draws=20)
    assert mix["bound_gap"] > gaps["bound_gap"] + 0.01


def test_exact_moe_experts_are_the_uni_modal_posteriors(lg):
    model = evaluation.exact_experts_model(lg.truth, "moe")
    batch = pimvae.Batch(lg.data)
    for name in lg.truth.names:
        q = model.encode(batch, [name])
        p = lg.truth.posterior(lg.data, [name])
        torch.testing.assert_close(q.mean, p.mean)
        torch.testing.assert_close(q.variance, p.variance)
        # the masked bound's L_S for S = {s} is then log p(x_s), with no variance
        out = objectives.MaskedBound(subsets=objectives.Fixed([name]))(model, batch)
        torch.testing.assert_close(out.terms["L_S"], lg.truth.log_likelihood(lg.data, [name]), rtol=0, atol=1e-8)
    # with all modalities q(z|x) is the uniform mixture of the experts: its mean is their average, not p(z|x)'s
    q = model.encode(batch)
    mean = sum(lg.truth.posterior(lg.data, [n]).mean for n in lg.truth.names) / len(lg.truth.names)
    torch.testing.assert_close(q.mean, mean)


def test_exact_experts_on_sparse_loadings_and_bad_input():
    sparse = linear_gaussian(n=32, num_modalities=2, latent_dim=12, dim_range=(8, 10), sparse=True, seed=1,
                             dtype=torch.float64)
    model = evaluation.exact_experts_model(sparse.truth, "moe")  # uni-modal posteriors stay diagonal
    q = model.encode(pimvae.Batch(sparse.data), ["x1"])
    torch.testing.assert_close(q.variance, sparse.truth.posterior(sparse.data, ["x1"]).variance)
    with pytest.raises(ValueError, match="'x0': W_sᵀW_s is singular"):
        evaluation.exact_experts_model(sparse.truth, "poe")
    skew = LinearGaussian({"a": torch.tensor([[1.0, 0.5], [0.0, 1.0], [0.3, 0.2]], dtype=torch.float64)},
                          {"a": torch.zeros(3, dtype=torch.float64)}, 1.0)
    with pytest.raises(ValueError, match="'a': the expert's covariance is not diagonal"):
        evaluation.exact_experts_model(skew, "moe")
    with pytest.raises(ValueError, match="'poe' or 'moe'"):
        evaluation.exact_experts_model(sparse.truth, "sum_pooling")
