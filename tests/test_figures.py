"""Figures are real pictures, and write_report writes numbers that match the closed forms."""

import json

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch import nn

import pimvae
from helpers import exact_poe_model
from pimvae import aggregators, evaluation, likelihoods, objectives, priors
from pimvae.data import MultimodalDataset, linear_gaussian
from pimvae.evaluation import figures


def has_colour(cols, rgb, alphas=(0.7, 0.91, 1.0)):
    """Some pixel shows ``rgb`` (0–1) drawn with one of ``alphas`` over white (one or more overlapping markers)."""
    for a in alphas:
        target = (a * np.asarray(rgb) + (1 - a)) * 255
        if (np.abs(cols - target).max(1) <= 3).any():
            return True
    return False


TAB10 = [(0.122, 0.467, 0.706), (1.0, 0.498, 0.055), (0.173, 0.627, 0.173), (0.839, 0.153, 0.157)]


def colours(path):
    img = imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    return np.unique((img[..., :3] * 255).round().reshape(-1, 3), axis=0)


def test_latent_scatter_draws_one_colour_per_label(tmp_path):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    z = torch.randn(300, 4, generator=g) + 3 * y[:, None]
    path = figures.latent_scatter({"true": z, "inferred": -z}, tmp_path / "sub" / "latents.png", labels=y)
    cols = colours(path)
    assert all(has_colour(cols, c) for c in TAB10[:3])  # one colour per label
    assert not has_colour(cols, TAB10[3])  # and no fourth


def test_panel_titles_are_wrapped_at_spaces_not_clipped():
    long = "Our bound, SelfAttentionMixture, mixture prior"
    lines = figures.panel_title(long).split("\n")
    assert lines == ["Our bound, SelfAttentionMixture,", "mixture prior"]
    assert all(len(line) <= figures.PANEL_TITLE_CHARS for line in lines)
    assert figures.panel_title("true z, seed 0") == "true z, seed 0"  # short titles unchanged
    word = "x" * 50  # a word longer than a line is kept whole
    assert figures.panel_title(f"a {word} b") == f"a\n{word}\nb"


def test_rate_distortion_bars_have_a_colour_per_aggregator_and_bound(tmp_path):
    records = []
    for agg, h in [("PoE", 1.0), ("SumPooling", 2.0)]:
        for obj in ("masked", "mixture"):
            for subset in ("x0", "x1", "x0+x1"):
                records.append({"aggregator": agg, "objective": obj, "subset": subset, "R_S": h, "D_S": 3 * h,
                                "R_not_S": 0.5 * h, "Dc_not_S": h + (obj == "mixture")})
    path = figures.rate_distortion_bars(records, tmp_path / "rd.png")
    cols = colours(path)
    assert all(has_colour(cols, c, alphas=(1.0,)) for c in TAB10)  # four hue groups → four tab10 colours
    with pytest.raises(ValueError, match="no records"):
        figures.rate_distortion_bars([], tmp_path / "x.png")


def test_rate_distortion_bars_keep_twelve_groups_apart(tmp_path):
    """Figure 5 has 2 aggregators × 2 bounds × 3 β: twelve bar colours, none reused (tab10 has only ten)."""
    from matplotlib import colormaps

    records = [{"aggregator": agg, "objective": obj, "β": beta, "subset": subset, "R_S": 1.0, "D_S": 2.0}
               for agg in ("PoE", "SumPooling") for obj in ("masked", "mixture") for beta in (0.1, 1.0, 4.0)
               for subset in ("x0", "x0+x1")]
    path = figures.rate_distortion_bars(records, tmp_path / "rd.png", hue=("aggregator", "objective", "β"))
    cols = colours(path)
    tab20 = [colormaps["tab20"](i)[:3] for i in range(12)]
    assert all(has_colour(cols, c, alphas=(1.0,)) for c in tab20)
    assert len({tuple(np.round(c, 3)) for c in tab20}) == 12


def test_validation_curves_draw_a_line_per_run_and_zoom_past_the_early_climb(tmp_path, monkeypatch):
    steps = np.arange(1, 41) * 100
    climb = -100 * np.exp(-steps / 300.0) - 60  # from −132 at step 100 to −60
    curves = {"PoE": (steps, climb, 2000), "MoE": (steps[:20], climb[:20] - 5, None)}
    path = figures.validation_curves(curves, tmp_path / "v.png", title="five-modal")
    cols = colours(path)
    assert has_colour(cols, TAB10[0], alphas=(1.0,)) and has_colour(cols, TAB10[1], alphas=(1.0,))
    assert not has_colour(cols, TAB10[2], alphas=(1.0,))
    # the axis is cut at the lowest value of the curves' last three quarters, not at the first validations
    from matplotlib.figure import Figure

    ylim, orig = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: ylim.append(self.axes[0].get_ylim()) or orig(self, *a, **k))
    figures.validation_curves(curves, tmp_path / "w.png")
    low = min(climb[10:].min(), (climb[:20] - 5)[5:].min())
    assert ylim[0][0] == pytest.approx(low - 0.05 * (-60 - low))
    with pytest.raises(ValueError, match="no curves"):
        figures.validation_curves({"x": ([], [], None)}, tmp_path / "x.png")


def test_image_grid_shows_the_images(tmp_path):
    ramp = torch.linspace(0, 1, 64).view(1, 1, 8, 8).expand(4, 1, 8, 8)
    path = figures.image_grid({"data": ramp, "noise": torch.rand(4, 64)}, tmp_path / "grid.png")
    img = imread(str(path))[..., :3]
    assert len(colours(path)) > 20  # grey levels of the ramp and the noise
    assert img.std() > 0.05


def image_model():
    """Two modalities: 6×6 images (Normal) and a 3-class label; SumPooling encoder, mixture prior."""
    e, d = 8, 2
    mods = {
        "img": pimvae.Modality(nn.Sequential(nn.Flatten(), nn.Linear(36, e)), nn.Sequential(nn.Linear(d, 36), nn.Unflatten(1, (1, 6, 6))),
                               likelihoods.Normal(scale=0.5), shape=(1, 6, 6)),
        "label": pimvae.Modality(nn.Embedding(3, e), nn.Linear(d, 3), likelihoods.Categorical()),
    }
    agg = aggregators.SumPooling(e, d, embed_dim=8, chi_hidden=(8,), rho_hidden=(8,))
    return pimvae.MultimodalVAE(mods, agg, priors.GaussianMixture(d, 3))


def test_write_report_for_images_labels_and_missing_data(tmp_path):
    torch.manual_seed(0)
    n = 60
    y = torch.randint(0, 3, (n,))
    img = torch.rand(n, 1, 6, 6) * 0.3 + y.view(-1, 1, 1, 1) * 0.3
    present = torch.ones(n, 2, dtype=torch.bool)
    present[::4, 1] = False
    ds = MultimodalDataset({"img": img, "label": y}, present, extras={"label": y})
    out = evaluation.write_report(image_model(), ds, tmp_path, objective=objectives.MaskedBound(), num_particles=8,
                                  num_samples=4, num_draws=2, classifiers={"label": lambda x: nn.functional.one_hot(x, 3)})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == out
    assert set(out["log_likelihood"]) == {"observed", "img", "label", "img+label"}
    assert out["log_likelihood"]["label"] == pytest.approx(np.log(1 / 3), abs=1.0)  # an untrained categorical
    assert 0 <= out["cluster_accuracy"] <= 1 and "coherence" in out and "linear_gaussian" not in out
    # self-coherence of the label through a one-hot "classifier" is the decoder's accuracy on its own input
    assert "label->label" in out["coherence"]
    assert len(colours(tmp_path / "images_img.png")) > 10
    assert "| subset |" in (tmp_path / "metrics.md").read_text()


def test_write_report_on_the_exact_linear_gaussian_model(tmp_path):
    lg = linear_gaussian(n=300, num_modalities=3, latent_dim=4, dim_range=(5, 8), seed=3, dtype=torch.float64)
    ds = MultimodalDataset(lg.data, extras={"z": lg.z})
    model = exact_poe_model(lg.truth)
    out = evaluation.write_report(model, ds, tmp_path, objective=objectives.MaskedBound(), num_particles=16,
                                  num_samples=16, num_draws=2, subsets=[["x0"], ["x1", "x2"]])
    exact = lg.truth.log_likelihood(lg.data)
    assert out["log_likelihood"]["observed"] == pytest.approx(exact.mean().item(), abs=1e-6)
    assert out["log_likelihood"]["x1+x2"] == pytest.approx(lg.truth.log_likelihood(lg.data, ["x1", "x2"]).mean().item(), abs=1e-6)
    lin = out["linear_gaussian"]
    assert lin["bound_gap"] == pytest.approx(lin["llh_gap"], abs=1e-9) and lin["llh_gap"] >= 0
    assert lin["exact_log_likelihood"]["observed"] == pytest.approx(exact.mean().item())
    for rec in out["rates_distortions"]:
        assert abs(rec["kl_posterior"]) < 1e-8  # the encoder is the exact posterior
        assert -(rec["D_S"] + rec["R_S"]) == pytest.approx(rec["log_likelihood"], abs=0.1)
    assert out["mcc"]["strong"] == pytest.approx((1 - 1 / 4) ** 0.5, abs=0.05)
    md = (tmp_path / "metrics.md").read_text()
    assert "llh_gap" in md and "![rates](rates_distortions.png)" in md
    assert len(colours(tmp_path / "rates_distortions.png")) > 5
