"""``fit``: train a model with an objective on in-memory data, through a ``lightning.Trainer``.

A run directory (optional) receives ``metrics.csv`` (and ``tensorboard/`` when installed), ``checkpoints/last.ckpt``
(every ``checkpoint_every_n_steps`` steps and at the end), ``model/`` (``model.save``) and ``result.json``.
:func:`fit_config` does the same from a :class:`~pimvae.config.RunConfig` and adds ``config.yaml``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from ..config import RunConfig, TrainConfig, build_data, build_model, build_objective, dump_config
from ..data import MultimodalDataset
from ..model import MultimodalVAE
from .checkpoint import AtomicCheckpointIO, load_checkpoint
from .logs import MetricsWriter, ProgressBar
from .module import TrainingModule

__all__ = ["FitResult", "fit", "fit_config", "checkpoint_path", "is_rank_zero"]


@dataclass
class FitResult:
    """What a run did: optimisation ``steps``, ``epochs`` (a partial last epoch counts), ``wall_s`` of this call,
    and ``history``: one entry per epoch ``{epoch, step, train_loss, val_bound}`` (``val_bound``: the mean bound
    over the validation set with the epoch's final parameters, ``None`` without validation). ``best``: the
    validation with the highest bound, ``{bound, epoch, step}`` (all ``None`` without validation);
    ``restored_best``: whether the model holds that validation's parameters (``TrainConfig.restore_best``)."""

    steps: int
    epochs: int
    wall_s: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    best: dict = field(default_factory=lambda: {"bound": None, "epoch": None, "step": None})
    restored_best: bool = False
    run_dir: str | None = None
    checkpoint: str | None = None

    @property
    def train_loss(self) -> list[float]:
        return [h["train_loss"] for h in self.history]

    @property
    def val_bound(self) -> list[float | None]:
        return [h["val_bound"] for h in self.history]

    def to_dict(self) -> dict:
        return asdict(self)


def checkpoint_path(run_dir: str | Path) -> Path:
    """Where a run keeps its latest checkpoint."""
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def is_rank_zero() -> bool:
    """Whether this process is global rank 0, from the launcher's environment (before any Trainer exists):
    torchrun / Lightning (``RANK``; ``LOCAL_RANK`` + ``NODE_RANK``), SLURM, MPI."""
    for var in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "JSM_NAMESPACE_RANK"):
        if var in os.environ:
            return int(os.environ[var]) == 0
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


class _Checkpoints(Callback):
    """Saves ``last.ckpt`` every ``every`` steps and when training ends (after checking the NaN guard)."""

    def __init__(self, path: Path, every: int | None):
        self.path, self.every = path, every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer, pl_module)

    def save(self, trainer, pl_module: TrainingModule) -> None:
        pl_module.prepare_checkpoint()  # raises on a non-finite step: nothing bad is ever written
        trainer.save_checkpoint(self.path)


@contextlib.contextmanager
def _quiet_lightning():
    """Silence Lightning's start-up banners and hints that do not apply to in-memory tensor data."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
            warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
            warnings.filterwarnings("ignore", message=".*on_epoch=True.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def fit(
    model: MultimodalVAE,
    objective,
    train: MultimodalDataset,
    val: MultimodalDataset | None = None,
    config: TrainConfig = TrainConfig(),
    run_dir: str | Path | None = None,
    *,
    resume: bool | str | Path = False,
    callbacks: Sequence[Callback] = (),
    trainer_options: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` with ``objective``; validate on ``val`` each epoch.

    Args:
        model, objective: any :class:`~pimvae.MultimodalVAE` and pimvae objective; ``model`` is trained in place.
        train, val: :class:`~pimvae.data.MultimodalDataset` (modality names as the model's).
        config: a :class:`~pimvae.config.TrainConfig`.
        run_dir: where metrics, checkpoints and the saved model go (``None``: nothing is written and no
            checkpoint is taken).
        resume: ``True`` to continue from ``<run_dir>/checkpoints/last.ckpt``, or a checkpoint path. The
            model, objective, data and config must be those of the interrupted run; the result is then the
            same, to the bit on CPU, as an uninterrupted run.
        callbacks: extra Lightning callbacks. ``trainer_options``: extra ``lightning.Trainer`` arguments.

    Raises:
        NonFiniteError: a loss or gradient became NaN/Inf (the message names the step and the terms).
        CheckpointError: the checkpoint to resume from is missing or corrupt.
    """
    if not isinstance(model, MultimodalVAE):
        raise TypeError(f"model must be a pimvae.MultimodalVAE, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a pimvae.config.TrainConfig, got {type(config).__name__}")
    for name, ds in (("train", train), ("val", val)):
        if ds is None:
            continue
        if not isinstance(ds, MultimodalDataset):
            raise TypeError(f"{name} must be a pimvae.data.MultimodalDataset, got {type(ds).__name__}")
        if ds.names != model.names:
            raise ValueError(f"{name} data has modalities {ds.names}; the model has {model.names} (same order)")
    if config.early_stopping_patience is not None and val is None:
        raise ValueError("train.early_stopping_patience needs validation data (val)")
    if config.restore_best and val is None:
        raise ValueError("train.restore_best needs validation data (val)")
    if resume and run_dir is None and resume is True:
        raise ValueError("resume=True needs the run_dir of the interrupted run (or pass a checkpoint path)")

    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_path = None
    resume_step, resume_epochs = None, set()
    if resume:
        ckpt_path = checkpoint_path(run_dir) if resume is True else Path(resume)
        state = load_checkpoint(ckpt_path)  # a clear error if missing or corrupt
        resume_step = int(state["global_step"])
        resume_epochs = {int(h["epoch"]) for h in state["pimvae"]["history"]}
        del state
    writer = None  # created by global rank 0 once the Trainer knows the ranks
    if run_dir is not None:
        def writer():
            return MetricsWriter(run_dir, resume_step, tensorboard=config.tensorboard, resume_epochs=resume_epochs)

    # a redrawn bar on a terminal, one line per logging window otherwise (files, CI logs)
    bar = config.progress_bar and sys.stderr.isatty()
    module = TrainingModule(model, objective, train, val, config, writer, print_lines=config.progress_bar and not bar)
    cbs: list[Callback] = []
    if bar:
        cbs.append(ProgressBar(refresh_rate=max(1, min(10, config.log_every_n_steps))))
    if run_dir is not None:
        cbs.append(_Checkpoints(checkpoint_path(run_dir), config.checkpoint_every_n_steps))
    cbs.extend(callbacks)
    options = dict(
        accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes, strategy=config.strategy,
        precision=config.precision, max_steps=config.max_steps or -1,
        max_epochs=config.max_epochs if config.max_epochs is not None else -1,
        logger=False, enable_checkpointing=False, enable_progress_bar=bar,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=cbs,
        plugins=[AtomicCheckpointIO()], use_distributed_sampler=False,
        default_root_dir=str(run_dir) if run_dir is not None else None,
    )
    options.update(trainer_options or {})
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    t0 = time.perf_counter()
    try:
        with _quiet_lightning():
            trainer = pl.Trainer(**options)
            trainer.fit(module, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    finally:
        torch.set_num_threads(threads)
        module.restore_beta()
    wall = time.perf_counter() - t0
    restored = config.restore_best and module.restore_best_state()
    if module.writer is not None:
        module.writer.close()
    result = FitResult(
        steps=trainer.global_step, epochs=trainer.current_epoch, wall_s=wall, history=module.history,
        stopped_early=bool(module.early_stop["stopped"]), best=dict(module.best), restored_best=restored,
        run_dir=None if run_dir is None else str(run_dir),
        checkpoint=None if run_dir is None else str(checkpoint_path(run_dir)),
    )
    if run_dir is not None and trainer.is_global_zero:
        model.save(run_dir / "model")
        (run_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def fit_config(config: RunConfig, run_dir: str | Path | None = None, *, resume: bool | str | Path = False,
               **options) -> tuple[MultimodalVAE, FitResult]:
    """Build the data, model and objective a :class:`RunConfig` describes and :func:`fit` them.

    The model is initialised after ``torch.manual_seed(config.train.seed)``. With ``run_dir`` the resolved config
    is written to ``<run_dir>/config.yaml`` (before training, so a killed run can be resumed from it).
    """
    splits = build_data(config)
    torch.manual_seed(config.train.seed)
    model = build_model(config, splits.train)
    objective = build_objective(config)
    if run_dir is not None and is_rank_zero():
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        dump_config(config, Path(run_dir) / "config.yaml")
    result = fit(model, objective, splits.train, splits.val, config.train, run_dir, resume=resume, **options)
    return model, result
