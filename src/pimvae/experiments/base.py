"""What every paper experiment shares: names, the run grid, and the files it writes.

An :class:`Experiment` knows its data, its models (the paper's architectures), its training budgets (the
paper's reference one, our default, and a ``quick`` one for tests) and how to evaluate a trained model. The
grid runner :func:`run_grid` trains every (row, bound, β, seed) combination and writes into ``out``:

* ``results.json`` — a list with one record per run: ``aggregator``, ``prior``, ``bound``, ``beta``, ``seed``,
  the experiment's metrics, ``epochs``, ``steps``, ``wall_s`` and the training settings;
* ``table.md`` — the paper's table layout, mean (std) over seeds, with the paper's published numbers beside;
* the experiment's figures (``*.png``);
* ``artifacts/`` — what the figures are drawn from (posterior means, true latents, labels), one safetensors file
  per run, so a resumed or merged grid redraws its figures from every run of its first seed (:func:`redraw`)
  without retraining; a figure that cannot show all of them is left as it is (:func:`_figure_artifacts`).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from .. import aggregators as agg_lib
from .. import objectives as obj_lib
from ..data.dataset import MultimodalDataset
from ..model import MultimodalVAE
from ._loop import Budget, train

__all__ = ["Experiment", "Row", "Column", "RunData", "Budget", "aggregator_name", "bound_name", "run_grid", "lecun_init", "leaky_decoder", "mcc_first_canonical",
           "DISPLAY", "make_aggregator", "format_table", "write_table", "save_artifacts", "load_artifacts", "artifact_path",
           "redraw"]

# ---------------------------------------------------------------------------------------------------------------
# Names: canonical snake_case keys, the paper's display names, and forgiving parsing at the edge.
# ---------------------------------------------------------------------------------------------------------------
DISPLAY = {
    "poe": "PoE",
    "moe": "MoE",
    "mopoe": "MoPoE",
    "sum_pooling": "SumPooling",
    "self_attention": "SelfAttention",
    "sum_pooling_mixture": "SumPoolingMixture",
    "self_attention_mixture": "SelfAttentionMixture",
    "standard_normal": "N(0, I)",
    "gaussian_mixture": "mixture",
    "masked": "Our bound",
    "mixture": "Mixture bound",
}


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def aggregator_name(name: str) -> str:
    """``"SumPooling"``, ``"sum-pooling"``, ``"sum_pooling"`` → ``"sum_pooling"``; raises on an unknown name."""
    table = {_key(k): k for k in agg_lib.REGISTRY}
    if _key(name) not in table:
        raise ValueError(f"unknown aggregator {name!r}; choose from {sorted(agg_lib.REGISTRY)}")
    return table[_key(name)]


def bound_name(name: str) -> str:
    """``"masked"`` or ``"mixture"`` (or any objective of :data:`pimvae.objectives.REGISTRY`)."""
    table = {_key(k): k for k in obj_lib.REGISTRY}
    table.update({"ours": "masked", "our": "masked", "mix": "mixture"})
    if _key(name) not in table:
        raise ValueError(f"unknown bound {name!r}; choose from {sorted(obj_lib.REGISTRY)}")
    return table[_key(name)]


def prior_name(name: str) -> str:
    table = {"standardnormal": "standard_normal", "normal": "standard_normal", "gaussian": "standard_normal",
             "gaussianmixture": "gaussian_mixture", "mixture": "gaussian_mixture", "gmm": "gaussian_mixture"}
    if _key(name) not in table:
        raise ValueError(f"unknown prior {name!r}; choose 'standard_normal' or 'gaussian_mixture'")
    return table[_key(name)]


#: options for SelfAttention rows set by :func:`run_one` for the model it builds (``attention_zero_init``)
_ATTENTION_OPTIONS: dict[str, Any] = {}


def make_aggregator(name: str, feature_dim: int, latent_dim: int, width: int, num_components: int = 5,
                    activation: str = "relu") -> agg_lib.Aggregator:
    """The paper's aggregators (SPEC §3, Tables 17, 19, 20): PoE / MoE read the features as expert parameters
    (``projection=False``, ``feature_dim = 2D``); the learned ones use χ, ρ with two hidden layers of ``width``
    and an embedding of ``width``, SelfAttention one block with 4 heads and a feed-forward of ``width``."""
    cls = agg_lib.REGISTRY[name]
    if name in ("poe", "moe", "mopoe"):
        return cls(feature_dim, latent_dim, projection=False)
    options: dict[str, Any] = dict(embed_dim=width, chi_hidden=(width, width), rho_hidden=(width, width),
                                   activation=activation)
    if name.startswith("self_attention"):
        options.update(num_blocks=1, num_heads=4, ff_dim=width, **_ATTENTION_OPTIONS)
    if name.endswith("_mixture"):
        options["num_components"] = num_components
    return cls(feature_dim, latent_dim, **options)


# ---------------------------------------------------------------------------------------------------------------
# Experiment description
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One row of a paper table: an aggregator with a prior."""

    aggregator: str
    prior: str = "standard_normal"
    #: the table's label when it is not the aggregator's display name
    display: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return self.display or DISPLAY[self.aggregator]


@dataclass(frozen=True)
class Column:
    """One metric column of a table (per bound): ``metric`` of the runs with ``beta``, shown with ``fmt``."""

    metric: str
    header: str
    fmt: str = ".2f"
    beta: float = 1.0


@dataclass
class RunData:
    """The data of one seed: what is trained on, what is evaluated on, and anything the evaluation needs."""

    train: MultimodalDataset
    test: MultimodalDataset
    info: dict = field(default_factory=dict)


class Experiment:
    """Base class; subclasses set the attributes and implement :meth:`data`, :meth:`model`, :meth:`evaluate`."""

    name: str = ""
    title: str = ""
    caption: str = ""
    rows: tuple[Row, ...] = ()
    bounds: tuple[str, ...] = ("masked", "mixture")
    betas: tuple[float, ...] = (1.0,)
    columns: tuple[Column, ...] = ()
    #: (aggregator, prior, bound) → column header → (mean, std) published in the paper
    paper: dict[tuple[str, str, str], dict[str, tuple[float, float]]] = {}
    #: metrics of the generating model itself (the same for every row of a seed), printed under the table as
    #: the reference a trained model is measured against: ``(record key, description)``
    truth_metrics: tuple[tuple[str, str], ...] = ()
    #: the paper's training settings, ours (the default of ``run``), and the quick size's
    reference: Budget
    default: Budget
    quick_budget: Budget

    def data(self, seed: int, quick: bool, missing_rate: float | None = None) -> RunData:
        raise NotImplementedError

    def model(self, row: Row, data: RunData, quick: bool) -> MultimodalVAE:
        raise NotImplementedError

    def evaluate(self, model: MultimodalVAE, objective: obj_lib.Objective, data: RunData, quick: bool,
                 seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(metrics, artifacts)``: metrics go into ``results.json``; artifacts (latents, …) only to figures."""
        raise NotImplementedError

    def tracker(self, model: MultimodalVAE, data: RunData) -> Callable[[], float] | None:
        """A cheap quality measure to follow during training (for time-to-quality), or None."""
        return None

    def figures(self, records: list[dict], artifacts: list[dict], out: Path) -> list[Path]:
        return []

    def objective(self, bound: str, beta: float) -> obj_lib.Objective:
        return obj_lib.REGISTRY[bound](beta=beta)

    def published(self, records: list[dict]) -> dict:
        """The paper's numbers that the table of ``records`` is compared with."""
        return self.paper

    def select_rows(self, aggregators: Iterable[str] | None, priors: Iterable[str] | None) -> list[Row]:
        rows = list(self.rows)
        if aggregators is not None:
            wanted = [aggregator_name(a) for a in aggregators]
            rows = [r for r in rows if r.aggregator in wanted]
            default_prior = self.rows[0].prior
            rows += [Row(a, default_prior) for a in wanted if not any(r.aggregator == a for r in rows)]
        if priors is not None:
            wanted_p = [prior_name(p) for p in priors]
            rows = [r for r in rows if r.prior in wanted_p]
        if not rows:
            raise ValueError(f"no rows of {self.name} match aggregators={aggregators} priors={priors}")
        return rows


# ---------------------------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------------------------
def run_grid(exp: Experiment, *, seeds: Sequence[int] = (0,), epochs: int | None = None,
             aggregators: Iterable[str] | None = None, bounds: Iterable[str] | None = None, quick: bool = False,
             out: str | Path | None = None, missing_rate: float | None = None, priors: Iterable[str] | None = None,
             betas: Iterable[float] | None = None, lr: float | None = None, batch_size: int | None = None,
             schedule: str | None = None, warmup_steps: int | None = None, final_lr_ratio: float | None = None,
             kl_warmup_steps: int | None = None, grad_clip: float | None = None, val_fraction: float | None = None,
             val_every: int | None = None, patience: int | None = None, restore_best: bool | None = None,
             attention_zero_init: bool | None = None,
             target: float | None = None, track_every: int = 0, resume: bool = False, threads: int | None = None, jobs: int = 1, verbose: bool = True) -> list[dict]:
    """Train and evaluate every (row, bound, β, seed); return the records and write the files into ``out``.

    ``target`` with ``track_every``: follow the experiment's tracked quality measure every ``track_every`` steps
    and record ``steps_to_target`` / ``wall_to_target`` (training time only) when it first drops to ``target``.
    ``attention_zero_init``: start SelfAttention's blocks as the identity (the default, ``True``) or with random
    residual branches (``False``, the default before session 9; see :class:`pimvae.aggregators.SelfAttention`).
    ``val_fraction``, ``val_every``, ``patience``, ``restore_best``: hold out that fraction of each training split
    for validation every ``val_every`` epochs, stop after ``patience`` validations without a better bound, and end
    with the best validation's parameters (:class:`Budget`); evaluation is unchanged (the experiment's splits).
    ``resume``: keep the records already in ``out/results.json`` and run only the missing ones; the figures show
    the first seed's runs, when all their artifacts are in ``out/artifacts/``. ``threads``: torch CPU threads
    during the grid (per job).

    ``jobs``: train that many runs at a time, each in its own worker process (``spawn``) with ``threads`` torch
    threads (default: the CPU count divided by ``jobs``). Every run is seeded on its own (data by its seed, the
    initialisation by :func:`run_one`), so the records are those of ``jobs=1``, in the same order; results are
    written as each run finishes, so an interrupted grid resumes with ``resume=True``. A run that fails cancels the
    runs not yet started, keeps those already running, and is raised once they have finished.
    """
    rows = exp.select_rows(aggregators, priors)
    bounds = [bound_name(b) for b in (exp.bounds if bounds is None else bounds)]
    betas = list(exp.betas if betas is None else betas)
    base = exp.quick_budget if quick else exp.default
    budget = base.replace(epochs=epochs, lr=lr, batch_size=batch_size, schedule=schedule, warmup_steps=warmup_steps,
                          final_lr_ratio=final_lr_ratio, kl_warmup_steps=kl_warmup_steps, grad_clip=grad_clip,
                          val_fraction=val_fraction, val_every=val_every, patience=patience, restore_best=restore_best)
    out = None if out is None else Path(out)
    records: list[dict] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume and (out / "results.json").is_file():
            records = json.loads((out / "results.json").read_text())
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    done = {_run_key(r) for r in records}
    cells = [(seed, row, bound, beta) for seed in seeds for row in rows for bound in bounds for beta in betas
             if _run_key({"aggregator": row.aggregator, "prior": row.prior, "bound": bound, "beta": beta,
                          "seed": seed, "missing_rate": missing_rate or 0.0}) not in done]
    kept = len(records)
    finished: dict[int, tuple[dict, dict]] = {}  # cell index → (record, artifacts)

    def finish(i: int, rec: dict, art: dict) -> None:
        seed, row, bound, beta = cells[i]
        finished[i] = (rec, art)
        if verbose:
            shown = {k: v for k, v in rec.items() if k in art["metric_keys"] and isinstance(v, (int, float))}
            print(f"[{exp.name}] seed={seed} {row.aggregator}/{row.prior} {bound} β={beta}: "
                  + ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
                  + f" ({rec['steps']} steps, {rec['wall_s']:.1f}s)", flush=True)
        if out is not None:  # keep what is done so far if a long grid is interrupted
            write_results(records[:kept] + [finished[j][0] for j in sorted(finished)], out)
            save_artifacts(art, artifact_path(out, rec))

    args = (budget, quick, target, track_every, missing_rate, attention_zero_init)
    if jobs == 1 or len(cells) <= 1:
        previous_threads = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            data, data_seed = None, None
            for i, (seed, row, bound, beta) in enumerate(cells):
                if seed != data_seed:
                    data, data_seed = exp.data(seed, quick, missing_rate), seed
                finish(i, *_run_cell(exp, data, seed, row, bound, beta, *args))
        finally:
            torch.set_num_threads(previous_threads)
    else:
        per_job = threads if threads is not None else max(1, (os.cpu_count() or 1) // jobs)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(cells)), mp_context=context,
                                 initializer=_worker_init, initargs=(per_job,)) as pool:
            futures = {pool.submit(_run_cell, exp, None, *cell, *args): i for i, cell in enumerate(cells)}
            error: BaseException | None = None
            for future in as_completed(futures):  # a failed run cancels the pending ones; the running ones are kept
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    error = error or future.exception()
                    for pending in futures:
                        pending.cancel()
                    continue
                finish(futures[future], *future.result())
        if error is not None:
            raise error
    records = records[:kept] + [finished[i][0] for i in sorted(finished)]
    artifacts = _saved_artifacts(records[:kept], out) + [finished[i][1] for i in sorted(finished)]
    if out is not None:
        write_results(records, out)
        (out / "table.md").write_text(format_table(exp, records, budget))
        exp.figures(records, _figure_artifacts(records, artifacts, out), out)
        validation_figure(records, out)
    return records


def validation_curve(record: Mapping) -> tuple[list[int], list[float]]:
    """``(steps, bounds)`` of a run's validations, from its per-epoch ``val_bound`` (``None`` where the epoch had
    none); an epoch is ``ceil(train_size / batch_size)`` steps."""
    per_epoch = -(-int(record["train_size"]) // int(record["budget"]["batch_size"]))
    pairs = [((e + 1) * per_epoch, v) for e, v in enumerate(record.get("val_bound") or []) if v is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]


def validation_figure(records: Sequence[Mapping], out: str | Path) -> Path | None:
    """``out/validation.png``: the validation bound over training of the first seed's runs that validated (the
    dot: the step whose parameters were kept); nothing when no run validated."""
    runs = [r for r in records if r.get("val_bound")]
    if not runs:
        return None
    from ..evaluation.figures import validation_curves

    first = min(int(r["seed"]) for r in runs)
    curves = {}
    for r in runs:
        if int(r["seed"]) == first:
            label = f"{DISPLAY.get(r['aggregator'], r['aggregator'])}, {DISPLAY.get(r['prior'], r['prior'])}, " \
                    f"{DISPLAY.get(r['bound'], r['bound'])}" + (f", β={r['beta']:g}" if r["beta"] != 1 else "")
            curves[label] = (*validation_curve(r), r.get("best_step") if r.get("restored_best") else None)
    eta = runs[0].get("missing_rate") or 0
    return validation_curves(curves, Path(out) / "validation.png",
                             title=f"{runs[0].get('experiment', '')}, seed {first}" + (f", η = {eta:g}" if eta else "")
                             + ": bound on the validation part; dot = parameters kept")


# ---------------------------------------------------------------------------------------------------------------
# Artifacts: what the figures are drawn from, kept per run beside results.json
# ---------------------------------------------------------------------------------------------------------------
ARTIFACTS_FORMAT = "pimvae-artifacts"


def artifact_path(out: str | Path, record: Mapping) -> Path:
    """``out/artifacts/<aggregator>-<prior>-<bound>-beta<β>-eta<η>-seed<seed>.safetensors`` for ``record``."""
    agg, prior, bound, beta, seed, eta = _run_key(record)
    return Path(out) / "artifacts" / f"{agg}-{prior}-{bound}-beta{beta:g}-eta{eta:g}-seed{seed}.safetensors"


def save_artifacts(artifacts: Mapping, path: str | Path) -> Path | None:
    """Write a run's artifacts atomically: tensors and arrays as safetensors, the rest (names, β, seed, …) as
    JSON in the file's metadata. Nothing is written (``None``) when there is no tensor to keep."""
    from safetensors.torch import save_file

    from ..io import _atomic_write

    tensors = {k: torch.as_tensor(v).detach().cpu().contiguous() for k, v in artifacts.items()
               if isinstance(v, (torch.Tensor, np.ndarray))}
    if not tensors:
        return None
    fields = {k: v for k, v in artifacts.items() if k not in tensors}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": ARTIFACTS_FORMAT, "fields": json.dumps(_jsonable(fields))}
    _atomic_write(path, lambda p: save_file(tensors, p, metadata=meta))
    return path


def load_artifacts(path: str | Path) -> dict:
    """A run's artifacts as written by :func:`save_artifacts` (no unpickling); ``ValueError`` naming the file if it
    is missing, unreadable or not pimvae's."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"artifacts file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # owned, not a view of the mapped file
        fields = json.loads(meta.get("fields", "null"))
    except Exception as err:  # safetensors raises its own error types for truncated or foreign files
        raise ValueError(f"artifacts file {path} is unreadable ({type(err).__name__}: {err})") from None
    if meta.get("format") != ARTIFACTS_FORMAT or not isinstance(fields, dict):
        raise ValueError(f"artifacts file {path} is not a pimvae artifacts file")
    return {**fields, **tensors}


def _saved_artifacts(records: Sequence[Mapping], out: Path | None) -> list[dict]:
    """The saved artifacts of ``records``, in their order; missing files are skipped, unreadable ones warned of."""
    if out is None:
        return []
    found = []
    for r in records:
        path = artifact_path(out, r)
        if not path.is_file():
            continue
        try:  # files written before artifacts held their missing rate: the record's, whose path it is
            found.append({"missing_rate": float(r.get("missing_rate", 0.0)), **load_artifacts(path)})
        except ValueError as err:
            warnings.warn(f"{err}; its run is left out of the figures", stacklevel=3)
    return found


def _figure_artifacts(records: Sequence[Mapping], artifacts: Sequence[Mapping], out: Path) -> list[dict]:
    """What the figures are drawn from: the artifacts of the records' first seed, all of them or none.

    A folder whose first seed's runs have not all kept their artifacts (a merged folder whose ``artifacts/`` was
    removed, say) gets none, so its latent figures are left as they are rather than redrawn with some of the runs
    or from another seed; a warning names the runs without artifacts. Runs with no arrays to keep (the
    linear-Gaussian experiments, whose figures are drawn from the records) are not affected."""
    artifacts = [a for a in artifacts if any(isinstance(v, (torch.Tensor, np.ndarray)) for v in a.values())]
    if not records or not artifacts:  # only arrays are saved, so only runs with arrays count as having artifacts
        return []
    first = min(int(r["seed"]) for r in records)
    have = {_run_key(a) for a in artifacts}
    wanted = [r for r in records if int(r["seed"]) == first]
    missing = [r for r in wanted if _run_key(r) not in have]
    if missing:
        names = ", ".join(artifact_path(out, r).name for r in missing)
        warnings.warn(f"{len(missing)} run(s) of seed {first} in {out} have no artifacts ({names}); "
                      "the latent figures are left as they are", stacklevel=3)
        return []
    return [a for a in artifacts if int(a["seed"]) == first]


def redraw(exp: Experiment, out: str | Path) -> list[dict]:
    """Rewrite ``table.md`` and the figures in ``out`` from its ``results.json`` and ``artifacts/``; train nothing.
    Returns the records."""
    out = Path(out)
    path = out / "results.json"
    if not path.is_file():
        raise ValueError(f"{out} has no results.json to redraw from")
    records = [r for r in json.loads(path.read_text()) if r.get("experiment", exp.name) == exp.name]
    if not records:
        raise ValueError(f"{path} holds no {exp.name} records")
    write_table(exp, records, out)
    exp.figures(records, _figure_artifacts(records, _saved_artifacts(records, out), out), out)
    validation_figure(records, out)
    return records


_WORKER_DATA: dict[tuple, RunData] = {}  # a worker process's data sets, by (experiment, seed, quick, η)


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)
    # A worker whose grid process dies (killed, say) ends too, rather than train on for nobody.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="pimvae-parent-watch").start()


def _exit_with(parent) -> None:
    parent.join()  # returns once the parent process has ended
    os._exit(1)


def _run_cell(exp: Experiment, data: RunData | None, seed: int, row: Row, bound: str, beta: float, budget: Budget,
              quick: bool, target: float | None, track_every: int, missing_rate: float | None,
              attention_zero_init: bool | None = None) -> tuple[dict, dict]:
    """One cell of the grid; ``data=None`` (in a worker process): generated once per seed and kept."""
    if data is None:
        key = (exp.name, seed, quick, missing_rate)
        if key not in _WORKER_DATA:
            _WORKER_DATA.clear()  # cells come seed-major: one data set at a time is enough
            _WORKER_DATA[key] = exp.data(seed, quick, missing_rate)
        data = _WORKER_DATA[key]
    rec, art = run_one(exp, data, row, bound, beta, seed, budget, quick, target, track_every, attention_zero_init)
    rec["missing_rate"] = art["missing_rate"] = missing_rate or 0.0
    return rec, art


def _run_key(r: Mapping) -> tuple:
    return (r["aggregator"], r["prior"], r["bound"], float(r["beta"]), int(r["seed"]), float(r.get("missing_rate", 0.0)))


def run_one(exp: Experiment, data: RunData, row: Row, bound: str, beta: float, seed: int, budget: Budget,
            quick: bool = False, target: float | None = None, track_every: int = 0,
            attention_zero_init: bool | None = None) -> tuple[dict, dict]:
    """Build, train and evaluate one model; return its record and its artifacts (for figures)."""
    torch.manual_seed(seed)
    if attention_zero_init is not None:
        _ATTENTION_OPTIONS["zero_init_blocks"] = bool(attention_zero_init)
    try:
        model = exp.model(row, data, quick)
    finally:
        _ATTENTION_OPTIONS.clear()
    zero_init = [m.zero_init_blocks for m in model.modules() if hasattr(m, "zero_init_blocks")]
    objective = exp.objective(bound, beta)
    tracking = target is not None and track_every > 0
    trace: list[tuple[int, float, float]] = []
    measure = exp.tracker(model, data) if tracking else None
    if tracking and measure is None:
        raise ValueError(f"{exp.name} has no tracked quality measure for `target`")

    def track(step: int, wall: float) -> None:
        trace.append((step, round(wall, 3), measure()))

    log = train(model, objective, data.train, budget, seed=seed, callback=track if tracking else None,
                callback_every=track_every)
    t0 = time.perf_counter()
    metrics, art = exp.evaluate(model, objective, data, quick, seed)
    rec = {"experiment": exp.name, "aggregator": row.aggregator, "prior": row.prior, "bound": bound, "beta": beta,
           "seed": seed, **metrics, "epochs": log.epochs, "steps": log.steps, "wall_s": round(log.wall_s, 2),
           "eval_s": round(time.perf_counter() - t0, 2), "final_loss": log.loss[-1] if log.loss else None,
           "budget": asdict(budget), "threads": torch.get_num_threads()}
    if budget.validates:  # where the run stopped and which parameters it ended with
        rec.update(train_size=log.train_size, stopped_early=log.stopped_early, restored_best=log.restored_best,
                   best_val_bound=log.best.get("bound"), best_epoch=log.best.get("epoch"),
                   best_step=log.best.get("step"), val_bound=log.val_bound)
    if zero_init:  # SelfAttention: whether its blocks started as the identity
        rec["zero_init_blocks"] = zero_init[0]
    if tracking:
        hit = next(((s, w) for s, w, v in trace if v <= target), (None, None))
        rec.update(target=target, steps_to_target=hit[0], wall_to_target=hit[1], trace=trace)
    art = {"aggregator": row.aggregator, "prior": row.prior, "bound": bound, "beta": beta, "seed": seed,
           "metric_keys": list(metrics), **art}
    return rec, art


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_results(records: list[dict], out: Path) -> Path:
    path = out / "results.json"
    path.write_text(json.dumps(_jsonable(records), indent=1))
    return path


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float | None]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), None
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def _cell(values: list[float], fmt: str) -> str:
    if not values:
        return ""
    mean, std = _mean_std(values)
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:{fmt}} ({std:{fmt}})" if std is not None else f"{mean:{fmt}}"


def _validation_note(budget: Budget, records: list[dict]) -> str:
    """What the table's runs did with their validation part, for the table's training line."""
    best = sorted({r["best_step"] for r in records if r.get("best_step") is not None})
    stopped = sum(bool(r.get("stopped_early")) for r in records)
    return (f"; {budget.val_fraction:g} of the training split held out for validation every {budget.val_every} "
            f"epoch(s)" + (f", early stopping after {budget.patience} validations without a better bound "
                           f"({stopped} of {len(records)} runs stopped early)" if budget.patience else "")
            + (f", the best validation's parameters restored (best at steps {best[0]}–{best[-1]})"
               if budget.restore_best and best else ""))


def format_table(exp: Experiment, records: list[dict], budget: Budget | None = None) -> str:
    """The paper's table for ``records``: one line per row, metric columns grouped by bound; each cell is our
    mean (std over seeds) with the paper's published mean (std) in brackets."""
    bounds = [b for b in exp.bounds if any(r["bound"] == b for r in records)]
    bounds += [b for b in dict.fromkeys(r["bound"] for r in records) if b not in bounds]
    rows = [row for row in exp.rows if any(r["aggregator"] == row.aggregator and r["prior"] == row.prior for r in records)]
    rows += [Row(r["aggregator"], r["prior"]) for r in records if Row(r["aggregator"], r["prior"]) not in rows]
    rows = list(dict.fromkeys(rows))
    seeds = sorted({r["seed"] for r in records})
    columns = [c for c in exp.columns if any(abs(r["beta"] - c.beta) < 1e-12 and c.metric in r for r in records)]
    published = exp.published(records)
    multi_prior = len({row.prior for row in rows}) > 1 or any(row.prior != "standard_normal" for row in rows)

    row_seeds = {(row, b): sorted({r["seed"] for r in records if r["aggregator"] == row.aggregator
                                   and r["prior"] == row.prior and r["bound"] == b}) for row in rows for b in bounds}
    row_seeds = {k: v for k, v in row_seeds.items() if v}
    uneven = len({tuple(v) for v in row_seeds.values()}) > 1  # rows run on different seeds: say which, per row

    lines = [f"# {exp.title}", "", exp.caption, ""]
    over = (f"the seeds in the Seeds column (rows were run on different seeds; {len(seeds)} in all: {seeds})"
            if uneven else f"{len(seeds)} seed(s) {seeds}")
    lines.append(f"Ours: mean (std) over {over}; the paper's published mean (std) in "
                 "[brackets]. A std is shown only with more than one seed.")
    if budget is not None:
        steps = sorted({r["steps"] for r in records})
        lines.append(f"Training: {budget.epochs} epochs (steps per run: {', '.join(map(str, steps))}), batch "
                     f"{budget.batch_size}, Adam lr {budget.lr:g}, schedule {budget.schedule}"
                     + (f" (warm-up {budget.warmup_steps} steps)" if budget.warmup_steps else "")
                     + (f", KL warm-up {budget.kl_warmup_steps} steps" if budget.kl_warmup_steps else "")
                     + (f", gradient norm clipped at {budget.grad_clip:g}" if budget.grad_clip else "")
                     + (_validation_note(budget, records) if budget.validates else "")
                     + f". The paper: {exp.reference.epochs} epochs, batch {exp.reference.batch_size}, "
                     f"Adam lr {exp.reference.lr:g}.")
    lines.append("")
    head = ["Aggregation"] + (["Prior"] if multi_prior else []) + (["Seeds"] if uneven else [])
    for b in bounds:
        head += [f"{DISPLAY.get(b, b)}: {c.header}" for c in columns]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for row in rows:
        cells = [row.label] + ([DISPLAY[row.prior]] if multi_prior else [])
        if uneven:
            cells.append(_seeds_cell({b: row_seeds[row, b] for b in bounds if (row, b) in row_seeds}))
        for b in bounds:
            paper = published.get((row.aggregator, row.prior, b), {})
            for c in columns:
                vals = [r[c.metric] for r in records if r["aggregator"] == row.aggregator and r["prior"] == row.prior
                        and r["bound"] == b and abs(r["beta"] - c.beta) < 1e-12 and c.metric in r]
                cell = _cell(vals, c.fmt) if vals else "–"
                if c.header in paper:
                    pm, ps = paper[c.header]
                    cell += f" [{pm:{c.fmt}} ({ps:{c.fmt}})]"
                cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    truth = _truth_line(exp, records)
    if truth:
        lines += [truth, ""]
    extra = exp_extra_table(exp, records, rows, bounds)
    if extra:
        lines += extra
    lines.append(f"_Generated by `pimvae.experiments.run({exp.name!r}, …)` on {platform.machine()} with torch "
                 f"{torch.__version__}, {time.strftime('%Y-%m-%d')}._")
    return "\n".join(lines) + "\n"


def write_table(exp: Experiment, records: list[dict], out: Path) -> Path:
    """Write ``out/table.md`` for ``records``; its training line is the records' budget when they share one."""
    budgets = {Budget(**r["budget"]) for r in records if "budget" in r}
    path = Path(out) / "table.md"
    path.write_text(format_table(exp, records, budgets.pop() if len(budgets) == 1 else None))
    return path


def _seeds_cell(per_bound: dict[str, list[int]]) -> str:
    """The Seeds cell of a row: its seeds, or each bound's where the row's bounds were run on different seeds."""
    lists = {b: ", ".join(map(str, s)) for b, s in per_bound.items()}
    if len(set(lists.values())) == 1:
        return next(iter(lists.values()))
    return "; ".join(f"{DISPLAY.get(b, b)}: {v}" for b, v in lists.items())


def _truth_line(exp: Experiment, records: list[dict]) -> str:
    """The line "The generating model itself: …" from ``exp.truth_metrics`` (mean over the seeds' data sets)."""
    per_seed = {}
    for r in records:
        per_seed.setdefault((r["seed"], r.get("missing_rate")), r)
    parts = []
    for key, description in exp.truth_metrics:
        mean, _ = _mean_std([r.get(key) for r in per_seed.values() if isinstance(r.get(key), (int, float))])
        if math.isfinite(mean):
            parts.append(f"{description} **{mean:.3g}** (`{key}`)")
    if not parts:
        return ""
    return ("The generating model itself, on the same data (mean over the seeds' data sets): " + "; ".join(parts)
            + ". No encoder's MCC can exceed its posterior mean's (up to sampling error).")


def exp_extra_table(exp: Experiment, records: list[dict], rows: list[Row], bounds: list[str]) -> list[str]:
    """Other scalar metrics per (row, bound, β): mean over seeds, plus steps and wall time."""
    skip = {"seed", "beta", "epochs", "threads", "missing_rate", "target"} | {c.metric for c in exp.columns}
    keys = [k for k in dict.fromkeys(k for r in records for k, v in r.items()
                                     if isinstance(v, (int, float)) and not isinstance(v, bool)) if k not in skip]
    if not keys:
        return []
    betas = sorted({r["beta"] for r in records}, reverse=True)
    lines = ["## All scalar metrics (mean over seeds)", "",
             "| Aggregation | Prior | Bound | β | " + " | ".join(keys) + " |", "|" + "---|" * (4 + len(keys))]
    for row in rows:
        for b in bounds:
            for beta in betas:
                rs = [r for r in records if r["aggregator"] == row.aggregator and r["prior"] == row.prior
                      and r["bound"] == b and r["beta"] == beta]
                if not rs:
                    continue
                cells = []
                for k in keys:
                    mean, _ = _mean_std([r.get(k) for r in rs if isinstance(r.get(k), (int, float))])
                    cells.append("" if not math.isfinite(mean) else f"{mean:.4g}")
                lines.append(f"| {row.label} | {DISPLAY[row.prior]} | {b} | {beta:g} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def rate_records(records: list[dict]) -> list[dict]:
    """Flatten the per-subset ``rates`` lists of records into records for
    :func:`pimvae.evaluation.figures.rate_distortion_bars` (hue: aggregator / bound, and ``"β"`` — e.g.
    ``"β = 0.1"`` — when the records hold more than one β, as in the paper's Figure 5)."""
    several = len({r["beta"] for r in records if r.get("rates")}) > 1
    out = []
    for r in records:
        for s in r.get("rates", []):
            out.append({**s, "aggregator": DISPLAY.get(r["aggregator"], r["aggregator"]),
                        "objective": DISPLAY.get(r["bound"], r["bound"]), "seed": r["seed"],
                        **({"β": f"β = {r['beta']:g}"} if several else {})})
    return out


def oracle_reference(truth, ds, num_particles: int, seed: int, label: str | None = None) -> dict[str, float]:
    """What the generating model itself scores on ``ds``: ``llh_true`` (mean importance-sampled ``log p(x_O)``),
    and the MCCs of its posterior mean ``E[z | x_O]``: ``mcc_cca1_truth`` (first CCA component, as ``mcc_cca1``)
    and ``mcc_truth`` (weak, all components).

    ``mcc_cca1_truth`` is a ceiling for ``mcc_cca1`` (up to sampling error in the CCA fit): for any direction
    ``a``, no function ``h(x_O)`` correlates with ``aᵀz`` better than ``E[aᵀz | x_O] = aᵀE[z | x_O]``, so no
    encoder's canonical correlation exceeds that of the posterior mean.
    """
    from .. import evaluation as ev
    from ._oracle import oracle_posterior

    llh, mean, _ = oracle_posterior(truth, ds, num_particles=num_particles, seed=seed, label=label)
    z = ds.extras["z"]
    return {"llh_true": float(llh.mean()), "mcc_cca1_truth": mcc_first_canonical(z, mean),
            "mcc_truth": ev.mcc(z, mean, "weak")}


def mcc_first_canonical(true, inferred, fit_fraction: float = 0.5) -> float:
    """The MCC the paper's reference code reports for the non-linear models: CCA with a single component, fitted
    on the first ``fit_fraction`` of the rows and scored on the rest — the largest canonical correlation between
    true and inferred latents. :func:`pimvae.evaluation.mcc` ``"weak"`` (SPEC §6) uses all components, a
    stricter measure; both are reported."""
    from sklearn.cross_decomposition import CCA

    t = torch.as_tensor(true).double().numpy()
    z = torch.as_tensor(inferred).double().numpy()
    n_fit = int(round(fit_fraction * len(t)))
    cca = CCA(n_components=1, max_iter=2000).fit(t[:n_fit], z[:n_fit])
    a, b = cca.transform(t[n_fit:], z[n_fit:])
    return float(abs(np.corrcoef(a[:, 0], b[:, 0])[0, 1]))


def leaky_decoder(latent_dim: int, hidden: int, out_dim: int, negative_slope: float = 0.1) -> torch.nn.Module:
    """``z → hidden → out`` with one LeakyReLU(``negative_slope``): the reference code's injective MLP decoder,
    with the slope of the generating maps (``torch.nn.LeakyReLU``'s default of 0.01 could not represent them)."""
    return torch.nn.Sequential(torch.nn.Linear(latent_dim, hidden), torch.nn.LeakyReLU(negative_slope),
                               torch.nn.Linear(hidden, out_dim))


def lecun_init(module: torch.nn.Module) -> torch.nn.Module:
    """Re-initialise every ``nn.Linear`` as Flax's ``Dense`` does (the paper's JAX code): kernels from a truncated
    normal with variance ``1 / fan_in``, biases zero. PyTorch's default (variance ``1 / (3 fan_in)`` and random
    biases) shrinks the signal three times more per layer, and the paper's encoders stack up to nine layers
    (feature MLP, χ, ρ): their initial output then hardly depends on the input, and the decoder collapses
    latent dimensions before the encoder has learned anything. Layers marked ``zero_init`` (the residual branches
    of :class:`pimvae.aggregators.AttentionBlock` with ``zero_init``) are set to zero instead."""
    for m in module.modules():
        if isinstance(m, torch.nn.Linear) and getattr(m, "zero_init", False):  # starts at zero by design
            torch.nn.init.zeros_(m.weight)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.Linear):
            std = (1.0 / m.in_features) ** 0.5 / 0.87962566103423978  # truncation at ±2σ shrinks the std
            torch.nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    return module


def cluster_prior(name: str, latent_dim: int, num_clusters: int):
    """The prior of a row of the identifiable-model tables: N(0, I) or a learned Gaussian mixture."""
    from ..priors import GaussianMixture, StandardNormal

    return StandardNormal(latent_dim) if name == "standard_normal" else GaussianMixture(latent_dim, num_clusters)


def identifiability_metrics(model: MultimodalVAE, objective: obj_lib.Objective, data: RunData,
                            seed: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The metrics shared by the non-linear identifiable-model tables, on ``data.test``.

    ``llh`` (importance-sampled, ``data.info["particles"]``), ``lower_bound`` (frozen, ``data.info["draws"]``),
    ``mcc_cca1`` (the reference code's MCC), ``mcc`` (weak, all CCA components), and the generating model's own
    ``llh_true``, ``mcc_cca1_truth``, ``mcc_truth`` (from :func:`oracle_reference`); returns them with the true
    latents and the posterior means.
    """
    from .. import evaluation as ev

    test = data.test
    llh = ev.log_likelihood(model, test, num_particles=data.info["particles"], seed=seed)
    bound = ev.evaluate_bound(model, test, objective, num_draws=data.info["draws"], seed=seed)["bound"]
    z = test.extras["z"]
    mean = ev.latents(model, test)
    metrics = {"llh": float(llh.mean()), "lower_bound": float(bound.mean()), "mcc_cca1": mcc_first_canonical(z, mean),
               "mcc": ev.mcc(z, mean, "weak"),
               **{k: data.info[k] for k in ("llh_true", "mcc_cca1_truth", "mcc_truth")}}
    return metrics, z, mean
