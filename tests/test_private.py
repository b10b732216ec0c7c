"""Private latents (SPEC §5, Appendix F, Algorithm 2): z = (z', z̃_1, …, z̃_M) with equivariant private encoders."""

import copy
import json
import math

import pytest
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

import pimvae
from pimvae import aggregators, likelihoods, objectives, priors
from pimvae.distributions import detach
from pimvae.nn import softplus_inverse
from pimvae.private import (IndependentPrivate, PrivatePosterior, PrivatePrior, SelfAttentionPrivate,
                            SumPoolingPrivate, WithPrivate)

from helpers import make_aggregator

E, D1, D2, M = 6, 2, 3, 3  # feature size, shared size D', private size D̃, modalities
DT = torch.float64
ENCODERS = ["independent", "sum_pooling", "self_attention"]
SHARED = [aggregators.PoE, aggregators.SumPooling, aggregators.SelfAttention]


def make_private(kind, feature_dim=E, shared_dim=D1, private_dim=D2):
    if kind == "independent":
        return IndependentPrivate(feature_dim, private_dim)
    if kind == "sum_pooling":
        return SumPoolingPrivate(feature_dim, shared_dim, private_dim, width=8, hidden=(8,))
    return SelfAttentionPrivate(feature_dim, shared_dim, private_dim, width=8, hidden=(8,), num_heads=2, ff_dim=8)


def make_agg(shared_cls, kind):
    return WithPrivate(make_aggregator(shared_cls, E, D1), make_private(kind), M).to(DT)


def private_model(shared_cls=aggregators.SumPooling, kind="sum_pooling", prior="normal", dims=(3, 4, 5)):
    mods = {
        f"x{i}": pimvae.Modality(nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, E)), nn.Linear(D1 + D2, d),
                                 likelihoods.Normal(scale=0.7))
        for i, d in enumerate(dims)
    }
    shared_prior = priors.StandardNormal(D1) if prior == "normal" else priors.GaussianMixture(D1, 3)
    agg = WithPrivate(make_aggregator(shared_cls, E, D1), make_private(kind), len(dims))
    return pimvae.MultimodalVAE(mods, agg, PrivatePrior(shared_prior, len(dims), D2)).to(DT)


def data_and_present(b=6, seed=0, dims=(3, 4, 5)):
    g = torch.Generator().manual_seed(seed)
    data = {f"x{i}": torch.randn(b, d, generator=g, dtype=DT) for i, d in enumerate(dims)}
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)[:b]
    return data, present


SUBSET = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)


def split(z):
    return z[..., :D1], z[..., D1:].unflatten(-1, (M, D2))


# ---------------------------------------------------------------------------------------------------------------
# densities
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("shared_cls", [aggregators.PoE, aggregators.SumPoolingMixture])
def test_log_prob_is_shared_plus_private_plus_prior(shared_cls, kind):
    agg = make_agg(shared_cls, kind)
    h = torch.randn(6, M, E, dtype=DT)
    q = agg.pool(agg.embed(h, torch.ones(6, M, dtype=torch.bool)), SUBSET)
    assert isinstance(q, PrivatePosterior) and q.batch_shape == (6,) and q.event_shape == (D1 + M * D2,)
    z = torch.randn(4, 6, D1 + M * D2, dtype=DT)
    zs, zp = split(z)
    expected = agg.shared.pool(agg.shared.embed(h, torch.ones(6, M, dtype=torch.bool)), SUBSET).log_prob(zs)
    if kind == "independent":  # the head, written out
        w, b = agg.private.head.weight, agg.private.head.bias
        loc, raw = (h @ w.T + b).split(D2, -1)
        loc, scale = loc.expand(4, 6, M, D2), (agg.private.min_scale + nn.functional.softplus(raw)).expand(4, 6, M, D2)
    else:
        loc, scale = agg.private(zs, h, SUBSET)
    for s in range(M):
        on = Normal(loc[..., s, :], scale[..., s, :]).log_prob(zp[..., s, :]).sum(-1)
        off = Normal(torch.zeros((), dtype=DT), torch.ones((), dtype=DT)).log_prob(zp[..., s, :]).sum(-1)
        expected = expected + torch.where(SUBSET[:, s], on, off)
    torch.testing.assert_close(q.log_prob(z), expected, rtol=1e-12, atol=1e-12)


def test_rsample_moments_and_entropy_independent_private():
    """PoE + IndependentPrivate: q is a diagonal Gaussian; sample moments and E[-log q] match closed forms."""
    torch.manual_seed(1)
    agg = make_agg(aggregators.PoE, "independent")
    h = torch.randn(6, M, E, dtype=DT)
    q = agg.pool(agg.embed(h, torch.ones(6, M, dtype=torch.bool)), SUBSET)
    n = 100_000
    z = q.rsample((n,))
    assert z.shape == (n, 6, D1 + M * D2)
    base = q.shared.base_dist
    loc_p, scale_p = agg.private(base.loc[None], h, SUBSET)
    loc = torch.cat([base.loc, loc_p[0].flatten(-2)], -1)
    scale = torch.cat([base.scale, scale_p[0].flatten(-2)], -1)
    # private slots outside S are the prior N(0, 1)
    off = ~SUBSET[..., None].expand(6, M, D2).flatten(-2)
    assert torch.equal(loc[:, D1:][off], torch.zeros(int(off.sum()), dtype=DT))
    assert torch.equal(scale[:, D1:][off], torch.ones(int(off.sum()), dtype=DT))
    # 5 standard errors
    assert ((z.mean(0) - loc).abs() <= 5 * scale / math.sqrt(n)).all()
    assert ((z.std(0) / scale - 1).abs() <= 5 * math.sqrt(0.5 / n)).all()
    entropy = Independent(Normal(loc, scale), 1).entropy()  # (6,)
    neg_log_q = -q.log_prob(z)
    se = neg_log_q.std(0) / math.sqrt(n)
    assert ((neg_log_q.mean(0) - entropy).abs() <= 5 * se).all()
    torch.testing.assert_close(q.mean, loc, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ENCODERS)
def test_rsample_is_reparameterised_given_z_shared(kind):
    """(z̃_s − loc_s(z')) / scale_s(z') is standard normal for every encoder (private parts drawn given z')."""
    torch.manual_seed(2)
    agg = make_agg(aggregators.SumPooling, kind)
    h = torch.randn(6, M, E, dtype=DT)
    q = agg.pool(agg.embed(h, torch.ones(6, M, dtype=torch.bool)), SUBSET)
    n = 20_000
    with torch.no_grad():
        z = q.rsample((n,))
        zs, zp = split(z)
        loc, scale = agg.private(zs, h, SUBSET)
    eps = (zp - loc) / scale  # (n, 6, M, D2)
    assert (eps.mean(0).abs() < 5 / math.sqrt(n)).all()
    assert ((eps.var(0) - 1).abs() < 5 * math.sqrt(2 / n)).all()
    # z' is the shared posterior's draw
    qs = q.shared
    assert ((zs.mean(0) - qs.mean).abs() < 5 * qs.stddev / math.sqrt(n)).all()


# ---------------------------------------------------------------------------------------------------------------
# equivariance, absent slots
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ENCODERS)
def test_private_encoders_are_permutation_equivariant(kind):
    enc = make_private(kind).to(DT)
    h = torch.randn(6, M, E, dtype=DT)
    z = torch.randn(5, 6, D1, dtype=DT)
    loc, scale = enc(z, h, SUBSET)
    assert loc.shape == scale.shape == (5, 6, M, D2)
    for perm in ([1, 2, 0], [2, 0, 1], [0, 2, 1]):
        loc_p, scale_p = enc(z, h[:, perm], SUBSET[:, perm])
        torch.testing.assert_close(loc_p, loc[:, :, perm], rtol=0, atol=1e-10)
        torch.testing.assert_close(scale_p, scale[:, :, perm], rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("shared_cls", SHARED, ids=lambda c: c.__name__)
def test_posterior_shared_invariant_private_equivariant(shared_cls, kind):
    agg = make_agg(shared_cls, kind)
    h = torch.randn(6, M, E, dtype=DT)
    ones = torch.ones(6, M, dtype=torch.bool)
    q = agg.pool(agg.embed(h, ones), SUBSET)
    z = torch.randn(4, 6, D1 + M * D2, dtype=DT)
    perm = [2, 0, 1]
    q_p = agg.pool(agg.embed(h[:, perm], ones), SUBSET[:, perm])
    zs, zp = split(z)
    z_p = torch.cat([zs, zp[..., perm, :].flatten(-2)], -1)
    torch.testing.assert_close(q_p.shared.log_prob(zs), q.shared.log_prob(zs), rtol=0, atol=1e-10)
    torch.testing.assert_close(q_p.log_prob(z_p), q.log_prob(z), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ENCODERS)
def test_absent_slots_change_no_output_and_no_gradient(kind):
    enc = make_private(kind).to(DT)
    h = torch.randn(6, M, E, dtype=DT)
    z = torch.randn(2, 6, D1, dtype=DT)
    grads = []
    outs = []
    for fill in (0.0, float("nan"), 1e6):
        hh = torch.where(SUBSET[..., None], h, torch.full((), fill, dtype=DT)).requires_grad_()
        loc, scale = enc(z, hh, SUBSET)
        loss = (loc.square() + scale.log()).sum()
        g = torch.autograd.grad(loss, [hh, *enc.parameters()])
        assert all(torch.isfinite(t).all() for t in g)
        assert torch.equal(g[0][~SUBSET], torch.zeros_like(g[0][~SUBSET]))
        outs.append((loc, scale))
        grads.append(g)
    for (loc, scale), g in zip(outs[1:], grads[1:]):
        assert torch.equal(loc, outs[0][0]) and torch.equal(scale, outs[0][1])
        assert all(torch.equal(a, b) for a, b in zip(g, grads[0]))


@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("shared_cls", SHARED, ids=lambda c: c.__name__)
def test_with_private_ignores_unobserved_and_unselected_slots(shared_cls, kind):
    """NaN outside `present` and any value in present slots outside S leave q(z | x_S) and its gradients alone."""
    agg = make_agg(shared_cls, kind)
    h = torch.randn(6, M, E, dtype=DT)
    present = SUBSET | torch.tensor([[0, 1, 0]] * 6, dtype=torch.bool)
    z = torch.randn(3, 6, D1 + M * D2, dtype=DT)
    results = []
    for outside_present, outside_subset in ((0.0, None), (float("nan"), 1e6), (float("nan"), -3.0)):
        hh = torch.where(present[..., None], h, torch.full((), outside_present, dtype=DT))
        if outside_subset is not None:
            hh = torch.where(SUBSET[..., None] | ~present[..., None], hh, torch.full((), outside_subset, dtype=DT))
        q = agg.pool(agg.embed(hh, present), SUBSET)
        lp = q.log_prob(z)
        g = torch.autograd.grad(lp.sum(), list(agg.parameters()), allow_unused=True)
        g = [torch.zeros(()) if t is None else t for t in g]
        assert torch.isfinite(lp).all() and all(torch.isfinite(t).all() for t in g)
        results.append((lp, g))
    for lp, g in results[1:]:
        torch.testing.assert_close(lp, results[0][0], rtol=1e-12, atol=1e-12)
        for a, b in zip(g, results[0][1]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# detach (STL's q')
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("shared_cls", [aggregators.SumPooling, aggregators.SumPoolingMixture], ids=lambda c: c.__name__)
def test_detach_stops_parameter_gradients_keeps_value_gradient(shared_cls, kind):
    agg = make_agg(shared_cls, kind)
    feats = torch.randn(6, M, E, dtype=DT, requires_grad=True)
    q = agg.pool(agg.embed(feats, torch.ones(6, M, dtype=torch.bool)), SUBSET)
    q_d = detach(q)
    z = q.rsample((3,)).detach().requires_grad_()
    lp, lp_d = q.log_prob(z), q_d.log_prob(z)
    torch.testing.assert_close(lp_d, lp, rtol=1e-12, atol=1e-12)
    params = [feats, *agg.parameters()]
    g_value = torch.autograd.grad(lp.sum(), z, retain_graph=True)[0]
    g_value_d = torch.autograd.grad(lp_d.sum(), z, retain_graph=True)[0]
    torch.testing.assert_close(g_value_d, g_value, rtol=1e-12, atol=1e-12)
    assert g_value.abs().sum() > 0
    g_params = torch.autograd.grad(lp_d.sum(), params, allow_unused=True)
    assert all(g is None or torch.equal(g, torch.zeros_like(g)) for g in g_params)
    # …whereas the non-detached density reaches the private encoder's weights and the features
    g_live = torch.autograd.grad(lp.sum(), [feats, *agg.private.parameters()], allow_unused=True)
    assert g_live[0].abs().sum() > 0
    assert sum(float(g.abs().sum()) for g in g_live[1:] if g is not None) > 0
    # the detached copy of a detached copy is still correct
    torch.testing.assert_close(detach(q_d).log_prob(z), lp, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# model wiring, objectives end to end
# ---------------------------------------------------------------------------------------------------------------
def test_decoder_input_reads_shared_and_own_private_part():
    model = private_model()
    assert model.latent_dim == D1 + M * D2
    z = torch.arange(2 * (D1 + M * D2), dtype=DT).view(2, -1)
    for i, name in enumerate(model.names):
        expected = torch.cat([z[:, :D1], z[:, D1 + i * D2: D1 + (i + 1) * D2]], -1)
        assert torch.equal(model.decoder_input(z, name), expected)
    p_x = model.decode(z)
    assert p_x["x1"].mean.shape == (2, 4)
    # the decoder of x1 ignores the private parts of x0 and x2
    z2 = z.clone()
    z2[:, D1:D1 + D2] += 5.0
    z2[:, D1 + 2 * D2:] -= 5.0
    assert torch.equal(model.decode(z2)["x1"].mean, p_x["x1"].mean)


def test_bad_configurations_raise_clear_errors():
    with pytest.raises(ValueError, match="num_modalities=2"):
        mods = private_model().modalities
        agg = WithPrivate(aggregators.PoE(E, D1), IndependentPrivate(E, D2), 2)
        pimvae.MultimodalVAE(dict(mods), agg, PrivatePrior(priors.StandardNormal(D1), 2, D2))
    with pytest.raises(ValueError, match="shared_dim=3"):
        WithPrivate(aggregators.PoE(E, D1), SumPoolingPrivate(E, 3, D2), M)
    with pytest.raises(ValueError, match="feature_dim"):
        WithPrivate(aggregators.PoE(E, D1), IndependentPrivate(E + 1, D2), M)
    with pytest.raises(ValueError, match="private prior"):
        mods = private_model().modalities
        pimvae.MultimodalVAE(dict(mods), WithPrivate(aggregators.PoE(E, D1), IndependentPrivate(E, D2), M),
                             PrivatePrior(priors.StandardNormal(D1 + M), M, D2 - 1))
    enc = SumPoolingPrivate(E, D1, D2)
    with pytest.raises(ValueError, match="z_shared has size"):
        enc(torch.randn(4, D1 + 1), torch.randn(4, M, E), torch.ones(4, M, dtype=torch.bool))
    with pytest.raises(ValueError, match="features must have shape"):
        enc(torch.randn(4, D1), torch.randn(4, M, E + 1), torch.ones(4, M, dtype=torch.bool))
    agg = WithPrivate(aggregators.PoE(E, D1), IndependentPrivate(E, D2), M)
    with pytest.raises(ValueError, match="M=3"):
        agg.embed(torch.randn(4, 2, E), torch.ones(4, 2, dtype=torch.bool))


def test_private_prior_density_and_samples():
    shared = priors.GaussianMixture(D1, 3).to(DT)
    p = PrivatePrior(shared, M, D2)()
    z = torch.randn(5, D1 + M * D2, dtype=DT)
    expected = shared().log_prob(z[:, :D1]) + Normal(torch.zeros((), dtype=DT), 1.0).log_prob(z[:, D1:]).sum(-1)
    torch.testing.assert_close(p.log_prob(z), expected, rtol=1e-12, atol=1e-12)
    torch.manual_seed(4)
    s = p.sample((50_000,))
    assert s.shape == (50_000, D1 + M * D2)
    assert (s[:, D1:].mean(0).abs() < 5 / math.sqrt(50_000)).all()
    assert ((s[:, D1:].var(0) - 1).abs() < 5 * math.sqrt(2 / 50_000)).all()
    torch.testing.assert_close(s[:, :D1].mean(0), shared().mean, rtol=0, atol=0.05)
    prior = PrivatePrior(shared, M, D2)
    torch.testing.assert_close(prior.cluster_posterior(z), shared.cluster_posterior(z[:, :D1]))
    assert not hasattr(PrivatePrior(priors.StandardNormal(D1), M, D2), "cluster_posterior")


@pytest.mark.parametrize("objective", [objectives.MaskedBound, objectives.MixtureBound, objectives.TCBound,
                                       objectives.ELBO], ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("shared_cls", SHARED, ids=lambda c: c.__name__)
def test_every_objective_runs_with_private_latents(shared_cls, kind, objective):
    torch.manual_seed(5)
    model = private_model(shared_cls, kind, prior="mixture" if kind == "sum_pooling" else "normal")
    data, present = data_and_present()
    data["x2"] = torch.where(present[:, 2:3], data["x2"], torch.full((), float("nan"), dtype=DT))
    out = objective(num_samples=2)(model, pimvae.Batch(data, present))
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.terms["bound"].shape == (6,) and torch.isfinite(out.terms["bound"]).all()
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    private_grads = [g for n, g in grads.items() if n.startswith("aggregator.private.") and g is not None]
    assert private_grads and sum(float(g.abs().sum()) for g in private_grads) > 0


class _Uncached(WithPrivate):
    """The private encoder's per-slot features recomputed at every call (the path before they were shared)."""

    def pool_many(self, g, subsets):
        return [PrivatePosterior(q.shared, q.encoder, q.h, q.subset) for q in super().pool_many(g, subsets)]


@pytest.mark.parametrize("objective", [objectives.MaskedBound, objectives.ELBO], ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", ENCODERS)
def test_shared_private_features_change_neither_loss_nor_gradients(kind, objective, monkeypatch):
    # The features are computed once per step and shared by the draws, the log q's and the detached copies; the
    # loss and every gradient equal those of recomputing them at each of the masked bound's five calls.
    torch.manual_seed(3)
    model = private_model(aggregators.SumPooling, kind)
    uncached = copy.deepcopy(model)
    uncached.aggregator.__class__ = _Uncached
    data, present = data_and_present()
    data["x2"] = torch.where(present[:, 2:3], data["x2"], torch.full((), float("nan"), dtype=DT))
    calls = []
    original = type(model.aggregator.private).features
    monkeypatch.setattr(type(model.aggregator.private), "features",
                        lambda self, h: calls.append(1) or original(self, h))
    results = []
    for m in (model, uncached):
        calls.clear()
        torch.manual_seed(11)
        out = objective(num_samples=3)(m, pimvae.Batch(data, present))
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad for n, p in m.named_parameters()}, len(calls)))
    (loss, grads, n_cached), (loss_u, grads_u, n_uncached) = results
    # (the uncached path also runs the shared pool_many's one call, unused)
    assert n_cached == 1 and n_uncached == 1 + (5 if objective is objectives.MaskedBound else 2)
    torch.testing.assert_close(loss, loss_u, rtol=1e-12, atol=1e-12)
    assert grads.keys() == grads_u.keys()
    for name, g in grads.items():
        if g is None:
            assert grads_u[name] is None or not grads_u[name].any(), name
        else:
            torch.testing.assert_close(g, grads_u[name], rtol=1e-10, atol=1e-12, msg=name)


def test_generation_and_sampling_shapes():
    torch.manual_seed(6)
    model = private_model(aggregators.SelfAttention, "self_attention")
    data, present = data_and_present()
    out = model.generate(pimvae.Batch(data, present), ["x0"], num_samples=3)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"x0": (3, 6, 3), "x1": (3, 6, 4), "x2": (3, 6, 5)}
    assert {k: tuple(v.shape) for k, v in model.sample(4).items()} == {"x0": (4, 3), "x1": (4, 4), "x2": (4, 5)}


# ---------------------------------------------------------------------------------------------------------------
# closed form: linear Gaussian model with exact encoders
# ---------------------------------------------------------------------------------------------------------------
def _exact_linear_gaussian(dims=(5, 6, 7), sigma=0.5, seed=0):  # σ exact in float32 (the buffer)
    """x_s = W'_s z' + W̃_s z̃_s + b_s + σ ε with [W'_s, W̃_s] orthonormal columns; the posterior then factorises
    into a PoE over z' (experts N(W'_sᵀ(x_s − b_s), σ²)) and independent q(z̃_s | x_s), both exact."""
    g = torch.Generator().manual_seed(seed)
    mods, mats = {}, {}
    raw_shared = softplus_inverse(sigma - 1e-3)
    c = 1.0 / (1.0 + sigma**2)
    raw_private = softplus_inverse(sigma / math.sqrt(1.0 + sigma**2) - 1e-3)
    for i, d in enumerate(dims):
        q, _ = torch.linalg.qr(torch.randn(d, D1 + D2, generator=g, dtype=DT))
        b = torch.randn(d, generator=g, dtype=DT)
        enc = nn.Linear(d, D1 + D2, dtype=DT)  # h_s = [W'ᵀ(x − b), W̃ᵀ(x − b)]
        dec = nn.Linear(D1 + D2, d, dtype=DT)
        with torch.no_grad():
            enc.weight.copy_(q.T)
            enc.bias.copy_(-(q.T @ b))
            dec.weight.copy_(q)
            dec.bias.copy_(b)
        mods[f"x{i}"] = pimvae.Modality(enc, dec, likelihoods.Normal(scale=sigma))
        mats[f"x{i}"] = (q, b)
    shared = aggregators.PoE(D1 + D2, D1).to(DT)  # float64 before the exact values are written
    private = IndependentPrivate(D1 + D2, D2).to(DT)
    with torch.no_grad():
        shared.head.weight.zero_()
        shared.head.weight[:D1, :D1] = torch.eye(D1)
        shared.head.bias.copy_(torch.tensor([0.0] * D1 + [raw_shared] * D1, dtype=DT))
        private.head.weight.zero_()
        private.head.weight[:D2, D1:] = c * torch.eye(D2, dtype=DT)
        private.head.bias.copy_(torch.tensor([0.0] * D2 + [raw_private] * D2, dtype=DT))
    model = pimvae.MultimodalVAE(mods, WithPrivate(shared, private, len(dims)),
                                 PrivatePrior(priors.StandardNormal(D1), len(dims), D2)).to(DT)
    return model, mats, sigma


def _exact_log_marginal(model, mats, sigma, data, present):
    """log p(x_O) from the joint Gaussian of the stacked observed modalities."""
    out = []
    d = model.latent_dim
    for row in range(present.shape[0]):
        blocks, xs, bs = [], [], []
        for i, name in enumerate(model.names):
            if not present[row, i]:
                continue
            q, b = mats[name]
            a = torch.zeros(q.shape[0], d, dtype=DT)
            a[:, :D1] = q[:, :D1]
            a[:, D1 + i * D2: D1 + (i + 1) * D2] = q[:, D1:]
            blocks.append(a)
            xs.append(data[name][row])
            bs.append(b)
        a, x, b = torch.cat(blocks), torch.cat(xs), torch.cat(bs)
        cov = a @ a.T + sigma**2 * torch.eye(a.shape[0], dtype=DT)
        out.append(MultivariateNormal(b, cov).log_prob(x))
    return torch.stack(out)


@pytest.mark.parametrize("objective", [objectives.ELBO, objectives.MaskedBound], ids=lambda c: c.__name__)
def test_bounds_equal_log_marginal_at_the_exact_posterior(objective):
    """With exact encoders every single-sample estimate log p(x, z) − log q(z | x) is log p(x) exactly."""
    torch.manual_seed(7)
    model, mats, sigma = _exact_linear_gaussian()
    data, present = data_and_present(dims=(5, 6, 7))
    exact = _exact_log_marginal(model, mats, sigma, data, present)
    out = objective(num_samples=3)(model, pimvae.Batch(data, present))
    torch.testing.assert_close(out.terms["bound"], exact, rtol=1e-9, atol=1e-9)
    # and the importance-sampled estimator agrees (exact proposal: zero variance)
    from pimvae.evaluation import log_likelihood

    ll = log_likelihood(model, pimvae.Batch(data, present), num_particles=4, seed=0)
    torch.testing.assert_close(ll, exact, rtol=1e-9, atol=1e-9)


def test_linear_gaussian_reference_reads_private_decoders():
    """``LinearGaussian.from_model`` places decoder s's weight in the columns of (z', z̃_s): its exact log p(x_O) is
    the joint Gaussian's, and the exact encoders are at KL 0 from its posterior for every subset."""
    from pimvae.evaluation import exact_log_likelihood, posterior_kl
    from pimvae.evaluation.linear_gaussian import LinearGaussian

    model, mats, sigma = _exact_linear_gaussian()
    data, present = data_and_present(dims=(5, 6, 7))
    batch = pimvae.Batch(data, present)
    exact = _exact_log_marginal(model, mats, sigma, data, present)
    torch.testing.assert_close(exact_log_likelihood(model, batch), exact, rtol=1e-10, atol=1e-10)
    truth = LinearGaussian.from_model(model)
    assert truth.latent_dim == D1 + 3 * D2
    assert truth.W["x1"][:, D1: D1 + D2].abs().max() == 0 and truth.W["x1"][:, D1 + 2 * D2:].abs().max() == 0
    full = {n: x for n, x in data.items()}
    for subset in (None, ["x0"], ["x1", "x2"]):
        kl = posterior_kl(model, pimvae.Batch(full, torch.ones_like(present)), subset, num_samples=16)
        assert kl.abs().max() < 1e-9, (subset, kl)


def test_linear_gaussian_reference_needs_both_private_parts():
    model, _, _ = _exact_linear_gaussian()
    from pimvae.evaluation.linear_gaussian import LinearGaussian

    model.prior = priors.StandardNormal(model.latent_dim).to(DT)
    with pytest.raises(ValueError, match="WithPrivate aggregator and a PrivatePrior"):
        LinearGaussian.from_model(model)


# ---------------------------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("shared_cls", [aggregators.MoPoE, aggregators.SelfAttention], ids=lambda c: c.__name__)
def test_save_load_round_trip(tmp_path, shared_cls, kind):
    model = private_model(shared_cls, kind, prior="mixture")
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["aggregator"]["type"] == "with_private" and config["aggregator"]["num_modalities"] == M
    assert config["aggregator"]["private"]["type"] == kind
    assert config["prior"] == {"type": "private", "num_modalities": M, "private_dim": D2,
                               "shared": {"type": "gaussian_mixture", **model.prior.shared.config()}}
    loaded = pimvae.MultimodalVAE.load(tmp_path / "m")
    sa, sb = model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)
    assert type(loaded.aggregator.private) is type(model.aggregator.private)
    assert type(loaded.aggregator.shared) is shared_cls
    data, present = data_and_present()
    batch = pimvae.Batch(data, present)
    torch.manual_seed(3)
    a = model.encode(batch, SUBSET).sample((4,))
    torch.manual_seed(3)
    b = loaded.encode(batch, SUBSET).sample((4,))
    assert torch.equal(a, b)
    z = torch.randn(4, 6, model.latent_dim, dtype=DT)
    assert torch.equal(model.encode(batch).log_prob(z), loaded.encode(batch).log_prob(z))
    assert torch.equal(model.prior().log_prob(z), loaded.prior().log_prob(z))
    assert torch.equal(model.log_likelihoods(z, data, present), loaded.log_likelihoods(z, data, present))


def test_load_custom_private_encoder_by_path(tmp_path):
    class MyPrivate(IndependentPrivate):
        pass

    model = private_model()
    model.aggregator = WithPrivate(model.aggregator.shared, MyPrivate(E, D2), M).to(DT)
    model.save(tmp_path)
    with pytest.raises(ValueError, match="aggregator.private"):
        pimvae.MultimodalVAE.load(tmp_path)
    loaded = pimvae.MultimodalVAE.load(tmp_path, modules={"aggregator.private": MyPrivate(E, D2)})
    assert torch.equal(loaded.aggregator.private.head.weight, model.aggregator.private.head.weight)


def test_importance_sampled_log_likelihood_is_reproducible_and_chunk_independent():
    """Evaluation draws private-latent posteriors from per-data-point noise: same seed, any chunking → same numbers."""
    from pimvae import evaluation as ev

    torch.manual_seed(0)
    model = private_model(aggregators.SumPooling, "sum_pooling")
    data, present = data_and_present()
    batch = pimvae.Batch(data, present)
    a = ev.log_likelihood(model, batch, num_particles=16, chunk_size=16, seed=3, batch_size=6)
    b = ev.log_likelihood(model, batch, num_particles=16, chunk_size=5, seed=3, batch_size=2)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
