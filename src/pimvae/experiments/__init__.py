"""The paper's synthetic experiments (SPEC §7.1–7.3), one module each, run by one function.

    from pimvae import experiments
    experiments.run("linear-dense", seeds=(0, 1), quick=True, out="runs/linear-dense")

``run`` trains the grid of aggregators × bounds (× priors, β) × seeds and writes ``table.md`` (the paper's table,
mean (std) over seeds, the published numbers beside ours), ``results.json`` (one record per run), figures and
``artifacts/`` (what the figures are drawn from, one safetensors file per run) into ``out``; ``redraw`` redraws a
folder's table and figures from those without training. Every experiment has a ``quick`` size that runs end to end
in seconds; the default sizes are the paper's, with the training budgets stated in each module (and in
``docs/results/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from .base import Budget, Column, Experiment, Row, RunData, run_grid
from .base import redraw as _redraw

__all__ = ["run", "redraw", "get", "EXPERIMENTS", "Experiment", "Budget", "Row", "Column", "RunData"]


def _registry() -> dict[str, Experiment]:
    from . import bimodal_label, five_modal, linear_dense, linear_sparse

    exps = [m.EXPERIMENT for m in (linear_dense, linear_sparse, bimodal_label, five_modal)] + [linear_sparse.PRIVATE]
    return {e.name: e for e in exps}


#: experiment names, in the order of the issue's priorities
EXPERIMENTS = ("linear-dense", "linear-sparse", "bimodal-label", "five-modal", "linear-sparse-private")


def get(name: str) -> Experiment:
    """The experiment called ``name`` (``linear-dense``, ``linear-sparse``, ``bimodal-label``, ``five-modal``,
    ``linear-sparse-private``)."""
    reg = _registry()
    key = name.lower().replace("_", "-")
    if key not in reg:
        raise ValueError(f"unknown experiment {name!r}; choose from {list(EXPERIMENTS)}")
    return reg[key]


def run(name: str, *, seeds: Sequence[int] = (0,), epochs: int | None = None, aggregators: Iterable[str] | None = None,
        bounds: Iterable[str] | None = None, quick: bool = False, out: str | Path | None = None,
        missing_rate: float | None = None, **kw) -> list[dict]:
    """Run experiment ``name`` and return its records (one dict per run); write the files into ``out``.

    Args:
        seeds: one data set and one initialisation per seed.
        epochs: training epochs per run (default: the experiment's default budget; see its module).
        aggregators: names such as ``"PoE"``, ``"sum_pooling"`` (default: the paper's rows).
        bounds: ``"masked"`` and / or ``"mixture"`` (default both).
        quick: the small size that tests run in seconds.
        out: directory for ``table.md``, ``results.json`` and figures (nothing is written when None).
        missing_rate: η for ``five-modal`` (the paper's Table 2 uses 0.5).
        **kw: ``priors`` (``"standard_normal"``, ``"gaussian_mixture"``), ``betas``, training overrides ``lr``,
            ``batch_size``, ``schedule`` (``"constant"`` / ``"cosine"``), ``warmup_steps``, ``final_lr_ratio``,
            ``kl_warmup_steps`` (KL annealing), ``grad_clip`` (global gradient-norm clipping; both
            :class:`pimvae.config.TrainConfig`); ``attention_zero_init`` (``False``: SelfAttention's blocks start
            with random residual branches, the default before session 9); ``val_fraction``, ``val_every``,
            ``patience``, ``restore_best`` (validation on a held-out part of the training split, early stopping and
            the best validation's parameters: :class:`pimvae.experiments.Budget`);
            ``target`` with ``track_every`` (record the steps and wall time to reach ``target`` of the tracked
            measure, the LLH gap for the linear experiments); ``threads``; ``verbose``.
    """
    return run_grid(get(name), seeds=seeds, epochs=epochs, aggregators=aggregators, bounds=bounds, quick=quick,
                    out=out, missing_rate=missing_rate, **kw)


def redraw(name: str, out: str | Path) -> list[dict]:
    """Rewrite ``table.md`` and the figures of experiment ``name`` in ``out`` from its ``results.json`` and the runs'
    saved ``artifacts/`` (latent scatters need those; runs without them are left out); nothing is trained."""
    return _redraw(get(name), out)
