"""The paper's experiments end to end at their quick sizes: files, records and numbers."""

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from pimvae import experiments
from pimvae.experiments._loop import Budget
from pimvae.experiments.base import aggregator_name, bound_name


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small models on a shared CPU: one intra-op thread is faster than two (no spin-waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

REQUIRED = {"aggregator", "prior", "bound", "beta", "seed", "epochs", "steps", "wall_s"}


def _finite(records, keys):
    for r in records:
        for k in keys:
            assert isinstance(r[k], (int, float)) and math.isfinite(r[k]), (k, r[k])


@pytest.fixture(scope="module")
def linear_dense(tmp_path_factory):
    out = tmp_path_factory.mktemp("linear-dense")
    torch.manual_seed(0)
    records = experiments.run("linear-dense", quick=True, out=out, aggregators=["PoE", "SumPooling"],
                              verbose=False)
    return out, records


def test_linear_dense_quick_writes_table_results_and_figures(linear_dense):
    out, records = linear_dense
    assert {p.name for p in out.iterdir()} >= {"table.md", "results.json", "rates_distortions.png", "posterior_kl.png"}
    saved = json.loads((out / "results.json").read_text())
    assert len(saved) == len(records) == 4  # 2 aggregators × 2 bounds × 1 seed
    assert {(r["aggregator"], r["bound"]) for r in saved} == {(a, b) for a in ("poe", "sum_pooling")
                                                             for b in ("masked", "mixture")}
    for r in saved:
        assert REQUIRED <= set(r) and r["steps"] == 600 and r["epochs"] == 120
    _finite(saved, ["llh_gap", "bound_gap", "llh_gap_heldout", "bound_gap_heldout", "mcc", "mcc_sample", "llh", "lower_bound", "ll_ml", "kl_full", "kl_uni"])
    table = (out / "table.md").read_text()
    assert "| SumPooling |" in table and "Our bound: LLH Gap" in table and "Mixture bound: Bound Gap" in table
    assert "[0.000 (0.000)]" in table  # the paper's SumPooling numbers beside ours


def test_linear_dense_quick_numbers_are_consistent(linear_dense):
    _, records = linear_dense
    for r in records:
        # the ML fit maximises the likelihood, and the bound (frozen parameters, 4 draws) lies below the model's
        assert r["ll_ml"] >= r["llh"] - 1e-6 and r["llh_gap"] >= -1e-9
        assert r["lower_bound"] <= r["llh"] + 0.05
        torch.testing.assert_close(r["bound_gap"] - r["llh_gap"], (r["llh"] - r["lower_bound"]) / abs(r["ll_ml"]))
        assert r["kl_full"] >= 0 and r["kl_uni"] >= 0
        assert isinstance(r["active_units"], int) and 0 <= r["active_units"] <= 4  # the quick size's latent_dim
        assert r["mcc"] <= r["mcc_truth"] + 0.02  # the exact posterior mean of the generating model is the ceiling
        # on fresh draws from the generating model the bound lies below the log-likelihood (it is a bound in
        # expectation; on training points an encoder of x_S may memorise the rest)
        assert r["bound_gap_heldout"] >= r["llh_gap_heldout"]
        assert len(r["rates"]) == 4  # all modalities + each of 3 single ones
        full = r["rates"][0]
        # −(D_S + R_S) for S = all is the plain ELBO, below the exact log-likelihood
        assert -(full["D_S"] + full["R_S"]) <= r["llh"] + 0.05
    by = {(r["aggregator"], r["bound"]): r for r in records}
    for agg in ("poe", "sum_pooling"):
        # the quick run already shows the masked bound's advantage, and fits reasonably
        assert by[agg, "masked"]["bound_gap"] < by[agg, "mixture"]["bound_gap"]
        assert by[agg, "masked"]["bound_gap"] < 0.02
        assert by[agg, "masked"]["mcc"] > 0.8 and by[agg, "masked"]["llh_gap"] < 0.01


def test_linear_dense_time_to_quality_tracking():
    records = experiments.run("linear-dense", quick=True, aggregators=["poe"], bounds=["masked"], epochs=40,
                              target=0.2, track_every=50, verbose=False)
    (r,) = records
    steps = [s for s, _, _ in r["trace"]]
    assert steps == list(range(50, 201, 50))
    gaps = [g for _, _, g in r["trace"]]
    assert gaps[-1] < gaps[0]
    assert r["steps_to_target"] == min(s for s, _, g in r["trace"] if g <= 0.2)
    assert 0 < r["wall_to_target"] <= r["wall_s"]


def test_grid_training_overrides_reach_the_trainer_the_record_and_the_caption(tmp_path, monkeypatch):
    from pimvae.experiments import _loop

    seen = []
    real = _loop._fit

    def spy(*args, config, **kwargs):
        seen.append((config.grad_clip, config.kl_warmup_steps))
        return real(*args, config=config, **kwargs)

    monkeypatch.setattr(_loop, "_fit", spy)
    (r,) = experiments.run("linear-dense", quick=True, out=tmp_path, aggregators=["poe"], bounds=["masked"],
                           epochs=2, grad_clip=250.0, kl_warmup_steps=3, verbose=False)
    assert seen == [(250.0, 3)]
    assert (r["budget"]["grad_clip"], r["budget"]["kl_warmup_steps"]) == (250.0, 3)
    table = (tmp_path / "table.md").read_text()
    assert "KL warm-up 3 steps, gradient norm clipped at 250" in table


def test_an_interrupted_grid_resumes_without_rerunning(tmp_path):
    first = experiments.run("linear-sparse", quick=True, out=tmp_path, aggregators=["PoE"], bounds=["masked"],
                            epochs=5, verbose=False)
    both = experiments.run("linear-sparse", quick=True, out=tmp_path, aggregators=["PoE", "MoE"], bounds=["masked"],
                           epochs=5, resume=True, verbose=False)
    assert [r["aggregator"] for r in both] == ["poe", "moe"]
    assert both[0] == json.loads(json.dumps(first[0]))  # kept as written, not retrained
    assert len(json.loads((tmp_path / "results.json").read_text())) == 2


def test_parallel_jobs_give_the_sequential_records_in_the_same_order(tmp_path):
    # Two worker processes (spawn), three seeds, resumed over one kept record: every run is seeded on its own, so
    # the metrics equal those of the one-process grid, whatever order the workers finish in.
    kw = dict(quick=True, aggregators=["SumPooling"], bounds=["masked"], epochs=5, seeds=(0, 1, 2), verbose=False,
              threads=1)
    sequential = experiments.run("linear-sparse", out=tmp_path / "seq", **kw)
    (tmp_path / "par").mkdir()
    (tmp_path / "par" / "results.json").write_text(json.dumps(sequential[:1]))
    parallel = experiments.run("linear-sparse", out=tmp_path / "par", jobs=2, resume=True, **kw)
    key = lambda r: (r["seed"], r["aggregator"], r["bound"])  # noqa: E731
    assert [key(r) for r in parallel] == [key(r) for r in sequential] and len(parallel) == 3
    for a, b in zip(sequential, parallel):
        for k, v in a.items():
            if k not in ("wall_s", "eval_s") and isinstance(v, float):
                assert b[k] == pytest.approx(v, rel=1e-6, abs=1e-9), (key(a), k)
    assert [r["seed"] for r in json.loads((tmp_path / "par" / "results.json").read_text())] == [0, 1, 2]
    assert (tmp_path / "par" / "table.md").is_file()
    with pytest.raises(ValueError, match="jobs"):
        experiments.run("linear-sparse", jobs=0, **kw)


def test_a_failed_parallel_run_is_raised_and_the_finished_ones_are_kept(tmp_path):
    # β = −1 fails in its worker (the objective rejects it); the β = 1 run beside it is written before the error.
    with pytest.raises(ValueError, match="beta must be positive"):
        experiments.run("linear-sparse", quick=True, aggregators=["PoE"], bounds=["masked"], epochs=2,
                        betas=[-1.0, 1.0], jobs=2, threads=1, out=tmp_path, verbose=False)
    kept = json.loads((tmp_path / "results.json").read_text())
    assert [(r["beta"], r["steps"] > 0) for r in kept] == [(1.0, True)]


def _live_workers(parent: int) -> list[int]:
    """PIDs of the live (not zombie) spawned worker processes whose parent is ``parent`` (Linux /proc)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text() if d.name.isdigit() else ""
            cmd = (d / "cmdline").read_bytes() if stat else b""
        except OSError:
            continue
        if stat:
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) == parent and state != "Z" and b"spawn_main" in cmd:
                found.append(int(d.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_end_when_the_grid_process_is_killed(tmp_path):
    # Killing `pimvae reproduce --jobs 2` must not leave its workers training (or blocked) for nobody.
    code = ("from pimvae import experiments; experiments.run('linear-sparse', quick=True, aggregators=['PoE'], "
            f"bounds=['masked'], seeds=range(40), jobs=2, threads=1, verbose=False, out={str(tmp_path)!r})")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "results.json").exists():  # a run has finished: the workers are in their task loop
            assert time.monotonic() < deadline and proc.poll() is None, "the grid did not start"
            time.sleep(0.2)
        workers = _live_workers(proc.pid)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "workers outlived the killed grid process"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bimodal_label_quick_end_to_end(tmp_path):
    records = experiments.run("bimodal-label", quick=True, out=tmp_path, aggregators=["PoE", "SumPoolingMixture"],
                              bounds=["masked"], verbose=False)
    # rows: PoE with N(0, I), SumPoolingMixture with the mixture prior (the paper's rows)
    assert [(r["aggregator"], r["prior"]) for r in records] == [("poe", "standard_normal"),
                                                              ("sum_pooling_mixture", "gaussian_mixture")]
    _finite(records, ["llh", "lower_bound", "mcc", "mcc_cca1", "mcc_strong", "llh_true"])
    for r in records:
        assert REQUIRED <= set(r)
        assert r["llh"] < r["llh_true"] + 1.0  # the generating model's exact log-likelihood is a ceiling
        # the reference code's MCC (first canonical correlation) is at least the all-component weak MCC
        assert 0 <= r["mcc"] <= r["mcc_cca1"] + 0.05 and r["mcc_cca1"] <= 1
        assert r["mcc_cca1"] <= r["mcc_cca1_truth"] + 0.05  # the true posterior mean's MCC is a ceiling
    assert sum(r["llh"] - r["lower_bound"] for r in records) >= 0
    assert {"table.md", "results.json", "latents_0.png"} <= {p.name for p in tmp_path.iterdir()}
    table = (tmp_path / "table.md").read_text()
    assert "[-43.4 (10.7)]" in table
    assert f"MCC of its posterior mean **{records[0]['mcc_cca1_truth']:.3g}**" in table


def test_five_modal_quick_with_missing_modalities(tmp_path):
    records = experiments.run("five-modal", quick=True, out=tmp_path, aggregators=["SumPooling"],
                              priors=["standard_normal"], missing_rate=0.5, verbose=False)
    assert [r["bound"] for r in records] == ["masked", "mixture"]
    _finite(records, ["llh", "lower_bound", "mcc", "mcc_cca1", "mcc_sample", "llh_true", "mcc_cca1_truth",
                      "mcc_truth"])
    for r in records:
        assert r["missing_rate"] == 0.5 and abs(r["observed_fraction"] - 0.5) < 0.05
        assert r["llh"] < r["llh_true"] + 1.0
    assert sum(r["llh"] - r["lower_bound"] for r in records) >= 0
    assert "[-249.6 (4.8)]" in (tmp_path / "table.md").read_text()  # Table 2's numbers for η = 0.5


def test_linear_sparse_private_quick_end_to_end(tmp_path):
    """Table 6: private latents with equivariant encoders; the exact references read the private decoders."""
    records = experiments.run("linear-sparse-private", quick=True, out=tmp_path, aggregators=["PoE", "SumPooling"],
                              bounds=["masked"], verbose=False)
    assert [r["aggregator"] for r in records] == ["poe", "sum_pooling"]
    _finite(records, ["llh_gap", "bound_gap", "mcc", "mcc_sample", "llh", "lower_bound", "ll_ml", "kl_full", "kl_uni"])
    for r in records:
        assert REQUIRED <= set(r)
        # the model has the PPCA reference's latent size, so the ML fit is a ceiling for its exact likelihood
        assert r["ll_ml"] >= r["llh"] - 1e-6 and 0 <= r["llh_gap"] < 0.05
        assert r["lower_bound"] <= r["llh"] + 0.05 and r["kl_full"] >= 0
    table = (tmp_path / "table.md").read_text()
    assert "| PoE (equivariant) |" in table and "[0.91 (0.02)]" in table  # the paper's Table 6 beside ours
    exp = experiments.get("linear-sparse-private")
    data = exp.data(0, quick=True)
    model = exp.model(exp.rows[2], data, quick=True)  # SelfAttention: z = [z' (1), z̃_1 (5), z̃_2 (5)]
    assert model.latent_dim == 11 and model.aggregator.shared_dim == 1
    with pytest.raises(ValueError, match="rows poe, sum_pooling and self_attention"):
        experiments.run("linear-sparse-private", quick=True, aggregators=["MoE"])


def test_names_and_options_are_validated():
    assert aggregator_name("SelfAttention") == aggregator_name("self-attention") == "self_attention"
    assert bound_name("Masked") == "masked"
    with pytest.raises(ValueError, match="unknown aggregator"):
        experiments.run("linear-dense", quick=True, aggregators=["PoX"])
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.get("mnist-svhn")
    with pytest.raises(ValueError, match="fully observed"):
        experiments.run("linear-sparse", quick=True, missing_rate=0.5)


def test_budget_maps_to_the_trainer_config():
    b = Budget(epochs=10, batch_size=50, lr=2e-3, schedule="cosine", warmup_steps=7, final_lr_ratio=0.01)
    c = b.train_config(seed=3)
    assert (c.seed, c.lr, c.final_lr, c.warmup_steps, c.batch_size, c.max_epochs, c.max_steps) == \
        (3, 2e-3, 2e-5, 7, 50, 10, None)
    assert Budget(epochs=1, batch_size=1, lr=1e-3).train_config().final_lr is None  # constant rate
    assert b.steps(101) == 30 and b.replace(lr=None, epochs=2).epochs == 2
    with pytest.raises(ValueError, match="schedule"):
        Budget(epochs=1, batch_size=1, lr=1.0, schedule="linear")
    # fields are checked like a config file's, before any training (a string lr used to fail deep in the trainer):
    # a number given as text is converted, a wrong type is named
    assert Budget(epochs=1, batch_size=1, lr=1e-3).replace(lr="5e-4").lr == 5e-4
    assert isinstance(Budget(epochs=1, batch_size=1, lr=1).lr, float)
    with pytest.raises(ValueError, match="budget.lr: expected a number, got str 'fast'"):
        Budget(epochs=1, batch_size=1, lr="fast")
    with pytest.raises(ValueError, match="budget.epochs: expected an integer, got float 2.5"):
        Budget(epochs=2.5, batch_size=1, lr=1e-3)
    with pytest.raises(ValueError, match="budget.patience: expected int or null, got bool True"):
        Budget(epochs=1, batch_size=1, lr=1e-3, val_fraction=0.1, patience=True)


def test_budget_validation_split_and_its_errors():
    from pimvae.data import MultimodalDataset

    data = MultimodalDataset({"a": torch.arange(40.0)[:, None], "b": torch.zeros(40, 2)})
    b = Budget(epochs=3, batch_size=8, lr=1e-3, val_fraction=0.25, val_every=2, patience=4)
    train, val = b.split(data, seed=5)
    assert (len(train), len(val)) == (30, 10)
    ids = torch.cat([train.data["a"][:, 0], val.data["a"][:, 0]])
    assert torch.equal(ids.sort().values, torch.arange(40.0))  # disjoint, and together the whole split
    again, _ = b.split(data, seed=5)
    other, _ = b.split(data, seed=6)
    assert torch.equal(again.data["a"], train.data["a"]) and not torch.equal(other.data["a"], train.data["a"])
    c = b.train_config(seed=5)
    assert (c.val_every_n_epochs, c.early_stopping_patience, c.restore_best) == (2, 4, True)
    plain = Budget(epochs=3, batch_size=8, lr=1e-3)
    assert plain.split(data, 0) == (data, None) and not plain.train_config().restore_best
    with pytest.raises(ValueError, match="val_fraction must lie in"):
        Budget(epochs=1, batch_size=1, lr=1e-3, val_fraction=1.0)
    with pytest.raises(ValueError, match="patience=3 needs .* val_fraction > 0"):
        Budget(epochs=1, batch_size=1, lr=1e-3, patience=3)
    with pytest.raises(ValueError, match="leaves an empty part"):
        Budget(epochs=1, batch_size=1, lr=1e-3, val_fraction=0.01).split(data, 0)


def test_grid_early_stopping_restores_the_best_validation_and_says_so(tmp_path):
    # a constant rate of 0.1: on the quick five-modal data, seed 0, PoE's validation bound peaks after epoch 12 of
    # 30 (step 36) and two validations later the run stops
    kw = dict(quick=True, aggregators=["poe"], bounds=["masked"], val_fraction=0.25, lr=0.1, schedule="constant",
              warmup_steps=0, verbose=False)
    (r,) = experiments.run("five-modal", out=tmp_path, epochs=30, patience=2, **kw)
    assert r["stopped_early"] and r["restored_best"] and (r["best_epoch"], r["best_step"]) == (11, 36)
    assert r["steps"] == 42 and len(r["val_bound"]) == r["epochs"] == 14 and r["train_size"] == 225
    assert r["best_val_bound"] == max(r["val_bound"]) == r["val_bound"][11]
    assert all(v <= r["best_val_bound"] for v in r["val_bound"][-2:])
    from pimvae.experiments.base import validation_curve

    assert validation_curve(r) == (list(range(3, 43, 3)), r["val_bound"])  # 225 points in batches of 100
    assert (tmp_path / "validation.png").stat().st_size > 0
    # evaluated with the best validation's parameters: those of the same run cut at the best step
    (cut,) = experiments.run("five-modal", epochs=12, restore_best=False, **kw)
    assert cut["steps"] == 36 and not cut["restored_best"]
    assert (r["llh"], r["lower_bound"], r["mcc"]) == (cut["llh"], cut["lower_bound"], cut["mcc"])
    assert ("0.25 of the training split held out for validation every 1 epoch(s), early stopping after 2 "
            "validations without a better bound (1 of 1 runs stopped early), the best validation's parameters "
            "restored (best at steps 36–36)") in (tmp_path / "table.md").read_text()


def test_grid_attention_zero_init_option_reaches_the_model_and_the_record(monkeypatch):
    from pimvae.experiments import _loop

    built = []
    real = _loop._fit

    def spy(model, *args, **kwargs):
        if hasattr(model.aggregator, "blocks"):
            built.append(model.aggregator.blocks[0].out.weight.abs().max().item())
        return real(model, *args, **kwargs)

    monkeypatch.setattr(_loop, "_fit", spy)
    kw = dict(quick=True, aggregators=["self_attention"], bounds=["masked"], epochs=1, verbose=False)
    (default,) = experiments.run("linear-dense", **kw)
    (random,) = experiments.run("linear-dense", attention_zero_init=False, **kw)
    assert built[0] == 0 and built[1] > 0
    assert default["zero_init_blocks"] is True and random["zero_init_blocks"] is False
    (poe,) = experiments.run("linear-dense", quick=True, aggregators=["poe"], bounds=["masked"], epochs=1,
                             attention_zero_init=False, verbose=False)
    assert "zero_init_blocks" not in poe


def test_truth_mcc_matches_the_posterior_correlations_in_closed_form():
    """Sparse data, orthonormal loadings, σ = 1: a shared dimension is seen by 5 modalities (posterior variance 1/6),
    a private one by one (1/2); corr(E[z|x], z) = sqrt(1 − v) and corr(draw, z) = 1 − v. The weak MCC averages
    them over the 5 shared and 25 private dimensions; the paper's sparse MCC of 0.84 is above this ceiling."""
    from pimvae.data.synthetic import linear_gaussian
    from pimvae.experiments.linear_dense import truth_mcc

    lg = linear_gaussian(n=4000, num_modalities=5, latent_dim=30, dim_range=(30, 60), sparse=True, seed=3)
    out = truth_mcc(lg.truth, lg.dataset, seed=0)
    mean = (5 * math.sqrt(5 / 6) + 25 * math.sqrt(1 / 2)) / 30  # 0.741
    draw = (5 * 5 / 6 + 25 * 1 / 2) / 30  # 0.556
    assert abs(out["mcc_truth"] - mean) < 0.015 and abs(out["mcc_truth_sample"] - draw) < 0.02


def test_rate_records_label_beta_only_when_the_records_hold_several():
    from pimvae.experiments.base import rate_records

    rates = [{"subset": "{0}", "size": 1, "R_S": 1.0}, {"subset": "{0,1}", "size": 2, "R_S": 2.0}]
    one = [{"aggregator": "poe", "bound": "masked", "seed": 0, "beta": 1.0, "rates": rates}]
    assert [set(r) for r in rate_records(one)] == [{"subset", "size", "R_S", "aggregator", "objective", "seed"}] * 2
    two = one + [{**one[0], "beta": 0.1}]
    recs = rate_records(two)
    assert [r["β"] for r in recs] == ["β = 1", "β = 1", "β = 0.1", "β = 0.1"]
    assert [r["R_S"] for r in recs] == [1.0, 2.0, 1.0, 2.0]


def test_table_names_each_rows_seeds_when_rows_were_run_on_different_seeds():
    from pimvae.experiments.base import format_table

    exp = experiments.get("five-modal")

    def rec(agg, prior, seed, llh, bound="masked"):
        return {"aggregator": agg, "prior": prior, "bound": bound, "beta": 1.0, "seed": seed, "llh": llh}

    even = [rec("poe", "standard_normal", s, -60.0 - s) for s in (0, 1)] + \
        [rec("sum_pooling", "standard_normal", s, -59.0 - s) for s in (0, 1)]
    table = format_table(exp, even)
    assert "over 2 seed(s) [0, 1]" in table and "Seeds" not in table
    assert "| PoE | -60.5 (0.7) [" in table  # mean (sample std) of -60 and -61; one prior: no Prior column

    uneven = even + [rec("sum_pooling_mixture", "gaussian_mixture", s, -58.0 - 2 * s) for s in (0, 1, 2)] + \
        [rec("moe", "standard_normal", 0, -61.0), rec("moe", "standard_normal", 2, -63.0, bound="mixture")]
    table = format_table(exp, uneven)
    assert "over the seeds in the Seeds column (rows were run on different seeds; 3 in all: [0, 1, 2])" in table
    assert "| Aggregation | Prior | Seeds | Our bound: LLH |" in table
    assert "| PoE | N(0, I) | 0, 1 | -60.5 (0.7) [" in table
    assert "| SumPoolingMixture | mixture | 0, 1, 2 | -60.0 (2.0) [" in table
    assert "| MoE | N(0, I) | Our bound: 0; Mixture bound: 2 | -61.0 [" in table


def test_run_artifacts_are_kept_so_resumed_merged_and_redrawn_figures_show_every_run(tmp_path, monkeypatch, capsys):
    from pimvae import cli

    exp = experiments.get("bimodal-label")
    seen = []
    real = type(exp).figures
    monkeypatch.setattr(exp, "figures", lambda recs, arts, out: seen.append(arts) or real(exp, recs, arts, out))
    kw = dict(quick=True, bounds=["masked"], epochs=2, verbose=False)
    experiments.run("bimodal-label", out=tmp_path / "a", aggregators=["PoE"], **kw)
    both = experiments.run("bimodal-label", out=tmp_path / "a", aggregators=["PoE", "SumPoolingMixture"], resume=True,
                           **kw)
    # the resumed grid's figures get the kept run's artifacts, read back from its file, and the new run's
    assert [(a["aggregator"], a["seed"], a["beta"]) for a in seen[1]] == [("poe", 0, 1.0), ("sum_pooling_mixture", 0, 1.0)]
    assert torch.equal(seen[1][0]["z_mean"], seen[0][0]["z_mean"]) and seen[1][0]["z_mean"].shape == (400, 2)
    assert seen[1][0]["metric_keys"] == seen[0][0]["metric_keys"]
    assert sorted(p.name for p in (tmp_path / "a" / "artifacts").iterdir()) == [
        "poe-standard_normal-masked-beta1-eta0-seed0.safetensors",
        "sum_pooling_mixture-gaussian_mixture-masked-beta1-eta0-seed0.safetensors"]

    # redraw from the folder alone: the table and the latent scatter come back with both runs, nothing is trained
    for name in ("table.md", "latents_0.png"):
        (tmp_path / "a" / name).unlink()
    code = cli.main(["reproduce", "bimodal-label", "--out", str(tmp_path / "a"), "--figures-only"])
    assert code == 0 and "redrawn from 2 record(s)" in capsys.readouterr().out
    assert (tmp_path / "a" / "table.md").is_file() and (tmp_path / "a" / "latents_0.png").is_file()
    assert [torch.equal(x["z_mean"], y["z_mean"]) for x, y in zip(seen[2], seen[1])] == [True, True]
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "bimodal-label", "--out", str(tmp_path / "a"), "--figures-only", "--epochs", "3"])
    assert "--figures-only trains nothing" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no results.json"):
        experiments.redraw("bimodal-label", tmp_path / "empty")

    # docs/results/merge.py carries a replaced record's artifacts with it
    merge = _docs_results_script("merge")
    again = experiments.run("bimodal-label", out=tmp_path / "b", aggregators=["PoE"], **{**kw, "epochs": 3})
    merged = merge.merge(tmp_path / "a", [tmp_path / "b"])
    assert [r["epochs"] for r in merged] == [3, 2] and merged[0]["llh"] == again[0]["llh"]
    assert [x["aggregator"] for x in seen[-1]] == ["poe", "sum_pooling_mixture"]
    assert torch.equal(seen[-1][0]["z_mean"], seen[3][0]["z_mean"])  # run b's posterior means, not run a's
    assert not torch.equal(seen[-1][0]["z_mean"], seen[1][0]["z_mean"])

    # a corrupt artifacts file is named; a figure that cannot show all of the first seed's runs is left as it is
    (tmp_path / "a" / "artifacts" / "poe-standard_normal-masked-beta1-eta0-seed0.safetensors").write_bytes(b"junk")
    figure = (tmp_path / "a" / "latents_0.png").read_bytes()
    with pytest.warns(UserWarning) as caught:
        experiments.redraw("bimodal-label", tmp_path / "a")
    assert any("poe-standard_normal" in str(w.message) and "unreadable" in str(w.message) for w in caught)
    assert any("1 run(s) of seed 0" in str(w.message) and "poe-standard_normal" in str(w.message)
               and "left as they are" in str(w.message) for w in caught)
    assert seen[-1] == [] and (tmp_path / "a" / "latents_0.png").read_bytes() == figure
    assert json.loads((tmp_path / "a" / "results.json").read_text()) == json.loads(json.dumps(merged))  # untouched
    assert both[1] == merged[1]


def test_figures_are_drawn_from_the_first_seed_only_and_left_alone_without_its_artifacts(tmp_path, monkeypatch):
    """A merged folder whose seed-0 artifacts were removed keeps its seed-0 figure when a later seed is merged in
    (it used to be redrawn from the later seed); with the first seed's artifacts, the others are not drawn."""
    exp = experiments.get("five-modal")
    seen = []
    real = type(exp).figures
    monkeypatch.setattr(exp, "figures", lambda recs, arts, out: seen.append(arts) or real(exp, recs, arts, out))
    kw = dict(quick=True, bounds=["masked"], epochs=1, verbose=False, aggregators=["PoE"], missing_rate=0.5)
    experiments.run("five-modal", out=tmp_path / "s0", seeds=[0], **kw)
    experiments.run("five-modal", out=tmp_path / "s1", seeds=[1], **kw)
    assert [(a["seed"], a["missing_rate"]) for a in seen[0]] == [(0, 0.5)]
    merge = _docs_results_script("merge")

    # both seeds' artifacts: only seed 0's runs reach the figures
    merge.merge(tmp_path / "both", [tmp_path / "s0", tmp_path / "s1"])
    assert [(a["aggregator"], a["seed"]) for a in seen[-1]] == [("poe", 0)]
    assert torch.equal(seen[-1][0]["z_mean"], seen[0][0]["z_mean"])

    # seed 0's artifacts removed (as in docs/results), seed 1 merged in again: seed 0's figure is kept, with a warning
    shutil.rmtree(tmp_path / "both" / "artifacts")
    figure = (tmp_path / "both" / "latents_0.png").read_bytes()
    with pytest.warns(UserWarning, match=r"1 run\(s\) of seed 0 .*poe-standard_normal-masked-beta1-eta0.5-seed0"):
        merge.merge(tmp_path / "both", [tmp_path / "s1"])
    assert seen[-1] == [] and (tmp_path / "both" / "latents_0.png").read_bytes() == figure

    # --table-only: the merged records and their table, with each row's seeds; no artifacts, no figure
    experiments.run("five-modal", out=tmp_path / "s1sp", seeds=[1], priors=["standard_normal"],
                    **{**kw, "aggregators": ["SumPooling"]})
    n_figures = len(seen)
    merged = merge.merge(tmp_path / "summary", [tmp_path / "both", tmp_path / "s1sp"], table_only=True)
    assert [(r["aggregator"], r["seed"]) for r in merged] == [("poe", 0), ("poe", 1), ("sum_pooling", 1)]
    assert sorted(p.name for p in (tmp_path / "summary").iterdir()) == ["results.json", "table.md"]
    assert len(seen) == n_figures
    table = (tmp_path / "summary" / "table.md").read_text()
    assert "| PoE | 0, 1 |" in table and "| SumPooling | 1 |" in table and "Training: 1 epochs" in table

    # no artifacts at all: nothing drawn, nothing warned
    shutil.rmtree(tmp_path / "both" / "artifacts")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experiments.redraw("five-modal", tmp_path / "both")
    assert seen[-1] == [] and (tmp_path / "both" / "latents_0.png").read_bytes() == figure


def test_artifacts_files_round_trip_and_reject_what_is_not_theirs(tmp_path):
    from safetensors.torch import save_file

    from pimvae.experiments.base import load_artifacts, save_artifacts

    art = {"aggregator": "poe", "beta": 0.1, "seed": 3, "metric_keys": ["llh", "mcc"],
           "z_mean": torch.randn(5, 2, dtype=torch.float64), "label": torch.arange(5), "x": torch.randn(5, 2).numpy()}
    path = save_artifacts(art, tmp_path / "sub" / "run.safetensors")
    back = load_artifacts(path)
    assert {k: back[k] for k in ("aggregator", "beta", "seed", "metric_keys")} == {
        "aggregator": "poe", "beta": 0.1, "seed": 3, "metric_keys": ["llh", "mcc"]}
    assert torch.equal(back["z_mean"], art["z_mean"]) and back["z_mean"].dtype == torch.float64
    assert torch.equal(back["label"], art["label"]) and torch.equal(back["x"], torch.from_numpy(art["x"]))
    assert not [p for p in path.parent.iterdir() if p.name != "run.safetensors"]  # no temporary file left behind
    assert save_artifacts({"aggregator": "poe"}, tmp_path / "none.safetensors") is None
    assert not (tmp_path / "none.safetensors").exists()
    with pytest.raises(ValueError, match="missing.safetensors does not exist"):
        load_artifacts(tmp_path / "missing.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="foreign.safetensors is not a pimvae artifacts file"):
        load_artifacts(tmp_path / "foreign.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="cut.safetensors is unreadable"):
        load_artifacts(tmp_path / "cut.safetensors")


def _docs_results_script(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / f"docs/results/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_results_pairs_and_trend_count_what_the_readmes_quote(tmp_path, capsys):
    # the counts quoted in docs/results come from these scripts: check them on records with known answers
    pairs, trend = _docs_results_script("pairs"), _docs_results_script("trend")
    rec = lambda agg, bound, seed, llh, steps=4000, **kw: dict(aggregator=agg, prior="standard_normal", bound=bound,
                                                               beta=1.0, seed=seed, llh=llh, steps=steps, **kw)  # noqa: E731
    before = [rec("poe", "masked", 0, -60.0), rec("poe", "mixture", 0, -61.0),
              rec("moe", "masked", 0, -62.0), rec("moe", "mixture", 0, -61.5), rec("poe", "masked", 1, -59.0)]
    rows = pairs.pairs(before, "llh")
    assert [(p["row"], p["seed"], p["delta"], p["ours_ahead"]) for p in rows] == [
        ("poe / standard_normal / β=1", 0, 1.0, True), ("moe / standard_normal / β=1", 0, -0.5, False)]
    gaps = pairs.pairs([rec("poe", "masked", 0, 0, llh_gap=0.01), rec("poe", "mixture", 0, 0, llh_gap=0.02)], "llh_gap")
    assert gaps[0]["ours_ahead"]  # a gap counts lower as better

    after = [dict(r, llh=r["llh"] + 0.5 + 0.25 * (r["bound"] == "mixture"), steps=12000) for r in before[:4]]
    assert trend.changes(before, after, "llh") == [(trend.run_key(a), b["llh"], a["llh"]) for a, b in zip(after, before)]
    assert trend.changes(before, after + [rec("sum_pooling", "masked", 0, -1.0)], "llh")[-1][0][0] == "moe"  # no match
    for name, recs in (("a", before), ("b", after)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(recs))
    trend.main([str(tmp_path / "a"), str(tmp_path / "b"), "--metrics", "llh"])
    out = capsys.readouterr().out
    assert "(steps [4000]) →" in out and "| poe | standard_normal | masked | 1 | 0 | 0 | -60 → -59.5 |" in out
    assert "masked llh: change mean +0.500, min +0.500, max +0.500 (2 runs)" in out
    assert "mixture llh: change mean +0.750" in out
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text(json.dumps([rec("sum_pooling", "masked", 5, -1.0)]))
    with pytest.raises(SystemExit, match="no run of the second folder is in the first"):
        trend.main([str(tmp_path / "a"), str(tmp_path / "c")])
