"""Importance-sampled likelihoods, the frozen bound, rates and distortions: against closed forms, not shapes."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import kl_divergence

import pimvae
from helpers import ALL_AGGREGATORS, exact_poe_model, make_aggregator, small_model
from pimvae import aggregators, evaluation, objectives, priors
from pimvae.data import MultimodalDataset, linear_gaussian
from pimvae.evaluation._utils import ParticleNoise, reparam
from pimvae.nn import softplus_inverse

SUBSETS = [None, ["x0"], ["x1", "x2"], ["x2", "x0"]]


@pytest.fixture(scope="module")
def lg():
    return linear_gaussian(n=64, num_modalities=3, latent_dim=4, dim_range=(5, 8), seed=3, dtype=torch.float64)


def inexact_model(truth, shift=0.5, scale=1.6):
    """The exact-posterior model with experts that are too wide and shifted: a valid but imperfect proposal."""
    model = exact_poe_model(truth)
    d = truth.latent_dim
    with torch.no_grad():
        for mod in model.modalities.values():
            mod.encoder.bias[:d] += shift
            mod.encoder.bias[d:] = softplus_inverse(scale * truth.sigma - 1e-3)
    return model


def with_mixture_prior(model, d):
    """Swap in a Gaussian-mixture prior whose components all equal N(0, I): the same density, another code path."""
    prior = priors.GaussianMixture(d, 3).to(torch.float64)
    with torch.no_grad():
        prior.loc.zero_()
        prior.raw_scale.fill_(softplus_inverse(1.0 - prior.min_scale))
        prior.logits.copy_(torch.tensor([0.3, -1.0, 2.0]))
    return pimvae.MultimodalVAE(dict(model.modalities), model.aggregator, prior)


def with_moe(model, d):
    """The same experts, mixed instead of multiplied: a mixture encoder (not the exact posterior)."""
    return pimvae.MultimodalVAE(dict(model.modalities), aggregators.MoE(2 * d, d, projection=False).double(), model.prior)


# ----------------------------------------------------------------------------------------------------------
# log p(x_S)
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_particles", [1, 5, 64])
def test_exact_encoder_gives_the_closed_form_for_every_subset(lg, num_particles):
    model = exact_poe_model(lg.truth)
    for s in SUBSETS:
        est, se = evaluation.log_likelihood(model, pimvae.Batch(lg.data), s, num_particles=num_particles,
                                            chunk_size=3, return_stderr=True)
        exact = lg.truth.log_likelihood(lg.data, s)
        assert (est - exact).abs().max() < 1e-4
        assert se.max() < 1e-6  # all importance weights equal


def test_mixture_prior_path_is_exact_too(lg):
    model = with_mixture_prior(exact_poe_model(lg.truth), lg.truth.latent_dim)
    est = evaluation.log_likelihood(model, pimvae.Batch(lg.data), ["x0", "x1"], num_particles=16)
    assert (est - lg.truth.log_likelihood(lg.data, ["x0", "x1"])).abs().max() < 1e-4


def test_missing_modalities_intersect_the_subset(lg):
    model = exact_poe_model(lg.truth)
    g = torch.Generator().manual_seed(1)
    present = torch.rand(64, 3, generator=g) < 0.6
    present[:, 0] |= ~present.any(1)
    data = {k: torch.where(present[:, i, None], v, torch.full_like(v, float("nan"))) for i, (k, v) in enumerate(lg.data.items())}
    batch = pimvae.Batch(data, present)
    for s in [None, ["x1", "x2"]]:
        est = evaluation.log_likelihood(model, batch, s, num_particles=8)
        exact = lg.truth.log_likelihood(lg.data, s, present)
        assert torch.isfinite(est).all()
        assert (est - exact).abs().max() < 1e-4
    # a data point that observes nothing of S scores exactly 0
    only0 = present[:, 0] & ~present[:, 1:].any(1)
    assert only0.any()
    est = evaluation.log_likelihood(model, batch, ["x1", "x2"], num_particles=8)
    assert est[only0].abs().max() == 0


def test_inexact_encoder_rises_towards_the_exact_value_and_stays_below(lg):
    model = inexact_model(lg.truth)
    batch = pimvae.Batch(lg.data)
    exact = lg.truth.log_likelihood(lg.data).mean().item()
    means = []
    for k in [1, 10, 100, 1000]:
        est, se = evaluation.log_likelihood(model, batch, num_particles=k, chunk_size=128, seed=0, return_stderr=True)
        means.append(est.mean().item())
        # never above the exact value on average (Jensen), allowing 3 standard errors of the mean
        assert means[-1] <= exact + 3 * se.pow(2).sum().sqrt().item() / len(est)
    assert all(b > a for a, b in zip(means, means[1:])), means
    gaps = [exact - m for m in means]
    assert gaps[0] > 1.0  # the encoder is visibly inexact: its ELBO is far below
    assert gaps[-1] < 0.05 * gaps[0]  # and 1000 particles close most of the gap


def test_mixture_encoder_converges_to_the_exact_value(lg):
    model = with_moe(exact_poe_model(lg.truth), lg.truth.latent_dim)
    batch = pimvae.Batch(lg.data)
    exact = lg.truth.log_likelihood(lg.data, ["x0", "x1"])
    low = evaluation.log_likelihood(model, batch, ["x0", "x1"], num_particles=1, seed=0)
    high, se = evaluation.log_likelihood(model, batch, ["x0", "x1"], num_particles=4000, chunk_size=1000, seed=0,
                                         return_stderr=True)
    assert (exact - low).mean() > 1.0
    assert abs((high - exact).mean().item()) < 0.05
    assert (high - exact).mean() <= 3 * se.pow(2).sum().sqrt() / len(se)


def test_seeded_estimates_ignore_batch_and_chunk_sizes(lg):
    model = inexact_model(lg.truth)
    ds = MultimodalDataset(lg.data)
    ref = evaluation.log_likelihood(model, ds, num_particles=100, seed=7)
    for batch_size, chunk_size in [(1, 100), (7, 1), (7, 33), (64, 33), (64, 500)]:
        est = evaluation.log_likelihood(model, ds, num_particles=100, seed=7, batch_size=batch_size,
                                        chunk_size=chunk_size)
        torch.testing.assert_close(est, ref, rtol=0, atol=1e-12)
    # a data point keeps its estimate in any batch, given its index
    idx = torch.tensor([40, 3, 17])
    est = evaluation.log_likelihood(model, ds.batch(idx), num_particles=100, seed=7, index=idx)
    torch.testing.assert_close(est, ref[idx], rtol=0, atol=1e-12)
    # another seed is another draw, within Monte Carlo error
    other = evaluation.log_likelihood(model, ds, num_particles=100, seed=8)
    assert (other - ref).abs().max() > 0


def test_unseeded_estimates_agree_within_standard_error(lg):
    model = inexact_model(lg.truth)
    ds = MultimodalDataset(lg.data)
    runs = []
    for batch_size, chunk_size in [(1, 200), (7, 13), (64, 64)]:
        runs.append(evaluation.log_likelihood(model, ds, num_particles=200, batch_size=batch_size,
                                              chunk_size=chunk_size, return_stderr=True))
    (a, se_a) = runs[0]
    for b, se_b in runs[1:]:
        z = (a - b) / (se_a.pow(2) + se_b.pow(2)).sqrt()
        assert z.abs().max() < 5
        assert (z.abs() > 2.5).float().mean() < 0.1
        mean_se = (se_a.pow(2) + se_b.pow(2)).sum().sqrt() / len(a)
        assert (a - b).mean().abs() < 4 * mean_se
    # exact-posterior encoder: every layout gives the same number to 1e-5
    exact = exact_poe_model(lg.truth)
    vals = [evaluation.log_likelihood(exact, ds, ["x0", "x2"], num_particles=37, batch_size=bs, chunk_size=cs)
            for bs, cs in [(1, 37), (7, 5), (64, 1)]]
    for v in vals[1:]:
        torch.testing.assert_close(v, vals[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("agg", ALL_AGGREGATORS, ids=lambda c: c.__name__)
def test_every_aggregator_and_prior_is_layout_free_and_ignores_absent_slots(agg):
    torch.manual_seed(0)
    for prior in ("normal", "mixture"):
        model = small_model(agg, prior=prior)
        g = torch.Generator().manual_seed(2)
        data = {n: torch.randn(12, m.decoder.out_features, generator=g, dtype=torch.float64) for n, m in model.modalities.items()}
        present = torch.rand(12, 3, generator=g) < 0.6
        present[:, 1] |= ~present.any(1)
        ds = MultimodalDataset(data, present)
        a = evaluation.log_likelihood(model, ds, num_particles=20, seed=1, batch_size=12, chunk_size=20)
        b = evaluation.log_likelihood(model, ds, num_particles=20, seed=1, batch_size=5, chunk_size=6)
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
        # garbage in absent slots changes nothing
        junk = {n: torch.where(present[:, i, None], x, torch.full_like(x, 1e6)) for i, (n, x) in enumerate(data.items())}
        c = evaluation.log_likelihood(model, pimvae.Batch(junk, present), num_particles=20, seed=1)
        torch.testing.assert_close(a, c, rtol=0, atol=1e-10)
        # the joint of a point that misses modalities is the marginal of what it observes in a full batch
        full = pimvae.Batch(data)
        row = int((present.sum(1) == 2).nonzero()[0])
        names = [n for n, on in zip(model.names, present[row].tolist()) if on]
        d = evaluation.log_likelihood(model, full, names, num_particles=20, seed=1)
        torch.testing.assert_close(a[row], d[row], rtol=0, atol=1e-10)


def test_mixture_sampler_matches_the_mixture_moments():
    torch.manual_seed(0)
    model = small_model(aggregators.SumPoolingMixture)
    batch = pimvae.Batch({n: torch.randn(3, m.decoder.out_features, dtype=torch.float64) for n, m in model.modalities.items()})
    q = model.encode(batch)
    noise = ParticleNoise(40000, torch.arange(3), 2, seed=0, dtype=torch.float64, device=torch.device("cpu"))
    z = reparam(q, *noise.take(0, 40000))
    torch.testing.assert_close(z.mean(0), q.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(z.var(0), q.variance, atol=0.05, rtol=0.05)
    moe = small_model(aggregators.MoE).encode(pimvae.Batch(batch.data, torch.tensor([[True, False, True]] * 3)))
    z = reparam(moe, *noise.take(0, 40000))
    torch.testing.assert_close(z.mean(0), moe.mean, atol=0.03, rtol=0)


def test_conditional_is_joint_minus_marginal(lg):
    model = exact_poe_model(lg.truth)
    batch = pimvae.Batch(lg.data)
    cond = evaluation.conditional_log_likelihood(model, batch, ["x0"], ["x2"], num_particles=4)
    exact = lg.truth.log_likelihood(lg.data, ["x0", "x2"]) - lg.truth.log_likelihood(lg.data, ["x0"])
    assert (cond - exact).abs().max() < 1e-4
    rest = evaluation.conditional_log_likelihood(model, batch, ["x1"], num_particles=4)  # target: the others
    assert (rest - (lg.truth.log_likelihood(lg.data) - lg.truth.log_likelihood(lg.data, ["x1"]))).abs().max() < 1e-4
    # with an inexact encoder: the same draws, so exactly the difference of the two estimates
    model = inexact_model(lg.truth)
    cond = evaluation.conditional_log_likelihood(model, batch, ["x0"], ["x1", "x2"], num_particles=50, seed=3)
    joint = evaluation.log_likelihood(model, batch, None, num_particles=50, seed=3)
    marg = evaluation.log_likelihood(model, batch, ["x0"], num_particles=50, seed=3)
    torch.testing.assert_close(cond, joint - marg, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# The bound with frozen parameters
# ----------------------------------------------------------------------------------------------------------
def test_frozen_masked_bound_is_the_log_likelihood_at_the_exact_posterior(lg):
    model = exact_poe_model(lg.truth)
    state = torch.get_rng_state()
    out = evaluation.evaluate_bound(model, MultimodalDataset(lg.data), objectives.MaskedBound(), num_draws=4, batch_size=20)
    assert torch.equal(state, torch.get_rng_state())  # the caller's generator is untouched
    torch.testing.assert_close(out["bound"], lg.truth.log_likelihood(lg.data), rtol=0, atol=1e-8)
    assert out["bound_stderr"].max() < 1e-6
    assert out["L_S"].sub(out["bound"]).abs().max() > 1  # the subsets really varied


def test_frozen_mixture_bound_has_the_closed_form_gap(lg):
    model = exact_poe_model(lg.truth)
    obj = objectives.MixtureBound(subsets=objectives.Fixed(["x0"]))
    out = evaluation.evaluate_bound(model, pimvae.Batch(lg.data), obj, num_draws=400, seed=1)
    p_all, p_0 = lg.truth.posterior(lg.data), lg.truth.posterior(lg.data, ["x0"])
    expected = lg.truth.log_likelihood(lg.data) - kl_divergence(p_0, p_all)  # E[L^Mix_S] = log p(x) − KL
    err = (out["bound"] - expected).mean().abs()
    assert err < 4 * out["bound_stderr"].pow(2).sum().sqrt() / len(expected)
    assert (expected.mean() - out["bound"].mean()) < (lg.truth.log_likelihood(lg.data) - out["bound"]).mean()
    # seeded: reproducible
    again = evaluation.evaluate_bound(model, pimvae.Batch(lg.data), obj, num_draws=400, seed=1)
    assert torch.equal(out["bound"], again["bound"])


# ----------------------------------------------------------------------------------------------------------
# Rates and distortions
# ----------------------------------------------------------------------------------------------------------
def expected_neg_log_lik(truth, post, data, names):
    """−E_{N(m, C)} log N(x; W z + b, σ² I) = −log N(x; W m + b, σ² I) + tr(W C Wᵀ) / (2σ²)."""
    out = 0
    for n in names:
        w, b = truth.W[n], truth.b[n]
        at_mean = torch.distributions.Normal(post.mean @ w.T + b, truth.sigma).log_prob(data[n]).sum(-1)
        trace = (w @ post.covariance_matrix @ w.T).diagonal(dim1=-2, dim2=-1).sum(-1)
        out = out - at_mean + trace / (2 * truth.sigma**2)
    return out


def test_rates_and_distortions_match_closed_forms_at_the_exact_posterior(lg):
    model = exact_poe_model(lg.truth)
    batch = pimvae.Batch(lg.data)
    s, rest = ["x0"], ["x1", "x2"]
    rd = evaluation.rates_distortions(model, batch, s, num_samples=3000, chunk_size=1000, seed=0)
    p_s, p_o = lg.truth.posterior(lg.data, s), lg.truth.posterior(lg.data)
    prior = torch.distributions.MultivariateNormal(torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(rd["R_S"], kl_divergence(p_s, prior), rtol=0, atol=1e-8)
    torch.testing.assert_close(rd["R_not_S"], kl_divergence(p_o, p_s), rtol=0, atol=1e-8)
    for key, post, names in [("D_S", p_s, s), ("Dc_not_S", p_s, rest), ("D_not_S", p_o, rest)]:
        exp = expected_neg_log_lik(lg.truth, post, lg.data, names)
        assert (rd[key] - exp).abs().max() < 0.25, key  # ~5 Monte Carlo standard errors
        assert (rd[key] - exp).mean().abs() < 0.03, key
    # −(D_S + R_S) = log p(x_S) and −(D_\S + R_\S) = log p(x_\S | x_S) for the exact encoder
    assert (-(rd["D_S"] + rd["R_S"]) - lg.truth.log_likelihood(lg.data, s)).mean().abs() < 0.03
    cond = lg.truth.log_likelihood(lg.data) - lg.truth.log_likelihood(lg.data, s)
    assert (-(rd["D_not_S"] + rd["R_not_S"]) - cond).mean().abs() < 0.03


def test_monte_carlo_rates_agree_with_closed_forms(lg):
    # a mixture prior equal to N(0, I) has no registered KL: the rate is Monte Carlo
    exact = exact_poe_model(lg.truth)
    mc = with_mixture_prior(exact, 4)
    batch = pimvae.Batch(lg.data)
    a = evaluation.rates_distortions(exact, batch, ["x1"], num_samples=20000, chunk_size=5000, seed=0)
    b = evaluation.rates_distortions(mc, batch, ["x1"], num_samples=20000, chunk_size=5000, seed=0)
    assert (a["R_S"] - b["R_S"]).abs().max() < 0.05
    torch.testing.assert_close(a["D_S"], b["D_S"])  # same draws, same decoders
    # a mixture encoder: R_\S by Monte Carlo, finite and non-negative on average
    moe = evaluation.rates_distortions(with_moe(exact, 4), batch, ["x1"], num_samples=2000, chunk_size=1000, seed=0)
    assert moe["R_not_S"].mean() > 0 and torch.isfinite(moe["R_not_S"]).all()


def test_full_subset_has_no_cross_terms_and_table_records(lg):
    model = inexact_model(lg.truth)
    rd = evaluation.rates_distortions(model, pimvae.Batch(lg.data), None, num_samples=8, seed=0)
    for k in ("R_not_S", "D_not_S", "Dc_not_S"):
        assert rd[k].abs().max() == 0
    table = evaluation.rate_distortion_table(model, MultimodalDataset(lg.data), [["x0"], ["x0", "x1", "x2"]],
                                             num_samples=8)
    assert [r["subset"] for r in table] == ["x0", "x0+x1+x2"]
    assert table[0]["R_not_S"] > 0 and table[1]["R_not_S"] == 0
    # masked bound parts: L_S = −(D_S + R_S) on average
    obj = objectives.MaskedBound(subsets=objectives.Fixed(["x0"]))
    bound = evaluation.evaluate_bound(model, pimvae.Batch(lg.data), obj, num_draws=300)
    rd = evaluation.rates_distortions(model, pimvae.Batch(lg.data), ["x0"], num_samples=300, seed=0)
    assert abs(bound["L_S"].mean() + (rd["D_S"] + rd["R_S"]).mean()) < 0.1
    assert abs(bound["L_not_S"].mean() + (rd["D_not_S"] + rd["R_not_S"]).mean()) < 0.1


# ----------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------
def test_bad_input_is_a_clear_value_error(lg):
    model = exact_poe_model(lg.truth)
    batch = pimvae.Batch(lg.data)
    with pytest.raises(ValueError, match="num_particles must be a positive integer"):
        evaluation.log_likelihood(model, batch, num_particles=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        evaluation.log_likelihood(model, batch, chunk_size=0)
    with pytest.raises(ValueError, match="unknown modality 'nope'"):
        evaluation.log_likelihood(model, batch, ["x0", "nope"])
    with pytest.raises(ValueError, match="the subset is empty"):
        evaluation.log_likelihood(model, batch, [])
    with pytest.raises(ValueError, match="`given` is empty"):
        evaluation.conditional_log_likelihood(model, batch, [], ["x0"])
    with pytest.raises(ValueError, match="unknown modality 'x9'"):
        evaluation.conditional_log_likelihood(model, batch, ["x0"], ["x9"])
    with pytest.raises(ValueError, match="overlap"):
        evaluation.conditional_log_likelihood(model, batch, ["x0", "x1"], ["x1"])
    with pytest.raises(ValueError, match="unknown modality 'zz' in batch"):
        evaluation.log_likelihood(model, pimvae.Batch({**lg.data, "zz": lg.data["x0"]}))
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        evaluation.rates_distortions(model, batch, ["x0"], num_samples=0)
    with pytest.raises(ValueError, match="`given` is empty"):
        evaluation.generate(model, batch, [])
    with pytest.raises(TypeError, match="Objective"):
        evaluation.evaluate_bound(model, batch, "masked")


def test_latent_activity_of_the_exact_posterior_and_a_collapsed_dimension():
    # Exact posterior, prior N(0, I), orthonormal W_s: Var(z_d | x_S) = 1 / (1 + |S| / σ²) for every d, so the
    # posterior mean's variance over the data is 1 − 1 / (1 + |S| / σ²) (law of total variance).
    big = linear_gaussian(n=4000, num_modalities=3, latent_dim=4, dim_range=(5, 8), seed=5, dtype=torch.float64)
    model, data, s2 = exact_poe_model(big.truth), big.dataset, big.truth.sigma ** 2
    for subset, size in ((None, 3), (["x1"], 1), (["x0", "x2"], 2)):
        act = evaluation.latent_activity(model, data, subset)
        assert act.shape == (4,)
        assert act.numpy() == pytest.approx(1 - 1 / (1 + size / s2), abs=0.06)  # sampling error ~0.02
        assert torch.equal(act, evaluation.latents(model, data, subset).double().var(0))
    assert evaluation.active_units(model, data) == 4
    # collapse dimension 2: no expert's mean reads the data there, so the PoE mean is constant along it
    with torch.no_grad():
        for mod in model.modalities.values():
            mod.encoder.weight[2].zero_()
            mod.encoder.bias[2] = 0.0
    act = evaluation.latent_activity(model, data)
    assert act[2].item() == 0.0 and (act[[0, 1, 3]] > 0.5).all()
    assert evaluation.active_units(model, data) == 3
    assert evaluation.active_units(model, data, threshold=0.9) == 0
