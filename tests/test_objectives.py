"""Objectives: closed forms in a linear Gaussian model, STL gradients, composability, cost and bad input."""

import math

import pytest
import torch
from torch.distributions import kl_divergence

import pimvae
from helpers import ALL_AGGREGATORS, exact_poe_model, random_batch, small_model
from pimvae import objectives
from pimvae.data import linear_gaussian

OBJECTIVES = [objectives.MaskedBound, objectives.MixtureBound, objectives.TCBound, objectives.ELBO]


@pytest.fixture(scope="module")
def lg():
    return linear_gaussian(n=64, num_modalities=3, latent_dim=4, dim_range=(5, 8), seed=3, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------------
# Linear Gaussian oracle (SPEC §6): exact-posterior encoders
# ----------------------------------------------------------------------------------------------------------
def test_exact_encoder_is_exact_posterior(lg):
    model = exact_poe_model(lg.truth)
    for names in (["x0"], ["x1", "x2"], lg.truth.names):
        q = model.encode(pimvae.Batch(lg.data), names)
        p = lg.truth.posterior(lg.data, names)
        torch.testing.assert_close(q.mean, p.mean)
        torch.testing.assert_close(q.variance, p.variance)


def test_masked_bound_is_log_likelihood_with_zero_variance(lg):
    model = exact_poe_model(lg.truth)
    exact = lg.truth.log_likelihood(lg.data)
    sizes = set()
    for seed in range(5):
        torch.manual_seed(seed)
        out = objectives.MaskedBound()(model, pimvae.Batch(lg.data))
        torch.testing.assert_close(out.terms["bound"], exact, rtol=0, atol=1e-8)
        sizes |= set(out.terms["subset_size"].tolist())
        # the split is non-trivial: L_S alone is log p(x_S)
        assert (out.terms["L_S"] - exact).abs().max() > 1.0
    assert sizes == {0.0, 1.0, 2.0, 3.0}  # every subset size was exercised


def test_masked_bound_parts_are_marginal_and_conditional(lg):
    model = exact_poe_model(lg.truth)
    out = objectives.MaskedBound(subsets=objectives.Fixed(["x1"]))(model, pimvae.Batch(lg.data))
    torch.testing.assert_close(out.terms["L_S"], lg.truth.log_likelihood(lg.data, ["x1"]), rtol=0, atol=1e-8)


def test_mixture_bound_strictly_below_with_the_closed_form_gap(lg):
    model = exact_poe_model(lg.truth)
    batch = pimvae.Batch(lg.data)
    exact = lg.truth.log_likelihood(lg.data)
    obj = objectives.MixtureBound(subsets=objectives.Fixed(["x0"]), num_samples=4000)
    out = obj(model, batch)
    # E[L^Mix_S] = log p(x) − KL(p(z | x_S) || p(z | x))
    gap = kl_divergence(lg.truth.posterior(lg.data, ["x0"]), lg.truth.posterior(lg.data))
    assert (gap > 0.5).all()
    torch.testing.assert_close(out.terms["bound"], exact - gap, rtol=0, atol=0.35)
    assert (out.terms["bound"] < exact - 0.25).all()


def _encoder_grads(model):
    return torch.cat([p.grad.flatten() for m in model.modalities.values() for p in m.encoder.parameters()])


@pytest.mark.parametrize("part", ["elbo", "L_S"])
def test_stl_encoder_gradient_is_zero_at_the_exact_posterior(lg, part):
    model = exact_poe_model(lg.truth)
    for p in model.parameters():
        p.requires_grad_(True)
    torch.manual_seed(0)
    if part == "elbo":
        loss = objectives.ELBO()(model, pimvae.Batch(lg.data)).loss
    else:
        loss = -objectives.MaskedBound()(model, pimvae.Batch(lg.data)).terms["L_S"].mean()
    loss.backward()
    g = _encoder_grads(model)
    assert g.abs().max() < 1e-10
    # while the decoders do get a (non-zero) gradient
    dec = torch.cat([p.grad.flatten() for m in model.modalities.values() for p in m.decoder.parameters()])
    assert dec.abs().max() > 1e-3


def test_standard_gradient_is_not_zero_without_stl(lg):
    # sanity check of the test above: the path-derivative-free (score) term is what STL removes
    model = exact_poe_model(lg.truth)
    batch = pimvae.Batch(lg.data)
    q = model.encode(batch)
    z = q.rsample()
    ll = model.log_likelihoods(z, lg.data, torch.ones(64, 3, dtype=torch.bool)).sum(-1)
    elbo = ll + model.prior().log_prob(z) - q.log_prob(z)
    (-elbo.mean()).backward()
    assert _encoder_grads(model).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------------------
# Composability: every aggregator × objective × prior
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prior", ["normal", "mixture"])
@pytest.mark.parametrize("obj_cls", OBJECTIVES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("agg_cls", ALL_AGGREGATORS, ids=lambda c: c.__name__)
def test_every_combination_trains(agg_cls, obj_cls, prior):
    model = small_model(agg_cls, prior)
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=torch.bool)
    batch = random_batch(model, present=present)
    out = obj_cls(num_samples=2)(model, batch)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.terms["bound"].shape == (6,)
    torch.testing.assert_close(out.loss, -out.terms["bound"].mean())
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("obj_cls", OBJECTIVES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("agg_cls", ALL_AGGREGATORS, ids=lambda c: c.__name__)
def test_garbage_in_absent_slots_changes_nothing(agg_cls, obj_cls):
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=torch.bool)

    def run(garbage):
        torch.manual_seed(5)
        model = small_model(agg_cls)
        batch = random_batch(model, present=present)
        for i, x in enumerate(batch.data.values()):
            x[~present[:, i]] = garbage
        torch.manual_seed(7)
        out = obj_cls()(model, batch)
        out.loss.backward()
        return out.terms["bound"].detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    b0, g0 = run(0.0)
    for garbage in (float("nan"), 1e6):
        b1, g1 = run(garbage)
        torch.testing.assert_close(b1, b0, rtol=0, atol=0)
        assert len(g0) == len(g1)
        for a, b in zip(g0, g1):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("agg_cls", ALL_AGGREGATORS, ids=lambda c: c.__name__)
def test_gradients_reach_only_encoders_in_the_subset(agg_cls):
    model = small_model(agg_cls)
    batch = random_batch(model)
    q = model.encode(batch, ["x0", "x2"])
    (q.rsample((3,)) ** 2).sum().backward()
    norms = {n: sum(p.grad.abs().sum() for p in m.encoder.parameters() if p.grad is not None)
             for n, m in model.modalities.items()}
    assert norms["x0"] > 0 and norms["x2"] > 0
    assert norms["x1"] == 0


@pytest.mark.parametrize("obj_cls", OBJECTIVES, ids=lambda c: c.__name__)
def test_each_modality_encoded_and_decoded_once_per_step(obj_cls):
    model = small_model(pimvae.aggregators.SumPooling)
    calls = {"enc": 0, "dec": 0, "chi": 0}
    for m in model.modalities.values():
        m.encoder.register_forward_hook(lambda *a: calls.__setitem__("enc", calls["enc"] + 1))
        m.decoder.register_forward_hook(lambda *a: calls.__setitem__("dec", calls["dec"] + 1))
    # χ's first layer: SumPooling applies χ's last (linear) layer after pooling, once per pooled subset
    model.aggregator.chi[0].register_forward_hook(lambda *a: calls.__setitem__("chi", calls["chi"] + 1))
    obj_cls(num_samples=3)(model, random_batch(model)).loss.backward()
    assert calls == {"enc": 3, "dec": 3, "chi": 1}


def test_importance_weighted_is_tighter_on_average():
    torch.manual_seed(0)
    model = small_model(pimvae.aggregators.SumPooling)
    batch = random_batch(model, b=64)
    with torch.no_grad():
        plain = torch.stack([objectives.ELBO(num_samples=8)(model, batch).terms["bound"] for _ in range(20)]).mean()
        iw = torch.stack([objectives.ELBO(num_samples=8, importance_weighted=True)(model, batch).terms["bound"]
                          for _ in range(20)]).mean()
    assert iw > plain + 0.1


# ----------------------------------------------------------------------------------------------------------
# Subset distributions
# ----------------------------------------------------------------------------------------------------------
def test_hierarchical_subset_size_is_uniform():
    torch.manual_seed(0)
    m, n = 4, 200_000
    present = torch.ones(n, m, dtype=torch.bool)
    sizes = objectives.Hierarchical()(present, list("abcd")).sum(-1)
    freq = torch.bincount(sizes, minlength=m + 1).double() / n
    torch.testing.assert_close(freq, torch.full((m + 1,), 1 / (m + 1), dtype=torch.float64), rtol=0, atol=0.006)


def test_samplers_stay_inside_observed():
    torch.manual_seed(0)
    present = torch.rand(1000, 5) < 0.5
    names = list("abcde")
    for sampler in (objectives.Hierarchical(), objectives.IndependentBernoulli(0.3), objectives.SingleModality(),
                    objectives.Fixed(["a", "c"])):
        s = sampler(present, names)
        assert not (s & ~present).any()
    single = objectives.SingleModality()(present, names)
    assert (single.sum(-1) == present.any(-1).long()).all()
    bern = objectives.IndependentBernoulli(0.3)(torch.ones(100_000, 5, dtype=torch.bool), names)
    assert abs(bern.double().mean().item() - 0.3) < 0.005


def test_mixture_and_tc_subsets_are_never_empty():
    model = small_model()
    present = torch.tensor([[1, 0, 0]] * 50 + [[1, 1, 1]] * 50, dtype=torch.bool)
    batch = random_batch(model, b=100, present=present)
    for obj in (objectives.MixtureBound(), objectives.TCBound()):
        sizes = obj(model, batch).terms["subset_size"]
        assert (sizes >= 1).all()
    assert (objectives.TCBound()(model, batch).terms["subset_size"] == 1).all()


# ----------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------
def test_bad_input_errors():
    model = small_model()
    good = random_batch(model)
    obj = objectives.MaskedBound()
    with pytest.raises(ValueError, match="unknown modality 'y'"):
        obj(model, pimvae.Batch({**good.data, "y": torch.zeros(6, 2)}))
    with pytest.raises(ValueError, match="'x1' is missing"):
        obj(model, pimvae.Batch({"x0": good.data["x0"], "x2": good.data["x2"]}))
    with pytest.raises(ValueError, match="'x2'.*batch axis"):
        obj(model, pimvae.Batch({**good.data, "x2": torch.zeros(5, 5, dtype=torch.float64)}))
    with pytest.raises(ValueError, match="`present` must have shape"):
        obj(model, pimvae.Batch(good.data, torch.ones(6, 2, dtype=torch.bool)))
    with pytest.raises(ValueError, match="`present` must be a bool"):
        obj(model, pimvae.Batch(good.data, torch.ones(6, 3)))
    present = torch.ones(6, 3, dtype=torch.bool)
    present[4] = False
    with pytest.raises(ValueError, match=r"data point\(s\) \[4\] observe no modality"):
        obj(model, pimvae.Batch(good.data, present))
    with pytest.raises(ValueError, match="beta"):
        objectives.MaskedBound(beta=0.0)
    with pytest.raises(ValueError, match="num_samples"):
        objectives.ELBO(num_samples=0)
    with pytest.raises(ValueError, match="unknown modality 'q'"):
        model.encode(good, ["q"])
    # the input shape is read off the encoder's first Linear layer
    with pytest.raises(ValueError, match=r"'x1': expected data of shape \('B', 4\), got \(6, 7\)"):
        obj(model, pimvae.Batch({**good.data, "x1": torch.zeros(6, 7, dtype=torch.float64)}))


def test_missing_key_allowed_when_modality_absent_everywhere():
    model = small_model()
    good = random_batch(model)
    present = torch.tensor([[1, 0, 1]] * 6, dtype=torch.bool)
    full = objectives.ELBO()
    torch.manual_seed(1)
    a = full(model, pimvae.Batch({"x0": good.data["x0"], "x2": good.data["x2"]}, present)).terms["bound"]
    torch.manual_seed(1)
    b = full(model, pimvae.Batch(good.data, present)).terms["bound"]
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="'x1' is marked present"):
        full(model, pimvae.Batch({"x0": good.data["x0"], "x2": good.data["x2"]}, torch.ones(6, 3, dtype=torch.bool)))


def test_masked_bound_can_exceed_log_likelihood_when_q_s_is_not_the_posterior():
    """L_S + L_\\S ≤ log p(x) needs q(z|x_S) = p(z|x_S) (the paper, after its Proposition 2); otherwise one data
    point's value can exceed log p(x). Closed-form model: z ~ N(0, 1), x1 | z ~ N(z, 1), x2 | z ~ N(z, 0.1²),
    x = (0, 2), S = {x1}, q(z|x) the exact posterior and q(z|x_S) = N(0.7, 0.94²) instead of N(0, 1/2).
    The closed form of the bound there is −3.69 against log p(x) = −5.77."""
    from torch.distributions import MultivariateNormal

    from pimvae.nn import softplus_inverse

    torch.manual_seed(0)
    w, x1, x2, m, s = 0.1, 0.0, 2.0, 0.7, 0.94
    log_p = MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                               torch.tensor([[2.0, 1.0], [1.0, 1 + w * w]], dtype=torch.float64)).log_prob(
        torch.tensor([x1, x2], dtype=torch.float64))
    def constant(mu, precision):  # an encoder whose expert is N(mu, 1/precision) whatever the input
        enc = torch.nn.Linear(1, 2).double()
        with torch.no_grad():
            enc.weight.zero_()
            enc.bias.copy_(torch.tensor([mu, float(softplus_inverse(torch.tensor(precision ** -0.5 - 1e-3)))]))
        return enc

    def identity():  # the decoder mean is z
        dec = torch.nn.Linear(1, 1).double()
        with torch.no_grad():
            dec.weight.fill_(1.0)
            dec.bias.zero_()
        return dec

    def masked_bound(m, s):
        # PoE with the prior expert: q_S = prior × e1 = N(m, s²), q_O = prior × e1 × e2 = the exact posterior.
        p1 = 1 / s**2 - 1
        mu1 = m / (s**2 * p1)
        prec = 2 + 1 / w**2
        p2 = prec - 1 - p1
        mu2 = ((x1 + x2 / w**2) - mu1 * p1) / p2
        mods = {name: pimvae.Modality(constant(mu, p), identity(), pimvae.likelihoods.Normal(scale=scale))
                for name, (mu, p, scale) in {"x1": (mu1, p1, 1.0), "x2": (mu2, p2, w)}.items()}
        model = pimvae.MultimodalVAE(mods, pimvae.aggregators.PoE(2, 1, projection=False),
                                     pimvae.priors.StandardNormal(1)).double()
        batch = pimvae.Batch({"x1": torch.tensor([[x1]], dtype=torch.float64),
                              "x2": torch.tensor([[x2]], dtype=torch.float64)})
        objective = objectives.MaskedBound(subsets=objectives.Fixed(["x1"]), num_samples=200_000)
        with torch.no_grad():
            return objective(model, batch).terms["bound"]

    # control: with q_S = p(z | x1) = N(x1 / 2, 1/2) the bound is log p(x) exactly (every sample)
    torch.testing.assert_close(masked_bound(x1 / 2, 0.5**0.5), log_p.reshape(1), rtol=0, atol=1e-6)
    bound = masked_bound(m, s)
    torch.testing.assert_close(bound, torch.tensor([-3.6935], dtype=torch.float64), rtol=0, atol=0.02)
    assert bound.item() > log_p.item() + 2.0
