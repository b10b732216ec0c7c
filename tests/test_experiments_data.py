"""Synthetic data generators of the paper's experiments (SPEC §7.1–7.3): seeds, shapes, checkable statistics."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from pimvae.data.synthetic import (
    LatentMixture,
    LeakyReLUMLP,
    NonlinearTruth,
    bimodal_label,
    drop_probability,
    five_modal,
    linear_gaussian,
    mixing_matrix,
)
from pimvae.experiments._oracle import oracle_log_likelihood, oracle_posterior
from pimvae.experiments.base import mcc_first_canonical, oracle_reference


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small models on a shared CPU: one intra-op thread is faster than two (no spin-waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_linear_dense_is_seeded_orthonormal_and_matches_its_moments():
    a, b = linear_gaussian(n=4000, seed=3), linear_gaussian(n=4000, seed=3)
    assert all(a.data[k].equal(b.data[k]) for k in a.data) and a.z.equal(b.z)
    assert not linear_gaussian(n=4000, seed=4).data["x0"][:5].equal(a.data["x0"][:5])
    assert a.truth.names == [f"x{i}" for i in range(5)]
    for name, w in a.truth.W.items():
        assert 30 <= w.shape[0] <= 60 and w.shape[1] == 30
        torch.testing.assert_close(w.double().T @ w.double(), torch.eye(30, dtype=torch.float64), atol=1e-5, rtol=0)
        # x_s = W_s z + b_s + ε: the sample mean is b_s, the residual has unit variance
        x = a.data[name].double()
        assert (x.mean(0) - a.truth.b[name].double()).abs().max() < 4 * math.sqrt(2 / 4000) * 4
        resid = x - a.z.double() @ w.double().T - a.truth.b[name].double()
        assert abs(resid.var().item() - 1.0) < 0.02
    ds = a.dataset
    assert ds.extras["z"].shape == (4000, 30) and ds.present.all()
    # parameters do not depend on n
    assert linear_gaussian(n=10, seed=3).truth.W["x2"].equal(a.truth.W["x2"])


def test_linear_sparse_layout_shared_plus_private_blocks():
    lg = linear_gaussian(n=10, sparse=True, seed=1)
    for i, (name, w) in enumerate(lg.truth.W.items()):
        used = (w.abs() > 0).any(0)
        expected = torch.zeros(30, dtype=torch.bool)
        expected[:5] = True  # shared
        expected[5 + 5 * i: 10 + 5 * i] = True  # private to modality i
        assert used.equal(expected)
        block = w[:, expected].double()
        torch.testing.assert_close(block.T @ block, torch.eye(10, dtype=torch.float64), atol=1e-5, rtol=0)


def test_bimodal_label_balanced_labels_cluster_statistics_and_noise():
    ds, truth = bimodal_label(n=4000, seed=2, return_truth=True)
    assert ds.names == ["x", "label"] and ds.data["x"].shape == (4000, 2) and ds.data["label"].dtype == torch.long
    assert ds.data["label"].bincount().tolist() == [800] * 5  # uniform labels, exactly balanced
    assert ds.extras["label"].equal(ds.data["label"]) and ds.extras["z"].shape == (4000, 2)
    lat = truth.latent
    assert lat.loc.min() >= -5 and lat.loc.max() <= 5 and lat.scale.min() >= 0.5 and lat.scale.max() <= 3
    z, lab = ds.extras["z"].double(), ds.data["label"]
    for c in range(5):
        zc = z[lab == c]
        assert ((zc.mean(0) - lat.loc[c]).abs() < 4 * lat.scale[c] / math.sqrt(800)).all()
        assert ((zc.std(0) / lat.scale[c] - 1).abs() < 0.12).all()
    f = truth.maps["x"]
    for w in f.weights:  # orthogonal weights (the reference code's), so f is injective
        torch.testing.assert_close(w.T @ w, torch.eye(2, dtype=torch.float64), atol=1e-10, rtol=0)
    resid = ds.data["x"].double() - f(z)
    assert abs(resid.std().item() - 0.1) < 0.005
    again = bimodal_label(n=4000, seed=2)
    assert again.data["x"].equal(ds.data["x"])
    # shuffled before any split: the labels are not sorted
    assert (lab[1:] != lab[:-1]).float().mean() > 0.6


def _grid_log_likelihood(truth, x, label, grid=401):
    """log p(x, label) of the bi-modal model by a Riemann sum over a 2-d grid covering every cluster's ±8σ box."""
    lat, f = truth.latent, truth.maps["x"]
    lo, hi = (lat.loc - 8 * lat.scale).min(0).values, (lat.loc + 8 * lat.scale).max(0).values
    axes = [torch.linspace(float(lo[i]), float(hi[i]), grid, dtype=torch.float64) for i in range(2)]
    cell = math.log(float((axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])))
    z = torch.cartesian_prod(*axes)
    log_comp = Normal(lat.loc[:, None, :], lat.scale[:, None, :]).log_prob(z[None]).sum(-1)  # (K, G)
    lx = Normal(f(z)[None], truth.noise).log_prob(x.double()[:, None]).sum(-1)  # (N, G)
    return torch.logsumexp(lx + log_comp[label], -1) - math.log(lat.num_clusters) + cell


def test_oracle_log_likelihood_of_the_bimodal_model_agrees_with_a_grid_integral():
    ds, truth = bimodal_label(n=40, seed=0, return_truth=True)
    exact = _grid_log_likelihood(truth, ds.data["x"], ds.data["label"])
    est = oracle_log_likelihood(truth, ds, num_particles=4096, label="label")
    torch.testing.assert_close(est, exact, atol=0.08, rtol=0)  # Monte Carlo noise per point
    assert abs(float((est - exact).mean())) < 0.01  # and no bias on the mean the experiment reports
    # without the label, the latent's prior is the cluster mixture: log p(x) ≥ log p(x, c) (up to MC noise)
    assert float((oracle_log_likelihood(truth, ds, num_particles=4096) - est).mean()) > -0.01


def test_oracle_posterior_mean_of_the_bimodal_model_agrees_with_a_grid_integral():
    ds, truth = bimodal_label(n=40, seed=1, return_truth=True)
    lat, f = truth.latent, truth.maps["x"]
    lo, hi = (lat.loc - 8 * lat.scale).min(0).values, (lat.loc + 8 * lat.scale).max(0).values
    axes = [torch.linspace(float(lo[i]), float(hi[i]), 801, dtype=torch.float64) for i in range(2)]
    z = torch.cartesian_prod(*axes)
    label = ds.data["label"]
    log_joint = (Normal(lat.loc[label][:, None], lat.scale[label][:, None]).log_prob(z[None]).sum(-1)
                 + Normal(f(z)[None], truth.noise).log_prob(ds.data["x"].double()[:, None]).sum(-1))  # (N, G)
    exact = torch.softmax(log_joint, -1) @ z  # E[z | x, c] by quadrature
    llh, mean, draw = oracle_posterior(truth, ds, num_particles=4096, label="label")
    torch.testing.assert_close(mean, exact, atol=0.05, rtol=0)  # Monte Carlo noise per point (posterior σ up to ~1)
    assert float((mean - exact).abs().mean()) < 0.01
    torch.testing.assert_close(llh, oracle_log_likelihood(truth, ds, num_particles=4096, label="label"))
    # a draw is one particle per point: near its posterior (σ ≤ 3 along any axis), not equal to the mean
    assert draw.shape == mean.shape and not draw.equal(mean)
    assert float((draw - exact).norm(dim=-1).median()) < 1.0


def test_oracle_reference_mcc_is_a_ceiling_the_posterior_mean_reaches():
    """E[z | x] correlates with z at least as well as a noisy copy of itself does (the ceiling's defining property)."""
    ds, truth = bimodal_label(n=2000, seed=0, return_truth=True)
    ref = oracle_reference(truth, ds, num_particles=1024, seed=0, label="label")
    assert 0.95 < ref["mcc_cca1_truth"] < 0.999  # flat sides of f amplify the noise 0.1 to ~1 in z
    _, mean, draw = oracle_posterior(truth, ds, num_particles=1024, seed=0, label="label")
    z = ds.extras["z"]
    assert mcc_first_canonical(z, draw) < ref["mcc_cca1_truth"]
    assert abs(mcc_first_canonical(z, mean) - ref["mcc_cca1_truth"]) < 1e-12


def test_mixing_matrix_is_column_normalised_and_well_conditioned():
    g = torch.Generator().manual_seed(0)
    a = mixing_matrix(25, 10, g)
    torch.testing.assert_close(a.norm(dim=0), torch.ones(10, dtype=torch.float64))
    # the condition number lies below the 25% quantile of such matrices
    ref = torch.rand(2000, 25, 10, generator=g, dtype=torch.float64) * 2 - 1
    ref = ref / ref.norm(dim=-2, keepdim=True)
    assert torch.linalg.cond(a) <= torch.quantile(torch.linalg.cond(ref), 0.3)
    with pytest.raises(ValueError, match="rows ≥ cols"):
        mixing_matrix(3, 5, g)


def test_five_modal_maps_are_injective_and_well_conditioned():
    ds, truth = five_modal(n=2000, seed=1, return_truth=True)
    assert ds.names == [f"x{i}" for i in range(5)] and all(x.shape == (2000, 25) for x in ds.data.values())
    assert ds.extras["z"].shape == (2000, 10) and ds.extras["label"].bincount().tolist() == [400] * 5
    z = ds.extras["z"].double()
    for name, f in truth.maps.items():
        assert [tuple(w.shape) for w in f.weights] == [(25, 10), (25, 25), (25, 25)]
        jac = f.jacobian(z[:200])  # (200, 25, 10): full column rank everywhere, moderate condition number
        sv = torch.linalg.svdvals(jac)
        assert sv.min() > 1e-3 and (sv[:, 0] / sv[:, -1]).max() < 200
        # the Jacobian is exact (f is piecewise linear): finite differences agree
        dz = 1e-6 * torch.randn(200, 10, dtype=torch.float64)
        torch.testing.assert_close(f(z[:200] + dz) - f(z[:200]), (jac @ dz[..., None])[..., 0], atol=1e-9, rtol=1e-4)
        resid = ds.data[name].double() - f(z)
        assert abs(resid.std().item() - 0.5) < 0.01


def test_five_modal_missing_rate_is_realised_and_every_point_keeps_one():
    p = drop_probability(0.5, 5)
    assert abs(p - p**5 / 5 - 0.5) < 1e-12
    ds = five_modal(n=3000, missing_rate=0.5, seed=0)
    assert ds.present.any(-1).all()
    assert abs(1 - ds.present.double().mean().item() - 0.5) < 0.015
    full = five_modal(n=3000, seed=0)
    assert full.present.all() and full.data["x3"].equal(ds.data["x3"])  # same data, only the mask differs
    assert five_modal(n=3000, missing_rate=0.5, seed=0).present.equal(ds.present)
    with pytest.raises(ValueError, match="missing rate"):
        drop_probability(0.9, 5)


def test_oracle_log_likelihood_is_exact_for_a_linear_single_cluster_model():
    # one cluster and one linear layer: p(x_O) is Gaussian in closed form
    g = torch.Generator().manual_seed(0)
    latent = LatentMixture(torch.tensor([[0.5, -1.0]], dtype=torch.float64), torch.tensor([[1.5, 0.7]], dtype=torch.float64))
    maps = {n: LeakyReLUMLP([mixing_matrix(4, 2, g)]) for n in ("a", "b")}
    truth = NonlinearTruth(latent, maps, 0.3)
    from pimvae.data import MultimodalDataset

    z = latent.sample(torch.zeros(50, dtype=torch.long), g)
    data = {n: f(z) + 0.3 * torch.randn(50, 4, generator=g, dtype=torch.float64) for n, f in maps.items()}
    present = torch.ones(50, 2, dtype=torch.bool)
    present[:20, 1] = False
    ds = MultimodalDataset(data, present, {"z": z})
    est = oracle_log_likelihood(truth, ds, num_particles=2048)
    cov_z = torch.diag(latent.scale[0] ** 2)
    w = torch.cat([maps["a"].weights[0], maps["b"].weights[0]])
    mean = w @ latent.loc[0]
    cov = w @ cov_z @ w.T + 0.09 * torch.eye(8, dtype=torch.float64)
    x = torch.cat([data["a"], data["b"]], -1)
    exact = MultivariateNormal(mean, cov).log_prob(x)
    exact_a = MultivariateNormal(mean[:4], cov[:4, :4]).log_prob(data["a"])
    exact = torch.where(present[:, 1], exact, exact_a)
    torch.testing.assert_close(est, exact, atol=0.04, rtol=0)
