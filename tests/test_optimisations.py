"""Performance rewrites compute exactly what the straightforward computation does (numbers, not times)."""

import pytest
import torch

from helpers import ALL_AGGREGATORS, make_aggregator
from pimvae import aggregators

B, M, E, D = 6, 4, 6, 3


@pytest.mark.parametrize("cls", ALL_AGGREGATORS, ids=lambda c: c.__name__)
def test_pool_many_equals_pooling_each_subset(cls):
    torch.manual_seed(1)
    _check_pool_many(make_aggregator(cls, E, D).double())


@pytest.mark.parametrize("num_blocks", [2, 3])
def test_pool_many_equals_pooling_each_subset_deeper_attention(num_blocks):
    torch.manual_seed(1)
    agg = aggregators.SelfAttention(E, D, embed_dim=16, chi_hidden=(16,), rho_hidden=(16,), num_heads=2, ff_dim=16,
                                    num_blocks=num_blocks, zero_init_blocks=False)
    _check_pool_many(agg.double())


def _check_pool_many(agg):
    g_ = torch.Generator().manual_seed(0)
    h = torch.randn(B, M, E, generator=g_, dtype=torch.float64).requires_grad_()
    present = torch.rand(B, M, generator=g_) < 0.8
    present[0] = True
    subset = present & (torch.rand(B, M, generator=g_) < 0.5)
    subset[1] = False
    z = torch.randn(B, D, generator=g_, dtype=torch.float64)

    def grads(dists):
        agg.zero_grad()
        h.grad = None
        lp = torch.stack([q.log_prob(z) for q in dists])
        lp.sum().backward()
        # the features' gradient too: shared work must not leak S's gradient into modalities outside S
        return lp.detach(), [p.grad.clone() for p in agg.parameters() if p.grad is not None] + [h.grad.clone()]

    g = agg.embed(h, present)
    lp_many, grad_many = grads(agg.pool_many(g, [subset, present]))
    g = agg.embed(h, present)
    lp_each, grad_each = grads([agg.pool(g, subset), agg.pool(g, present)])
    torch.testing.assert_close(lp_many, lp_each, rtol=1e-12, atol=1e-12)
    for a, b in zip(grad_many, grad_each):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_mixture_log_prob_equals_torch_mixture_same_family():
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    from pimvae.distributions import diag_normal_mixture

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, 5, generator=g, dtype=torch.float64)
    logits[0, 1:] = -float("inf")  # components switched off, as MoE/MoPoE do
    loc = torch.randn(B, 5, D, generator=g, dtype=torch.float64).requires_grad_()
    scale = (0.1 + torch.rand(B, 5, D, generator=g, dtype=torch.float64)).requires_grad_()
    z = torch.randn(7, B, D, generator=g, dtype=torch.float64).requires_grad_()

    def run(q):
        lp = q.log_prob(z)
        grads = torch.autograd.grad(lp.sum(), (loc, scale, z))
        return lp.detach(), grads

    ours = run(diag_normal_mixture(logits, loc, scale))
    ref = run(MixtureSameFamily(Categorical(logits=logits), Independent(Normal(loc, scale), 1)))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_blocks", [1, 2])
@pytest.mark.parametrize("cls", [aggregators.SelfAttention, aggregators.SelfAttentionMixture], ids=lambda c: c.__name__)
def test_self_attention_pooling_before_last_layer_is_exact(cls, num_blocks):
    # pool() applies the last block's final feed-forward layer after the masked sum; the straightforward
    # computation pools the blocks' full outputs.
    from pimvae.nn import masked_sum

    torch.manual_seed(1)
    agg = cls(E, D, embed_dim=8, chi_hidden=(8,), rho_hidden=(8,), num_heads=2, ff_dim=12, num_blocks=num_blocks,
              zero_init_blocks=False).double()
    g_ = torch.Generator().manual_seed(0)
    h = torch.randn(B, M, E, generator=g_, dtype=torch.float64)
    subset = torch.rand(B, M, generator=g_) < 0.5
    subset[0], subset[1] = False, True
    z = torch.randn(B, D, generator=g_, dtype=torch.float64)

    def run(pool):
        agg.zero_grad()
        lp = pool(agg.embed(h, subset), subset).log_prob(z)
        lp.sum().backward()
        return lp.detach(), [p.grad.clone() for p in agg.parameters()]

    ours = run(agg.pool)
    ref = run(lambda g, s: agg._head(masked_sum(agg.mix(g, s), s)))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_attention_block_compact_pooling_equals_dense():
    # On CPU the last block gathers the slots in S (data-dependent size); accelerators and torch.compile use the
    # dense path. Both must give the same numbers, empty and full subsets included.
    from pimvae.aggregators.learned import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(8, 2, 12).double()
    g_ = torch.Generator().manual_seed(0)
    g = torch.randn(B, M, 8, generator=g_, dtype=torch.float64, requires_grad=True)
    subset = torch.rand(B, M, generator=g_) < 0.5
    subset[0], subset[1] = False, True
    w = torch.randn(B, 8, generator=g_, dtype=torch.float64)

    def run(compact):
        block.zero_grad()
        out = block.pooled(g, subset, compact=compact)
        grads = torch.autograd.grad((out * w).sum(), [g, *block.parameters()])
        return out.detach(), grads

    torch.testing.assert_close(run(True), run(False), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [aggregators.SumPooling, aggregators.SumPoolingMixture], ids=lambda c: c.__name__)
def test_sum_pooling_equals_deep_sets_formula(cls):
    """χ's last layer applied after the sum gives ρ(Σ_{s∈S} χ(h_s)) exactly, in values and gradients."""
    torch.manual_seed(0)
    agg = make_aggregator(cls, E, D).double()
    g_ = torch.Generator().manual_seed(3)
    h = torch.randn(B, M, E, generator=g_, dtype=torch.float64).requires_grad_()
    subset = torch.rand(B, M, generator=g_) < 0.5
    subset[0] = False  # the empty set: ρ(0)
    z = torch.randn(B, D, generator=g_, dtype=torch.float64)

    def run(dist_fn):
        agg.zero_grad()
        h.grad = None
        lp = dist_fn().log_prob(z)
        lp.sum().backward()
        return lp.detach(), [p.grad.clone() for p in agg.parameters()] + [h.grad.clone()]

    def formula():
        chi = agg.chi(torch.where(subset[..., None], h, 0.0))
        return agg._head((chi * subset[..., None]).sum(1))

    torch.testing.assert_close(run(lambda: agg.pool(agg.embed(h, subset), subset)), run(formula),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [aggregators.SumPooling, aggregators.SumPoolingMixture], ids=lambda c: c.__name__)
def test_sum_pooling_many_equals_one_subset_at_a_time(cls):
    """``pool_many`` (one batched product for the masked sums of S and O) gives each subset's ``pool`` exactly,
    gradients included, with garbage in the absent slots of the data."""
    torch.manual_seed(0)
    agg = make_aggregator(cls, E, D).double()
    g_ = torch.Generator().manual_seed(4)
    present = torch.rand(B, M, generator=g_) < 0.8
    present[0] = False
    h = torch.randn(B, M, E, generator=g_, dtype=torch.float64)
    h = torch.where(present[..., None], h, float("nan")).requires_grad_()
    subset = present & (torch.rand(B, M, generator=g_) < 0.5)
    z = torch.randn(2, B, D, generator=g_, dtype=torch.float64)

    def run(together):
        agg.zero_grad()
        h.grad = None
        g = agg.embed(h, present)
        qs = agg.pool_many(g, [subset, present]) if together else [agg.pool(g, s) for s in (subset, present)]
        lp = torch.stack([q.log_prob(zi) for q, zi in zip(qs, z)])
        lp.sum().backward()
        return lp.detach(), [p.grad.clone() for p in agg.parameters()] + [h.grad.clone()]

    together, apart = run(True), run(False)
    torch.testing.assert_close(together, apart, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(together[0]).all() and (together[1][-1][~present] == 0).all()


@pytest.mark.parametrize("m", [4, 20])  # shared scores, and the per-subset fused kernel past 16 slots
def test_attention_many_equals_attention_per_subset(m):
    from pimvae.aggregators.learned import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(8, 2, 8).double()
    g_ = torch.Generator().manual_seed(5)
    g = torch.randn(3, m, 8, generator=g_, dtype=torch.float64, requires_grad=True)
    subsets = [torch.rand(3, m, generator=g_) < 0.5 for _ in range(3)]
    subsets[0][0] = False  # an empty set attends everywhere (its outputs are discarded by the pooling)
    w = torch.randn(3, 3, m, 8, generator=g_, dtype=torch.float64)

    def run(attns):
        loss = sum((a * w[i]).sum() for i, a in enumerate(attns))
        return torch.stack(attns).detach(), torch.autograd.grad(loss, [g, *block.parameters()], allow_unused=True)

    many = run(block.attention_many(g, subsets))
    each = run([block.attention(g, s) for s in subsets])
    torch.testing.assert_close(many[0], each[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(many[1], each[1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
