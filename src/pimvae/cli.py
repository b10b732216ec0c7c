"""The ``pimvae`` command line.

    pimvae fit [CONFIG] --run-dir DIR [--resume] [key.path=value ...]
    pimvae evaluate RUN_DIR [--out DIR] [--split test] [--particles 512]
    pimvae sample RUN_DIR [--n 16] [--given a,b] [--out FILE]
    pimvae reproduce EXPERIMENT [--quick] [--out DIR] [--seeds 0 1] [--epochs N] [--jobs N] [--aggregators A ...]
                     [--bounds B ...] [--missing-rate ETA] [--figures-only] [key=value ...]
    pimvae config [CONFIG] [key.path=value ...]        # print the resolved config

CONFIG is a YAML file or the name of an embedded config (``quickstart``, the default). Heavy imports (Lightning)
happen inside the commands, so ``pimvae --help`` is quick.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


class CLIError(Exception):
    """A user error: printed as ``pimvae: error: …`` with exit status 2."""


def _split_positional(items: Sequence[str], what: str) -> tuple[str | None, list[str]]:
    """``[CONFIG] [overrides]``: items with ``=`` are overrides, at most one other item is the config."""
    plain = [i for i in items if "=" not in i]
    overrides = [i for i in items if "=" in i]
    if len(plain) > 1:
        raise CLIError(f"expected one {what} and key=value overrides, got {plain}")
    return (plain[0] if plain else None), overrides


def _load_run_config(run_dir: Path):
    from .config import load_config

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CLIError(f"{run_dir} has no config.yaml: it is not a run directory written by `pimvae fit`")
    return load_config(path)


# ---------------------------------------------------------------------------------------------------------------
def cmd_fit(args: argparse.Namespace, extra: list[str]) -> int:
    from .config import dump_config, load_named_or_path, to_dict
    from .training import checkpoint_path, fit_config
    from .training.fit import is_rank_zero

    name, overrides = _split_positional(args.config, "config")
    overrides += [e for e in extra if "=" in e]
    unknown = [e for e in extra if "=" not in e]
    if unknown:
        raise CLIError(f"unrecognised arguments: {' '.join(unknown)}")
    config = load_named_or_path(name or "quickstart", overrides)
    run_dir = Path(args.run_dir)
    saved = run_dir / "config.yaml"
    if args.resume:
        if not checkpoint_path(run_dir).is_file():
            raise CLIError(f"--resume: {checkpoint_path(run_dir)} does not exist")
        if saved.is_file():
            old = to_dict(_load_run_config(run_dir))
            new = to_dict(config)
            changed = [k for k in ("data", "model", "objective") if old[k] != new[k]]
            if changed:
                raise CLIError(f"--resume: the {', '.join(changed)} section(s) differ from {saved}; resume with the "
                               "same config (train settings such as max_steps may change)")
    elif is_rank_zero() and (checkpoint_path(run_dir).exists() or (run_dir / "model").exists()):
        if not args.overwrite:
            raise CLIError(f"{run_dir} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                           "or choose another --run-dir")
        import shutil

        shutil.rmtree(run_dir)
    if args.print_config:
        print(dump_config(config), end="")
    model, result = fit_config(config, run_dir, resume=bool(args.resume))
    if is_rank_zero():
        last = result.history[-1] if result.history else {}
        val = last.get("val_bound")
        print(f"trained {result.steps} steps ({result.epochs} epochs) in {result.wall_s:.1f}s; "
              f"final train loss {last.get('train_loss', float('nan')):.4f}"
              + (f", validation bound {val:.4f}" if val is not None else "")
              + (" (stopped early)" if result.stopped_early else ""))
        print(f"run directory: {run_dir} (config.yaml, metrics.csv, checkpoints/, model/)")
    return 0


def _pick_split(splits, name: str):
    ds = getattr(splits, name)
    if ds is None:
        raise CLIError(f"the run's data has no {name} split (data.split gives it a zero fraction)")
    return ds


def cmd_evaluate(args: argparse.Namespace, extra: list[str]) -> int:
    import torch

    from .config import build_data, build_objective
    from .model import MultimodalVAE

    if extra:
        raise CLIError(f"unrecognised arguments: {' '.join(extra)}")
    run_dir = Path(args.run_dir)
    config = _load_run_config(run_dir)
    try:
        from .evaluation.report import write_report
    except ImportError as err:
        raise CLIError(f"evaluation reports are not available in this installation ({err})") from None
    model = MultimodalVAE.load(run_dir / "model")
    splits = build_data(config)
    dataset = _pick_split(splits, args.split)
    out = Path(args.out) if args.out else run_dir / "evaluation"
    torch.manual_seed(args.seed)
    metrics = write_report(model, dataset, out, objective=build_objective(config), num_particles=args.particles,
                           train=splits.train, seed=args.seed)
    print(f"evaluated {run_dir} on the {args.split} split ({len(dataset)} data points) → {out}")
    report = out / "metrics.md"
    if report.is_file():  # the headline table
        print(report.read_text().split("\n## ")[0].strip())
    else:
        print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, indent=2))
    return 0


def cmd_sample(args: argparse.Namespace, extra: list[str]) -> int:
    import torch
    from safetensors.torch import save_file

    from .model import MultimodalVAE

    if extra:
        raise CLIError(f"unrecognised arguments: {' '.join(extra)}")
    if args.n < 1:
        raise CLIError(f"--n must be positive, got {args.n}")
    run_dir = Path(args.run_dir)
    model = MultimodalVAE.load(run_dir / "model")
    model.eval()
    torch.manual_seed(args.seed)
    if args.given:
        given = [g for g in args.given.split(",") if g]
        unknown = [g for g in given if g not in model.names]
        if unknown:
            raise CLIError(f"--given names unknown modality {unknown[0]!r}; the model has {model.names}")
        from .config import build_data

        data = _pick_split(build_data(_load_run_config(run_dir)), args.split)
        batch = data.batch(torch.arange(min(args.n, len(data))))
        samples = model.generate(batch, given=given, mean=not args.random)
        what = f"{len(batch)} {args.split} data points generated from {given}"
    else:
        samples = model.sample(args.n, mean=not args.random)
        what = f"{args.n} unconditional samples"
    out = Path(args.out) if args.out else run_dir / "samples.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in samples.items()}, str(out))
    print(f"{what} → {out}")
    for name, x in samples.items():
        stats = f"mean {x.float().mean().item():.4g}, std {x.float().std().item():.4g}" if x.numel() > 1 else ""
        print(f"  {name}: shape {tuple(x.shape)}, {x.dtype} {stats}")
        if x.dim() == 4 and x.shape[1] in (1, 3) and x.is_floating_point():
            png = out.with_name(f"{out.stem}_{name}.png")
            _save_grid(x, png)
            print(f"    image grid → {png}")
    return 0


def _save_grid(images, path: Path) -> None:
    """A grid of ``(N, C, H, W)`` images in [0, 1] as a PNG."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = images.detach().cpu().float().clamp(0, 1)
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = x.new_ones(c, rows * (h + 2), cols * (w + 2))
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, r * (h + 2) + 1: r * (h + 2) + 1 + h, q * (w + 2) + 1: q * (w + 2) + 1 + w] = x[i]
    img = grid.permute(1, 2, 0).numpy()
    plt.imsave(path, img[..., 0] if c == 1 else img, cmap="gray" if c == 1 else None)


def _parse_option(text: str):
    from .config import parse_value

    key, _, value = text.partition("=")
    return key.replace("-", "_"), parse_value(value)


def cmd_reproduce(args: argparse.Namespace, extra: list[str]) -> int:
    options = {}
    for item in [*args.options, *extra]:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise CLIError(f"experiment options are key=value (e.g. epochs=100), got {item!r}")
        key, value = _parse_option(item)
        options[key] = value
    try:
        from . import experiments
    except ImportError as err:
        raise CLIError(f"experiments are not available in this installation ({err})") from None
    if args.seeds is not None:
        options["seeds"] = tuple(args.seeds)
    for key in ("epochs", "aggregators", "bounds", "missing_rate", "jobs"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    out = args.out or f"runs/reproduce/{args.experiment}{'-quick' if args.quick else ''}"
    if args.figures_only:
        if options:
            raise CLIError(f"--figures-only trains nothing; drop the training options {sorted(options)}")
        records = experiments.redraw(args.experiment, out)
        print(f"{args.experiment}: table and figures redrawn from {len(records)} record(s) in {out}")
        return 0
    records = experiments.run(args.experiment, quick=args.quick, out=out, **options)
    print(f"{args.experiment}: {len(records)} run(s) → {out}")
    table = Path(out) / "table.md"
    if table.is_file():
        print(table.read_text())
    return 0


def cmd_config(args: argparse.Namespace, extra: list[str]) -> int:
    from .config import dump_config, load_named_or_path

    name, overrides = _split_positional(args.config, "config")
    config = load_named_or_path(name or "quickstart", overrides + [e for e in extra if "=" in e])
    print(dump_config(config), end="")
    return 0


# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pimvae",
        description="Multi-modal VAEs with masked variational bounds and permutation-invariant aggregation.",
        epilog="Run `pimvae COMMAND --help` for a command's options. Docs: docs/training.md.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("fit", help="train a model from a config",
                       description="Train the model a YAML config describes, writing a run directory: config.yaml "
                                   "(resolved), metrics.csv, checkpoints/last.ckpt, model/ and result.json.",
                       epilog="Overrides: key.path=value (YAML values), e.g. train.lr=3e-4 train.max_steps=2000 "
                              "model.aggregator.type=self_attention. Multi-device: train.devices=2 "
                              "train.strategy=ddp (see docs/training.md).")
    p.add_argument("config", nargs="*", metavar="CONFIG [key=value ...]",
                   help="a YAML config or an embedded name (default: quickstart), then overrides")
    p.add_argument("--run-dir", required=True, help="the run directory (created)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.ckpt")
    p.add_argument("--overwrite", action="store_true", help="delete the run already in RUN_DIR and start afresh")
    p.add_argument("--print-config", action="store_true", help="print the resolved config first")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("evaluate", help="evaluate a trained run",
                       description="Rebuild the model (RUN_DIR/model) and the data (RUN_DIR/config.yaml) and write "
                                   "an evaluation report: metrics.json, metrics.md and figures.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="output folder (default RUN_DIR/evaluation)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="data split (default test)")
    p.add_argument("--particles", type=int, default=512, help="importance samples for log-likelihoods (512)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="generate from a trained run",
                       description="Unconditional samples from the prior, or with --given the modalities "
                                   "generated from q(z | x_given) for the first N data points of a split. Written "
                                   "as safetensors (name → tensor), plus PNG grids for image modalities.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--n", type=int, default=16, help="number of samples (16)")
    p.add_argument("--given", help="comma-separated modalities to condition on")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="data split for --given")
    p.add_argument("--random", action="store_true", help="sample p(x|z) instead of taking its mean / mode")
    p.add_argument("--out", help="output file (default RUN_DIR/samples.safetensors)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("reproduce", help="run one of the paper's experiments",
                       description="Run a paper experiment (linear-dense, linear-sparse, linear-sparse-private, "
                                   "bimodal-label, five-modal) and write its table, results and figures.",
                       epilog="Extra key=value options go to pimvae.experiments.run, e.g. epochs=200 "
                              "aggregators=[poe,sum_pooling] threads=1 resume=true; validation and early "
                              "stopping: val_fraction=0.1 val_every=10 patience=10.")
    p.add_argument("experiment", metavar="EXPERIMENT")
    p.add_argument("options", nargs="*", metavar="key=value", help="options for pimvae.experiments.run")
    p.add_argument("--quick", action="store_true", help="the small size that runs in seconds")
    p.add_argument("--out", help="output folder (default runs/reproduce/EXPERIMENT)")
    p.add_argument("--seeds", type=int, nargs="+", help="data / initialisation seeds")
    p.add_argument("--epochs", type=int, help="training epochs per run (default: the experiment's budget)")
    p.add_argument("--aggregators", nargs="+", help="rows to run, e.g. poe sum_pooling (default: the paper's)")
    p.add_argument("--bounds", nargs="+", choices=["masked", "mixture"], help="bounds to run (default: both)")
    p.add_argument("--missing-rate", type=float, help="missing-completely-at-random rate η (five-modal; 0.5 in Table 2)")
    p.add_argument("--jobs", type=int, help="runs trained at a time, each in its own process (default 1); "
                                            "with threads=N each uses N torch threads")
    p.add_argument("--figures-only", action="store_true",
                   help="train nothing: redraw table.md and the figures in --out from its results.json and artifacts/")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("config", help="print a resolved config",
                       description="Print a config with every default spelled out and overrides applied.")
    p.add_argument("config", nargs="*", metavar="CONFIG [key=value ...]")
    p.set_defaults(func=cmd_config)
    return parser


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def _hoist_overrides(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Take ``pimvae reproduce``'s key=value options out of ``argv`` wherever they stand.

    ``--bounds`` and ``--aggregators`` take a list, so argparse would read ``--bounds masked priors=[...]`` as two
    bounds and fail on the second; a key=value token is an option wherever it stands, unless it is the value of a
    one-value option such as ``--out``.
    """
    argv = list(argv)
    command = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if command is None or argv[command] != "reproduce":
        return argv, []
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["reproduce"]
    one_value = {s for a in sub._actions if a.option_strings and a.nargs is None for s in a.option_strings}
    kept, hoisted = argv[: command + 1], []
    for token in argv[command + 1:]:
        if _OVERRIDE.match(token) and kept[-1] not in one_value:
            hoisted.append(token)
        else:
            kept.append(token)
    return kept, hoisted


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv, hoisted = _hoist_overrides(parser, sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    extra = [*extra, *hoisted]
    try:
        return args.func(args, extra)
    except (CLIError, ValueError) as err:
        parser.exit(2, f"pimvae {args.command}: error: {err}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
