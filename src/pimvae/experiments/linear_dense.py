"""Linear Gaussian model with dense decoders — the paper's Table 1 and Figure 3 (SPEC §7.1).

Data: N = 5000, M = 5 modalities, D = 30, ``D_s ~ U{30..60}``, orthonormal dense ``W_s``, σ = 1; one data set per
seed. Model: linear decoders with the noise scale σ_ML of the PPCA maximum-likelihood fit (fixed), prior
N(0, I); encoders of Table 17 (``D_s → 256 → 256 → 60`` for the learned aggregators, ``D_s → 512 → 512 → 60``
for PoE / MoE, which read the 60 features as 30 means and 30 raw scales). As in the paper, the model is trained
and evaluated on the same N points: the ML fit it is compared with is a property of that data set.

Metrics per run: ``llh_gap`` and ``bound_gap`` (relative to the ML log-likelihood; the bound is the trained
objective evaluated with frozen parameters, 10 draws per point), ``llh`` / ``lower_bound`` / ``ll_ml`` (mean
per data point), ``mcc`` (weak, CCA, posterior means of ``q(z|x)``; SPEC §6), ``mcc_sample`` (the same with one
draw of ``q(z|x)`` per point, as the paper computes it), ``kl_full`` / ``kl_uni`` (``KL(q(z|x_S) || p(z|x_S))``
against the learned model's exact posterior for S = all and the mean over single modalities, Figure 3 (c), (f)),
``mcc_truth`` / ``mcc_truth_sample`` (the same MCCs for the generating model's exact posterior; see
:func:`truth_mcc`),
``rates`` (rates and distortions per subset, Figure 3), and ``llh_gap_heldout`` / ``bound_gap_heldout`` (the
gaps on N fresh draws from the generating model, against the ML fit of the training data): the masked bound is a
lower bound on ``log p(x)`` only in expectation under the model; on the points its encoders were trained on it
can exceed the log-likelihood (an encoder of ``x_S`` can memorise the rest of a training point).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import evaluation as ev
from ..evaluation import figures
from ..likelihoods import Normal
from ..modality import Modality
from ..model import MultimodalVAE
from ..nn import MLP
from ..priors import StandardNormal
from ..data.dataset import MultimodalDataset
from ..data.synthetic import linear_gaussian
from .base import Budget, Column, Experiment, Row, RunData, lecun_init, make_aggregator, rate_records

__all__ = ["LinearGaussianExperiment", "LinearDense", "EXPERIMENT"]


def truth_mcc(truth, data: MultimodalDataset, seed: int) -> dict[str, float]:
    """The MCC that the generating model's own exact posterior ``p(z | x)`` attains on ``data``: ``mcc_truth``
    with its mean, ``mcc_truth_sample`` with one draw per point (seeded).

    ``mcc_truth`` is a ceiling for ``mcc``: in a linear Gaussian model no function of x correlates better with z
    than ``E[z | x]``. ``mcc_truth_sample`` is what an encoder equal to the exact posterior gets for
    ``mcc_sample`` (one narrower than the posterior can get more). The posterior's spread caps both: on the sparse
    data each private dimension is seen by one modality only, with posterior variance 1/2."""
    post = truth.posterior({n: x for n, x in data.data.items()})
    g = torch.Generator().manual_seed(20_000 + seed)
    eps = torch.randn(post.loc.shape, generator=g, dtype=post.loc.dtype)
    draw = post.loc + (post.scale_tril @ eps[..., None])[..., 0]
    z = data.extras["z"]
    return {"mcc_truth": ev.mcc(z, post.loc, "weak"), "mcc_truth_sample": ev.mcc(z, draw, "weak")}


class LinearGaussianExperiment(Experiment):
    sparse = False
    rows = (Row("poe"), Row("moe"), Row("sum_pooling"), Row("self_attention"))
    bounds = ("masked", "mixture")
    columns = (
        Column("llh_gap", "LLH Gap", ".3f"),
        Column("bound_gap", "Bound Gap", ".3f"),
        Column("mcc_sample", "MCC", ".2f"),
        Column("mcc", "MCC (post. mean)", ".2f"),
    )
    truth_metrics = (("mcc_truth_sample", "MCC of one draw from its exact posterior"),
                     ("mcc_truth", "MCC of its posterior mean"))
    #: Adam 1e-3, batch 500, 4000 epochs of 10 steps = 40,000 steps (the reference code)
    reference = Budget(epochs=4000, batch_size=500, lr=1e-3)
    #: our default: see docs/results/linear-dense/README.md (time to quality)
    default = Budget(epochs=500, batch_size=250, lr=2e-3, schedule="cosine", warmup_steps=200, final_lr_ratio=0.01)
    #: Monte Carlo draws per point for KL(q || p(z|x_S)) when q is not Gaussian (MoE; private latents)
    kl_samples = 256
    quick_budget = Budget(epochs=120, batch_size=100, lr=1e-2, schedule="cosine", warmup_steps=20, final_lr_ratio=0.01)

    # sizes: (N, M, D, D_s range, encoder width for learned aggregators, for PoE / MoE, χ/ρ width)
    full_size = dict(n=5000, num_modalities=5, latent_dim=30, dim_range=(30, 60), width=256, expert_width=512)
    quick_size = dict(n=500, num_modalities=3, latent_dim=4, dim_range=(5, 8), width=32, expert_width=48)

    def size(self, quick: bool) -> dict:
        return self.quick_size if quick else self.full_size

    # -- data ---------------------------------------------------------------------------------------------------
    def data(self, seed: int, quick: bool, missing_rate: float | None = None) -> RunData:
        if missing_rate:
            raise ValueError(f"{self.name} is fully observed (the PPCA reference needs every modality); "
                             "drop --missing-rate")
        s = self.size(quick)
        lg = linear_gaussian(n=s["n"], num_modalities=s["num_modalities"], latent_dim=s["latent_dim"],
                             dim_range=s["dim_range"], sparse=self.sparse, seed=seed)
        ds = lg.dataset
        ml = ev.ppca_fit(ds, s["latent_dim"])
        ll_ml = ml.log_likelihood({n: x.double() for n, x in ds.data.items()})
        # fresh draws from the same generating model, to see the bound away from the points it was trained on
        x_new, z_new = lg.truth.sample(s["n"], torch.Generator().manual_seed(10_000 + seed))
        heldout = MultimodalDataset(x_new, extras={"z": z_new})
        return RunData(ds, ds, {"truth": lg.truth, "sigma_ml": ml.scale(ds.names[0]), "ll_ml": ll_ml,
                                "heldout": heldout, **truth_mcc(lg.truth, ds, seed), **s})

    # -- model --------------------------------------------------------------------------------------------------
    def model(self, row: Row, data: RunData, quick: bool) -> MultimodalVAE:
        d = data.info["latent_dim"]
        experts = row.aggregator in ("poe", "moe", "mopoe")
        width = data.info["expert_width" if experts else "width"]
        mods = {
            name: Modality(MLP(x.shape[1], [width, width], 2 * d), nn.Linear(d, x.shape[1]),
                           Normal(scale=data.info["sigma_ml"]), shape=(x.shape[1],))
            for name, x in data.train.data.items()
        }
        agg = make_aggregator(row.aggregator, 2 * d, d, data.info["width"])
        return lecun_init(MultimodalVAE(mods, agg, StandardNormal(d)))

    def tracker(self, model: MultimodalVAE, data: RunData):
        ll_ml = data.info["ll_ml"]

        def llh_gap() -> float:
            return ev.llh_gap(ll_ml, ev.exact_log_likelihood(model, data.train))

        return llh_gap

    # -- evaluation ---------------------------------------------------------------------------------------------
    def evaluate(self, model, objective, data, quick, seed):
        test = data.test
        gaps = ev.linear_gaussian_gaps(model, test, objective, num_draws=4 if quick else 10, seed=seed)
        z = test.extras["z"]
        mean = ev.latents(model, test)
        draw = ev.latents(model, test, mean=False, seed=seed)
        names = model.names
        kl = {"+".join(names): float(ev.posterior_kl(model, test, None, num_samples=self.kl_samples,
                                                     seed=seed).mean())}
        for n in names:
            kl[n] = float(ev.posterior_kl(model, test, [n], num_samples=self.kl_samples, seed=seed).mean())
        subsets = [names] + [[n] for n in names]
        rates = ev.rate_distortion_table(model, test, subsets, num_samples=8 if quick else 32, seed=seed)
        rates = [{k: v for k, v in r.items() if not k.endswith("_stderr")} for r in rates]
        for r in rates:
            r["kl_posterior"] = kl[r["subset"]]
        # the same gaps on held-out draws (the ML fit of the training data as the reference)
        held = ev.linear_gaussian_gaps(model, data.info["heldout"], objective, fit_data=test,
                                       num_draws=4 if quick else 10, seed=seed)
        metrics = {
            "llh_gap": gaps["llh_gap"], "bound_gap": gaps["bound_gap"], "llh": gaps["ll_model"],
            "lower_bound": gaps["bound"], "ll_ml": gaps["ll_ml"],
            "llh_gap_heldout": held["llh_gap"], "bound_gap_heldout": held["bound_gap"],
            "mcc": ev.mcc(z, mean, "weak"), "mcc_sample": ev.mcc(z, draw, "weak"),
            "mcc_truth": data.info["mcc_truth"], "mcc_truth_sample": data.info["mcc_truth_sample"],
            "kl_full": kl["+".join(names)], "kl_uni": sum(kl[n] for n in names) / len(names),
            # latent dimensions whose posterior mean moves with the data (the rest collapsed to the prior)
            "active_units": ev.active_units(model, test),
            "rates": rates,
        }
        return metrics, {}

    # -- figures --------------------------------------------------------------------------------------------------
    def figures(self, records, artifacts, out: Path):
        recs = rate_records(records)
        if not recs:
            return []
        m = max(r["size"] for r in recs)
        for r in recs:
            r["subset"] = "all" if r["size"] == m else r["subset"]
        hue = ("aggregator", "objective", "β")  # β only where the records hold several (Figure 5)
        paths = [
            figures.rate_distortion_bars(recs, out / "rates_distortions.png",
                                         metrics=["D_S", "R_S", "Dc_not_S", "R_not_S", "D_not_S"], hue=hue,
                                         title=f"{self.title}: rates and distortions per subset"),
            figures.rate_distortion_bars(recs, out / "posterior_kl.png", metrics=["kl_posterior"], hue=hue,
                                         title="KL(q(z|x_S) || p(z|x_S)) under the learned model"),
        ]
        return paths


class LinearDense(LinearGaussianExperiment):
    name = "linear-dense"
    title = "Linear Gaussian model, dense decoders (paper Table 1)"
    caption = ("LLH Gap: relative difference of the learned model's exact log-likelihood to the PPCA maximum-"
               "likelihood fit's; Bound Gap: the same for the trained bound evaluated with frozen parameters. "
               "MCC: weak (CCA) MCC of one draw of q(z|x) per point, as the paper computes it; MCC (post. mean): the "
               "same with the posterior mean (SPEC §6; the paper does not report it).")
    paper = {
        ("poe", "standard_normal", "masked"): {"LLH Gap": (0.03, 0.058), "Bound Gap": (0.12, 0.241), "MCC": (0.75, 0.20)},
        ("poe", "standard_normal", "mixture"): {"LLH Gap": (0.04, 0.074), "Bound Gap": (0.13, 0.220), "MCC": (0.77, 0.21)},
        ("moe", "standard_normal", "masked"): {"LLH Gap": (0.01, 0.005), "Bound Gap": (0.02, 0.006), "MCC": (0.82, 0.04)},
        ("moe", "standard_normal", "mixture"): {"LLH Gap": (0.02, 0.006), "Bound Gap": (0.11, 0.038), "MCC": (0.67, 0.03)},
        ("sum_pooling", "standard_normal", "masked"): {"LLH Gap": (0.00, 0.000), "Bound Gap": (0.00, 0.000), "MCC": (0.84, 0.00)},
        ("sum_pooling", "standard_normal", "mixture"): {"LLH Gap": (0.00, 0.002), "Bound Gap": (0.02, 0.003), "MCC": (0.84, 0.02)},
        ("self_attention", "standard_normal", "masked"): {"LLH Gap": (0.00, 0.003), "Bound Gap": (0.00, 0.003), "MCC": (0.84, 0.00)},
        ("self_attention", "standard_normal", "mixture"): {"LLH Gap": (0.02, 0.007), "Bound Gap": (0.03, 0.007), "MCC": (0.83, 0.00)},
    }


EXPERIMENT = LinearDense()


def time_to_quality_report(runs: dict[str, str | Path], out: str | Path, target: float = 0.01,
                           reference_steps: int = 40_000) -> str:
    """Summarise time-to-quality runs (``run(..., target=, track_every=)`` outputs): one line per setting with the
    steps and training wall time to reach LLH gap ≤ ``target`` and the final numbers; writes
    ``time_to_quality.md`` and ``time_to_quality.png`` (LLH gap against steps) into ``out``.

    ``runs``: label → the ``out`` directory of one run (its ``results.json``).
    """
    import json

    import numpy as np

    out = Path(out)
    lines = [f"| Setting | Steps run | Steps to LLH gap ≤ {target} | Wall to target (s) | Final LLH gap | "
             "Final bound gap | MCC | MCC (post. mean) | Wall total (s) |", "|" + "---|" * 9]
    traces = {}
    for label, d in runs.items():
        for r in json.loads((Path(d) / "results.json").read_text()):
            b = r["budget"]
            hit = r.get("steps_to_target")
            reached = (f"{hit} ({hit / reference_steps:.0%} of {reference_steps:,}) | {r['wall_to_target']:.0f}"
                       if hit is not None else "not reached | –")
            lines.append(
                f"| {label} (lr {b['lr']:g}, {b['schedule']}, warm-up {b['warmup_steps']}, batch {b['batch_size']}, "
                f"seed {r['seed']}) | {r['steps']} | {reached} | {r['llh_gap']:.4f} | {r['bound_gap']:.4f} | "
                f"{r['mcc_sample']:.3f} | {r['mcc']:.3f} | {r['wall_s']:.0f} |")
            traces[f"{label} (seed {r['seed']})"] = np.asarray([(s, g) for s, _, g in r.get("trace", [])])
    text = "\n".join(lines) + "\n"
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, tr in traces.items():
        if len(tr):
            ax.plot(tr[:, 0], tr[:, 1], label=label)
    ax.axhline(target, color="black", linestyle="--", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("optimisation steps")
    ax.set_ylabel("LLH gap (exact, learned model vs PPCA ML)")
    ax.set_title("SumPooling + masked bound, linear-dense: time to quality")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "time_to_quality.png", dpi=100)
    (out / "time_to_quality.md").write_text(text)
    return text
