"""Aggregator contract (one table, generic tests) and closed forms for the expert aggregators."""

import itertools
import math

import pytest
import torch
from torch.distributions import Normal

from helpers import ALL_AGGREGATORS, make_aggregator
from pimvae import aggregators
from pimvae.distributions import detach

B, M, E, D = 5, 4, 6, 3


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, M, E, generator=g, dtype=torch.float64)
    subset = torch.rand(B, M, generator=g) < 0.6
    subset[0] = False  # an empty subset
    subset[1] = True  # the full set
    return h, subset


@pytest.mark.parametrize("cls", ALL_AGGREGATORS, ids=lambda c: c.__name__)
class TestContract:
    def agg(self, cls):
        torch.manual_seed(1)
        return make_aggregator(cls, E, D).double()

    def test_shapes_and_sampling(self, cls):
        agg = self.agg(cls)
        h, subset = inputs()
        q = agg(h, subset)
        assert q.batch_shape == (B,) and q.event_shape == (D,)
        z = q.rsample((7,))
        assert z.shape == (7, B, D) and z.requires_grad
        assert torch.isfinite(q.log_prob(z)).all()
        qd = detach(q)
        assert not qd.log_prob(z.detach()).requires_grad
        assert torch.allclose(qd.log_prob(z), q.log_prob(z))

    def test_permutation_invariance(self, cls):
        agg = self.agg(cls)
        h, subset = inputs()
        z = torch.randn(B, D, dtype=torch.float64)
        ref = agg(h, subset).log_prob(z)
        for perm in ([3, 2, 1, 0], [1, 3, 0, 2]):
            out = agg(h[:, perm], subset[:, perm]).log_prob(z)
            torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)

    @pytest.mark.parametrize("garbage", [float("nan"), 1e6, -float("inf")])
    def test_absent_slots_change_nothing(self, cls, garbage):
        agg = self.agg(cls)
        h, subset = inputs()
        z = torch.randn(B, D, dtype=torch.float64)

        def run(h):
            agg.zero_grad()
            h = h.clone().requires_grad_(True)
            lp = agg(h, subset).log_prob(z)
            lp.sum().backward()
            return lp.detach(), h.grad, [p.grad.clone() for p in agg.parameters() if p.grad is not None]

        lp0, hg0, g0 = run(h)
        lp1, hg1, g1 = run(torch.where(subset[..., None], h, garbage))
        torch.testing.assert_close(lp1, lp0, rtol=0, atol=0)
        torch.testing.assert_close(hg1, hg0, rtol=0, atol=0)
        assert (hg1[~subset] == 0).all()
        for a, b in zip(g0, g1):
            torch.testing.assert_close(a, b, rtol=0, atol=0)

    def test_empty_subset(self, cls):
        agg = self.agg(cls)
        h, _ = inputs()
        empty = torch.zeros(B, M, dtype=torch.bool)
        z = torch.randn(B, D, dtype=torch.float64)
        lp = agg(h, empty).log_prob(z)
        if cls in (aggregators.PoE, aggregators.MoE, aggregators.MoPoE):
            # the empty encoding is the prior N(0, I)
            torch.testing.assert_close(lp, Normal(0.0, 1.0).log_prob(z).sum(-1))
        else:
            # a learned empty encoding: the same for every data point, whatever the features
            lp_other = agg(torch.randn_like(h) * 10, empty).log_prob(z)
            torch.testing.assert_close(lp, lp_other)
            same_z = agg(h, empty).log_prob(z[:1].expand(B, D))
            torch.testing.assert_close(same_z, same_z[:1].expand(B))


def _experts(agg, h):
    loc, scale = agg.experts(h)
    return loc, scale


def test_poe_closed_form():
    torch.manual_seed(0)
    agg = aggregators.PoE(E, D).double()
    h, subset = inputs()
    loc, scale = _experts(agg, h)
    q = agg(h, subset)
    for b in range(B):
        prec = torch.ones(D, dtype=torch.float64)
        num = torch.zeros(D, dtype=torch.float64)
        for s in range(M):
            if subset[b, s]:
                prec = prec + scale[b, s] ** -2
                num = num + loc[b, s] * scale[b, s] ** -2
        torch.testing.assert_close(q.mean[b], num / prec)
        torch.testing.assert_close(q.variance[b], 1 / prec)


def test_poe_single_expert_is_product_with_prior():
    # N(m, s²) · N(0, 1) ∝ N(m/(1+s²), s²/(1+s²))
    agg = aggregators.PoE(2 * D, D, projection=False).double()
    m = torch.tensor([[0.5, -2.0, 3.0]], dtype=torch.float64)
    s = torch.tensor([[0.3, 1.0, 2.0]], dtype=torch.float64)
    raw = torch.log(torch.expm1(s - agg.min_scale))
    h = torch.cat([m, raw], -1)[:, None, :]
    q = agg(h, torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(q.mean, m / (1 + s**2))
    torch.testing.assert_close(q.variance, s**2 / (1 + s**2))


def _logmeanexp(x, dim=-1):
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def test_moe_log_prob_against_enumeration():
    torch.manual_seed(0)
    agg = aggregators.MoE(E, D).double()
    h, subset = inputs()
    z = torch.randn(B, D, dtype=torch.float64)
    loc, scale = _experts(agg, h)
    lp = agg(h, subset).log_prob(z)
    for b in range(B):
        members = [s for s in range(M) if subset[b, s]]
        if not members:
            ref = Normal(0.0, 1.0).log_prob(z[b]).sum()
        else:
            comps = torch.stack([Normal(loc[b, s], scale[b, s]).log_prob(z[b]).sum() for s in members])
            ref = _logmeanexp(comps, 0)
        torch.testing.assert_close(lp[b], ref)


def test_mopoe_log_prob_against_enumeration():
    torch.manual_seed(0)
    agg = aggregators.MoPoE(E, D).double()
    h, subset = inputs()
    z = torch.randn(B, D, dtype=torch.float64)
    loc, scale = _experts(agg, h)
    lp = agg(h, subset).log_prob(z)
    for b in range(B):
        members = [s for s in range(M) if subset[b, s]]
        comps = []
        for k in range(1, len(members) + 1):
            for t in itertools.combinations(members, k):
                prec = 1 + sum(scale[b, s] ** -2 for s in t)
                mean = sum(loc[b, s] * scale[b, s] ** -2 for s in t) / prec
                comps.append(Normal(mean, prec.rsqrt()).log_prob(z[b]).sum())
        ref = _logmeanexp(torch.stack(comps), 0) if comps else Normal(0.0, 1.0).log_prob(z[b]).sum()
        torch.testing.assert_close(lp[b], ref)


def test_mopoe_refuses_past_cap_and_subsamples_when_asked():
    h = torch.randn(2, 12, E, dtype=torch.float64)
    subset = torch.ones(2, 12, dtype=torch.bool)
    with pytest.raises(ValueError, match="max_modalities"):
        aggregators.MoPoE(E, D).double()(h, subset)
    agg = aggregators.MoPoE(E, D, num_subsets=8).double()
    q = agg(h, subset)
    assert q.batch_shape == (2,) and torch.isfinite(q.log_prob(torch.zeros(2, D, dtype=torch.float64))).all()
    # each sampled component is a non-empty subset of S: check on a row with a single observed modality
    one = torch.zeros(2, 12, dtype=torch.bool)
    one[:, 3] = True
    q1 = agg(h, one)
    loc, scale = _experts(agg, h)
    prec = 1 + scale[:, 3] ** -2
    torch.testing.assert_close(q1.component_distribution.mean[:, 0], loc[:, 3] * scale[:, 3] ** -2 / prec)


def test_self_attention_restricts_attention_to_subset():
    # Changing a modality's features outside S must not change anything; inside S it must.
    torch.manual_seed(0)
    agg = make_aggregator(aggregators.SelfAttention, E, D).double()
    h, _ = inputs()
    subset = torch.tensor([[True, True, False, False]] * B)
    z = torch.randn(B, D, dtype=torch.float64)
    ref = agg(h, subset).log_prob(z)
    h2 = h.clone()
    h2[:, 2] += 5.0
    torch.testing.assert_close(agg(h2, subset).log_prob(z), ref, rtol=0, atol=0)
    h3 = h.clone()
    h3[:, 1] += 5.0
    assert (agg(h3, subset).log_prob(z) - ref).abs().min() > 1e-6


@pytest.mark.parametrize("num_blocks", [1, 2])
def test_self_attention_starts_as_sum_pooling_and_learns_its_blocks(num_blocks):
    # Zero-initialised residual branches (the default): every block is the identity, so the aggregator equals
    # SumPooling with the same χ and ρ, for every subset; the branches still get gradients.
    torch.manual_seed(0)
    sa = aggregators.SelfAttention(E, D, embed_dim=16, chi_hidden=(16,), rho_hidden=(16,), num_heads=2, ff_dim=16,
                                   num_blocks=num_blocks).double()
    sp = aggregators.SumPooling(E, D, embed_dim=16, chi_hidden=(16,), rho_hidden=(16,)).double()
    sp.chi.load_state_dict(sa.chi.state_dict())
    sp.rho.load_state_dict(sa.rho.state_dict())
    h, subset = inputs()
    subset[0] = True  # SumPooling of an empty set is ρ(0); the blocks let an empty row attend everywhere
    q_sa, q_sp = sa(h, subset), sp(h, subset)
    torch.testing.assert_close(q_sa.mean, q_sp.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q_sa.stddev, q_sp.stddev, rtol=1e-12, atol=1e-12)
    z = torch.randn(B, D, dtype=torch.float64)
    q_sa.log_prob(z).sum().backward()
    last = sa.blocks[-1]
    assert last.out.weight.grad.abs().max() > 1e-6 and last.ff[-1].weight.grad.abs().max() > 1e-6
    assert sa.config()["zero_init_blocks"] is True
    random = aggregators.SelfAttention(E, D, embed_dim=16, chi_hidden=(16,), rho_hidden=(16,), num_heads=2,
                                       ff_dim=16, zero_init_blocks=False)
    assert random.blocks[0].out.weight.abs().max() > 0 and random.config()["zero_init_blocks"] is False


def test_lecun_init_keeps_zero_initialised_branches_at_zero():
    from pimvae.experiments.base import lecun_init, make_aggregator as paper_aggregator

    torch.manual_seed(0)
    agg = lecun_init(paper_aggregator("self_attention", 8, 3, 16))
    (block,) = agg.blocks
    for layer in (block.out, block.ff[-1]):
        assert layer.weight.abs().max() == 0 and layer.bias.abs().max() == 0
    assert block.qkv.weight.std() > 0.5 / 16 ** 0.5  # the other layers are re-initialised (std 1/√fan_in)


@pytest.mark.parametrize("cls", [aggregators.PoE, aggregators.MoE, aggregators.MoPoE], ids=lambda c: c.__name__)
def test_gradcheck_expert_formulas(cls):
    torch.manual_seed(0)
    agg = cls(E, D).double()
    _, subset = inputs()
    z = torch.randn(B, D, dtype=torch.float64)
    h = torch.randn(B, M, E, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: agg(h, subset).log_prob(z), (h,))
    zz = z.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda zz: agg(h.detach(), subset).log_prob(zz), (zz,))


def test_gradcheck_mixture_head():
    torch.manual_seed(0)
    agg = make_aggregator(aggregators.SumPoolingMixture, E, D).double()
    raw = torch.randn(B, 3 * (2 * D + 1), dtype=torch.float64, requires_grad=True)
    z = torch.randn(B, D, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda r: agg.mixture_from_raw(r, 3).log_prob(z), (raw,))


def test_bad_inputs():
    agg = aggregators.PoE(E, D)
    with pytest.raises(ValueError, match="shape"):
        agg(torch.randn(B, E), torch.ones(B, M, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        agg(torch.randn(B, M, E), torch.ones(B, M))
    with pytest.raises(ValueError, match="subset has shape"):
        agg(torch.randn(B, M, E), torch.ones(B, M + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="feature_dim"):
        aggregators.PoE(5, D, projection=False)
