"""The `pimvae` command line: fit / evaluate / sample / reproduce / config, and their errors."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import pimvae
from pimvae import cli
from pimvae.config import build_data, dump_config, load_named_or_path
from pimvae.training import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.max_steps=10", "train.log_every_n_steps=5", "train.progress_bar=false", "data.options.n=300"]


def run_cli(*argv, capsys=None):
    """``pimvae argv…`` in-process: (exit code, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr() if capsys is not None else None
    return code, (out.out if out else ""), (out.err if out else "")


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """The README's command, through the installed entry point, timed."""
    run_dir = tmp_path_factory.mktemp("runs") / "quickstart"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from pimvae.cli import main; raise SystemExit(main())", "fit",
                           str(ROOT / "examples" / "configs" / "quickstart.yaml"), "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    return run_dir, proc, time.perf_counter() - t0


def test_quickstart_fit_under_a_minute(quickstart_run):
    run_dir, proc, seconds = quickstart_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seconds < 60
    assert "trained 600 steps" in proc.stdout
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.csv", "checkpoints", "model", "result.json"}
    assert load_named_or_path(run_dir / "config.yaml") == load_named_or_path("quickstart")  # resolved, identical
    rows = read_metrics(run_dir)
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 12 and losses[-1] < losses[0] - 5  # the bound improved by more than 5 nats
    # the final validation bound is printed and lies below the data's exact log-likelihood scale (≈ −43 to −45)
    val = [r["val/bound"] for r in rows if "val/bound" in r][-1]
    assert -47 < val < -43 and f"validation bound {val:.4f}" in proc.stdout


def test_help_for_every_command(capsys):
    code, out, _ = run_cli("--help", capsys=capsys)
    assert code == 0 and all(c in out for c in ("fit", "evaluate", "sample", "reproduce", "config"))
    for command in ("fit", "evaluate", "sample", "reproduce", "config"):
        code, out, _ = run_cli(command, "--help", capsys=capsys)
        assert code == 0 and f"usage: pimvae {command}" in out


def test_config_command_prints_the_resolved_config(capsys):
    code, out, _ = run_cli("config", "quickstart", "train.lr=1e-4", "--model.latent_dim=3", capsys=capsys)
    assert code == 0
    assert out == dump_config(load_named_or_path("quickstart", ["train.lr=1e-4", "model.latent_dim=3"]))
    assert yaml.safe_load(out)["train"]["lr"] == 1e-4


def test_fit_errors(tmp_path, capsys):
    code, _, err = run_cli("fit", "quickstart", "--run-dir", tmp_path / "a", "train.lr=fast", capsys=capsys)
    assert code == 2 and "train.lr: expected a number, got str 'fast'" in err
    code, _, err = run_cli("fit", "nothing.yaml", "--run-dir", tmp_path / "a", capsys=capsys)
    assert code == 2 and "config 'nothing.yaml' not found" in err
    code, _, err = run_cli("fit", "--run-dir", tmp_path / "a", "--resume", capsys=capsys)
    assert code == 2 and "last.ckpt does not exist" in err


def test_fit_then_resume_with_a_larger_budget(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, _ = run_cli("fit", "--run-dir", run, *TINY, capsys=capsys)  # the embedded quickstart
    assert code == 0 and "trained 10 steps" in out
    code, _, err = run_cli("fit", "--run-dir", run, *TINY, capsys=capsys)
    assert code == 2 and "already holds a run; pass --resume" in err
    code, _, err = run_cli("fit", "--run-dir", run, "--resume", *TINY, "model.latent_dim=3", capsys=capsys)
    assert code == 2 and "the model section(s) differ" in err
    code, out, _ = run_cli("fit", "--run-dir", run, "--resume", *TINY, "train.max_steps=20", capsys=capsys)
    assert code == 0 and "trained 20 steps" in out
    assert [r["step"] for r in read_metrics(run) if "train/loss" in r] == [5, 10, 15, 20]
    code, out, _ = run_cli("fit", "--run-dir", run, "--overwrite", *TINY, capsys=capsys)
    assert code == 0 and "trained 10 steps" in out
    assert [r["step"] for r in read_metrics(run) if "train/loss" in r] == [5, 10]


@pytest.fixture
def tiny_run(tmp_path):
    run = tmp_path / "run"
    assert cli.main(["fit", "--run-dir", str(run), *TINY]) == 0
    return run


def test_sample(tiny_run, capsys):
    model = pimvae.MultimodalVAE.load(tiny_run / "model")
    code, out, _ = run_cli("sample", tiny_run, "--n", 5, "--out", tiny_run / "s.safetensors", capsys=capsys)
    assert code == 0 and "5 unconditional samples" in out
    got = load_file(tiny_run / "s.safetensors")
    torch.manual_seed(0)
    expected = model.sample(5)
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    code, out, _ = run_cli("sample", tiny_run, "--n", 4, "--given", "x0,x2", "--seed", 3, capsys=capsys)
    assert code == 0 and "generated from ['x0', 'x2']" in out
    got = load_file(tiny_run / "samples.safetensors")
    test = build_data(load_named_or_path(tiny_run / "config.yaml")).test
    torch.manual_seed(3)
    expected = model.generate(test.batch(torch.arange(4)), given=["x0", "x2"])
    assert all(torch.equal(got[k], expected[k]) for k in got) and got["x1"].shape[0] == 4
    code, _, err = run_cli("sample", tiny_run, "--given", "x7", capsys=capsys)
    assert code == 2 and "unknown modality 'x7'" in err


def test_evaluate(tiny_run, capsys, monkeypatch):
    try:
        import pimvae.evaluation.report  # noqa: F401  (written by the evaluation work)
    except ImportError:
        pytest.skip("pimvae.evaluation.report is not available")
    code, out, _ = run_cli("evaluate", tiny_run, "--particles", 8, capsys=capsys)
    assert code == 0 and "on the test split (30 data points)" in out
    import json

    metrics = json.loads((tiny_run / "evaluation" / "metrics.json").read_text())
    assert metrics["num_points"] == 30 and metrics["num_particles"] == 8
    monkeypatch.setitem(sys.modules, "pimvae.evaluation.report", None)  # as if it were not installed
    code, _, err = run_cli("evaluate", tiny_run, capsys=capsys)
    assert code == 2 and "evaluation reports are not available" in err


def test_evaluate_needs_a_run_dir(tmp_path, capsys):
    code, _, err = run_cli("evaluate", tmp_path, capsys=capsys)
    assert code == 2 and "has no config.yaml" in err


def test_reproduce_passes_options_to_experiments(tmp_path, capsys, monkeypatch):
    calls = []

    def fake_run(name, **options):
        calls.append((name, options))
        (Path(options["out"]) / "table.md").parent.mkdir(parents=True, exist_ok=True)
        (Path(options["out"]) / "table.md").write_text("| a | b |\n")
        return [{}, {}]

    import types

    monkeypatch.setitem(sys.modules, "pimvae.experiments", types.SimpleNamespace(run=fake_run))
    monkeypatch.setattr(pimvae, "experiments", sys.modules["pimvae.experiments"], raising=False)
    code, out, _ = run_cli("reproduce", "linear-dense", "--quick", "--out", tmp_path, "epochs=3",
                           "aggregators=[poe, sum_pooling]", "--seeds", 0, 1, capsys=capsys)
    assert code == 0 and "linear-dense: 2 run(s)" in out and "| a | b |" in out
    assert calls == [("linear-dense", {"quick": True, "out": str(tmp_path), "epochs": 3,
                                       "aggregators": ["poe", "sum_pooling"], "seeds": (0, 1)})]
    calls.clear()
    code, _, _ = run_cli("reproduce", "five-modal", "--out", tmp_path, "--epochs", 7, "--aggregators", "poe",
                         "self_attention", "--bounds", "masked", "--missing-rate", 0.5, capsys=capsys)
    assert code == 0
    assert calls == [("five-modal", {"quick": False, "out": str(tmp_path), "epochs": 7,
                                     "aggregators": ["poe", "self_attention"], "bounds": ["masked"],
                                     "missing_rate": 0.5})]
    calls.clear()  # key=value options after a list option end the list; --out's value stays a path
    monkeypatch.chdir(tmp_path)
    code, _, _ = run_cli("reproduce", "five-modal", "threads=1", "--bounds", "masked", "priors=[standard_normal]",
                         "--aggregators", "poe", "resume=true", "--out", "a=b", capsys=capsys)
    assert code == 0
    assert calls == [("five-modal", {"quick": False, "out": "a=b", "threads": 1, "priors": ["standard_normal"],
                                     "resume": True, "aggregators": ["poe"], "bounds": ["masked"]})]
    calls.clear()  # an exponent without a dot is a number (YAML 1.1 reads 5e-4 as a string), in lists too
    code, _, _ = run_cli("reproduce", "five-modal", "--out", tmp_path, "lr=5e-4", "betas=[1e0, 2]", "schedule=constant",
                         capsys=capsys)
    assert code == 0 and calls[0][1]["lr"] == 5e-4 and calls[0][1]["betas"] == [1.0, 2]
    assert calls[0][1]["schedule"] == "constant"
    code, _, err = run_cli("reproduce", "linear-dense", "epochs", capsys=capsys)
    assert code == 2 and "key=value" in err


def test_image_samples_are_saved_as_a_grid(tmp_path):
    import matplotlib.image

    images = torch.rand(5, 3, 4, 6)
    cli._save_grid(images, tmp_path / "g.png")
    grid = matplotlib.image.imread(tmp_path / "g.png")
    assert grid.shape[:2] == (2 * (4 + 2), 3 * (6 + 2))  # 5 images: 3 columns, 2 rows, 1-pixel borders
    assert grid[1:5, 1:7, :3] == pytest.approx(images[0].permute(1, 2, 0).numpy(), abs=1 / 255)
