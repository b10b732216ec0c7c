"""The Lightning training plan: optimises ``objective(model, batch).loss`` and logs — nothing else.

The model and the objective know nothing about Lightning; this module wires them to a ``lightning.Trainer``:
Adam with warm-up and cosine decay, gradient clipping, a deferred NaN/Inf guard, per-rank seeding, sharded
in-memory batches, metric accumulation without host synchronisation, and the extra checkpoint state that makes a
resumed run exact.

Randomness. Every training step first seeds the global generators from ``(seed, rank, step)``, so the subsets
and reparameterisation noise of a step depend on nothing else: not on how many processes ran before, nor on
whether the run was interrupted. Each epoch's data order comes from ``(seed, epoch)``, the same on every rank;
each rank takes every ``world``-th row of a global batch. Validation uses its own fixed seed per rank inside a
forked RNG, so it changes nothing in training.

Host synchronisation. The step itself reads no value back (no ``.item()``): losses are summed on the device and
the non-finite guard records the first bad step on the device. Values are read every ``log_every_n_steps``
steps, before each checkpoint and at epoch ends — one reduction across ranks each time.
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
import time
from typing import Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from ..config import TrainConfig
from ..data import MultimodalDataset
from ..model import Batch, MultimodalVAE
from .checkpoint import FORMAT

__all__ = ["TrainingModule", "NonFiniteError", "ShardedBatches", "derive_seed", "WarmupCosine", "clip_grad_norm"]


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient; the message names the step and the offending terms or parameters."""


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed that depends on ``seed`` and ``parts`` (e.g. ``("step", rank, step)``) only."""
    text = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


class WarmupCosine:
    """Learning-rate factor at step t: linear warm-up ``(t+1)/W`` for ``t < W``, then a cosine from 1 to
    ``final_ratio`` over the remaining ``total − W`` steps (constant 1 with ``final_ratio=None``).

    A plain object (not a lambda) so that its settings travel in the scheduler's state dict.
    """

    def __init__(self, warmup_steps: int, total_steps: int | None, final_ratio: float | None):
        self.warmup_steps, self.total_steps, self.final_ratio = int(warmup_steps), total_steps, final_ratio

    def __call__(self, t: int) -> float:
        if t < self.warmup_steps:
            return (t + 1) / self.warmup_steps
        if self.final_ratio is None or not self.total_steps:
            return 1.0
        span = max(self.total_steps - self.warmup_steps, 1)
        p = min(max((t - self.warmup_steps) / span, 0.0), 1.0)
        return self.final_ratio + (1.0 - self.final_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def kl_weight(step: int, warmup_steps: int) -> float:
    """The KL annealing factor at the 0-based optimisation step ``step``: ``min(1, step / warmup_steps)``."""
    return 1.0 if warmup_steps <= 0 or step >= warmup_steps else step / warmup_steps


def clip_grad_norm(grads: list[Tensor], max_norm: float | None) -> tuple[Tensor, Tensor]:
    """Scale ``grads`` in place so that their global 2-norm is at most ``max_norm``.

    Returns ``(per-tensor norms (P,), global norm before clipping)``; no host synchronisation.
    """
    norms = torch.stack(torch._foreach_norm(grads))  # (P,)
    total = torch.linalg.vector_norm(norms)
    if max_norm is not None:
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_(grads, coef)
    return norms, total


class ShardedBatches:
    """One epoch of batches for one rank, by tensor indexing (no DataLoader, no workers).

    Global batch b of epoch e holds rows ``order_e[b·B : (b+1)·B]`` with ``order_e`` a permutation seeded by
    ``(seed, e)``; rank r gets every ``world``-th of them, starting at r. Yields ``(Batch, global_size)``. A global
    batch smaller than the number of ranks is dropped (a rank would get no data). ``state_dict`` /
    ``load_state_dict`` (Lightning's resumable-loader protocol) restore the position inside an epoch.
    """

    def __init__(self, dataset: MultimodalDataset, batch_size: int, seed: int, shuffle: bool = True,
                 drop_last: bool = False, rank: int = 0, world: int = 1, epoch_fn=None):
        self.dataset, self.batch_size, self.seed, self.shuffle = dataset, int(batch_size), seed, shuffle
        self.rank, self.world = rank, world
        n = len(dataset)
        full, rest = divmod(n, self.batch_size)
        self.num_batches = full + (1 if rest >= max(world, 1) and not drop_last else 0)
        if self.num_batches == 0:
            raise ValueError(f"{n} training data points make no batch of size {batch_size} for {world} process(es)")
        self.epoch_fn = epoch_fn or (lambda: 0)
        self.consumed = 0  # batches of the current epoch already trained on (set by the training plan)
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.num_batches

    def order(self, epoch: int) -> Tensor:
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch)))

    def __iter__(self) -> Iterator[tuple[Batch, int]]:
        epoch = self.epoch_fn()
        skip = 0
        if self._resume is not None and self._resume[0] == epoch:
            skip = self._resume[1]
        self._resume = None
        order = self.order(epoch)
        for b in range(skip, self.num_batches):
            rows = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.dataset.batch(rows[self.rank::self.world]), len(rows)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch_fn(), "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self._resume = (int(state["epoch"]), int(state["consumed"]))
        self.consumed = int(state["consumed"])


class TrainingModule(pl.LightningModule):
    """Lightning wrapper of ``(model, objective)``: optimisation and logging only.

    Args:
        model: the :class:`~pimvae.MultimodalVAE` to train (it is a sub-module: ``self.model``).
        objective: any pimvae objective, ``objective(model, batch) -> LossOutput``.
        train, val: in-memory data sets (``val`` may be ``None``).
        config: a :class:`~pimvae.config.TrainConfig`.
        writer: a function that creates the :class:`~pimvae.training.logs.MetricsWriter` (called on global rank 0
            when training starts), or ``None``.
    """

    def __init__(self, model: MultimodalVAE, objective, train: MultimodalDataset, val: MultimodalDataset | None,
                 config: TrainConfig, writer=None, print_lines: bool = False):
        super().__init__()
        self.model = model
        self.objective = objective
        self.train_data, self.val_data, self.config = train, val, config
        self._make_writer, self.writer = writer, None
        self.print_lines = print_lines  # one line per logging window (for logs that are not a terminal)
        self.history: list[dict] = []
        self.progress: dict[str, str] = {}
        self._batches: ShardedBatches | None = None
        self._t0 = time.perf_counter()
        self._last_val: float | None = None
        self._restored: dict | None = None
        self.early_stop = {"best": None, "wait": 0, "stopped": False}
        # The validation with the highest bound so far; with ``restore_best`` also a copy of its parameters.
        self.best: dict = {"bound": None, "epoch": None, "step": None}
        self._best_state: dict[str, Tensor] | None = None
        self._logged_step = -1
        self._reset_accumulators()
        # KL annealing: the objective's β scaled by kl_weight(step) during training, its own β everywhere else.
        self._beta: float | None = None
        if config.kl_warmup_steps:
            if not isinstance(getattr(objective, "beta", None), (int, float)):
                raise ValueError(f"train.kl_warmup_steps needs an objective with a numeric `beta`; "
                                 f"{type(objective).__name__} has none")
            self._beta = float(objective.beta)
        # The objective's forward (and through AOTAutograd its backward) compiled when asked; the optimiser stays eager.
        self._loss_output = torch.compile(self._objective_output) if config.compile else self._objective_output

    def _objective_output(self, data: Batch):
        return self.objective(self.model, data)

    # -- accumulators (device tensors: no host sync in the step) ------------------------------------------------
    def _reset_accumulators(self) -> None:
        self._window = torch.zeros(2, dtype=torch.float64)  # (Σ n·loss, Σ n) since the last log
        self._epoch = torch.zeros(2, dtype=torch.float64)  # the same over the epoch
        self._grad_norm = torch.zeros((), dtype=torch.float64)
        self._bad_step = torch.full((), -1, dtype=torch.long)  # first step (1-based) with a non-finite value
        self._bad_kind = torch.zeros((), dtype=torch.long)  # 1: loss, 2: gradient
        self._bad_terms = None  # bool per objective term (True: non-finite)
        self._bad_params = None  # bool per parameter

    def _to_device(self) -> None:
        if self._window.device != self.device:
            dtype = torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64
            for name in ("_window", "_epoch", "_grad_norm"):
                setattr(self, name, getattr(self, name).to(self.device, dtype))
            for name in ("_bad_step", "_bad_kind"):
                setattr(self, name, getattr(self, name).to(self.device))

    @property
    def rank(self) -> int:
        return self.global_rank

    @property
    def world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    # -- data -------------------------------------------------------------------------------------------------
    def train_dataloader(self) -> ShardedBatches:
        self._batches = ShardedBatches(self.train_data, self.config.batch_size, self.config.seed, shuffle=True,
                                       drop_last=self.config.drop_last, rank=self.rank, world=self.world,
                                       epoch_fn=lambda: self.trainer.current_epoch)
        if self._restored is not None:
            self._batches.load_state_dict(self._restored["data"])
        return self._batches

    # -- optimisation -----------------------------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.config
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        total = self._total_steps()
        ratio = None if cfg.final_lr is None else cfg.final_lr / cfg.lr
        sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(cfg.warmup_steps, total, ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def _total_steps(self) -> int | None:
        cfg = self.config
        per_epoch = ShardedBatches(self.train_data, cfg.batch_size, cfg.seed, drop_last=cfg.drop_last,
                                   world=self.world).num_batches
        candidates = [s for s in (cfg.max_steps, cfg.max_epochs and cfg.max_epochs * per_epoch) if s]
        return min(candidates) if candidates else None

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The noise of step t on rank r is a function of (seed, r, t) alone: exact resume, per-rank streams.
        self._seed(derive_seed(self.config.seed, "step", self.rank, self.global_step))

    def _seed(self, seed: int) -> None:
        """Seed the generators this process draws from: the CPU one and the current accelerator's.

        (``torch.manual_seed`` would also queue seeds for uninitialised CUDA devices, formatting a stack trace
        each time — a measurable cost per step.)
        """
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)
        elif self.device.type != "cpu":
            torch.manual_seed(seed)

    def set_kl_weight(self, weight: float) -> None:
        """Set the objective's β to ``weight`` times its own (a no-op without ``kl_warmup_steps``). Under
        ``compile`` β is one tensor filled in place, so the compiled graph reads it instead of recompiling."""
        if self._beta is None:
            return
        value = self._beta * weight
        if not self.config.compile:
            self.objective.beta = value
        elif isinstance(self.objective.beta, Tensor):
            self.objective.beta.fill_(value)
        else:
            self.objective.beta = torch.tensor(value, dtype=torch.get_default_dtype(), device=self.device)

    def restore_beta(self) -> None:
        """Give the objective back its own β (a float), after training or when it stops on an error."""
        if self._beta is not None:
            self.objective.beta = self._beta

    def training_step(self, batch: tuple[Batch, int], batch_idx: int) -> Tensor:
        data, global_size = batch
        self.set_kl_weight(kl_weight(self.global_step, self.config.kl_warmup_steps))
        out = self._loss_output(data)
        loss = out.loss
        n = len(data)
        self._guard_loss(loss, out.terms)
        detached = loss.detach().to(self._window.dtype)
        stats = torch.stack([detached, torch.ones_like(detached)]) * n  # (n·loss, n), no host-to-device copy
        self._window += stats
        self._epoch += stats
        if self._batches is not None:
            self._batches.consumed += 1
        # DDP averages gradients over ranks; weighting by the shard's share makes that the global-batch mean.
        return loss * (n * self.world / global_size)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Lightning calls this with unscaled gradients (mixed precision included), before the optimiser step.
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return
        norms, total = clip_grad_norm([p.grad for p in params], self.config.grad_clip)
        self._grad_norm = total.detach().to(self._window.dtype)
        if not str(self.trainer.precision).startswith("16"):  # fp16's loss scaler skips overflowing steps itself
            self._guard_grads(norms, params)

    # -- the NaN / Inf guard (recorded on the device, read at the next sync point) --------------------------------
    def _step_tensor(self) -> Tensor:
        return torch.full((), self.global_step + 1, dtype=torch.long, device=self.device)

    def _guard_loss(self, loss: Tensor, terms: dict[str, Tensor]) -> None:
        if self._bad_terms is None:
            self._term_names = ["loss", *terms]
            self._bad_terms = torch.zeros(len(self._term_names), dtype=torch.bool, device=self.device)
        sums = torch.stack([loss.detach(), *(t.detach().sum() for t in terms.values())])
        bad = ~torch.isfinite(sums)
        new = bad.any() & (self._bad_step < 0)
        self._bad_terms = torch.where(new, bad, self._bad_terms)
        self._bad_kind = torch.where(new, 1, self._bad_kind)
        self._bad_step = torch.where(new, self._step_tensor(), self._bad_step)

    def _guard_grads(self, norms: Tensor, params: list[Tensor]) -> None:
        if self._bad_params is None or self._bad_params.shape[0] != norms.shape[0]:
            ids = {id(p): n for n, p in self.model.named_parameters()}
            self._param_names = [ids.get(id(p), "?") for p in params]
            self._bad_params = torch.zeros(norms.shape[0], dtype=torch.bool, device=self.device)
        bad = ~torch.isfinite(norms)
        new = bad.any() & (self._bad_step < 0)
        self._bad_params = torch.where(new, bad, self._bad_params)
        self._bad_kind = torch.where(new, 2, self._bad_kind)
        self._bad_step = torch.where(new, self._step_tensor(), self._bad_step)

    def _raise_non_finite(self, any_rank_bad: bool) -> None:
        if not any_rank_bad:
            return
        step = int(self._bad_step)
        if step < 0:
            raise NonFiniteError("a non-finite loss or gradient occurred on another process; see its error")
        if int(self._bad_kind) == 1:
            names = [n for n, b in zip(self._term_names, self._bad_terms.tolist()) if b]
            raise NonFiniteError(
                f"non-finite loss at step {step}: objective term(s) {names} are NaN or Inf (terms of "
                f"{type(self.objective).__name__}: {self._term_names[1:]}). Training stopped; the last checkpoint "
                "before that step is intact.")
        names = [n for n, b in zip(self._param_names, self._bad_params.tolist()) if b]
        raise NonFiniteError(
            f"non-finite gradient at step {step} (finite loss) in {len(names)} parameter(s), e.g. {names[:5]}. "
            "Training stopped; the last checkpoint before that step is intact.")

    # -- sync points: logging, validation, checkpoints ------------------------------------------------------------
    def _reduce(self, values: Tensor) -> list[float]:
        """Sum ``values`` over ranks and read them (the one host synchronisation of a sync point)."""
        if self.world > 1:
            values = self.trainer.strategy.reduce(values.clone(), reduce_op="sum")
        return values.tolist()

    def sync(self, *, log: bool) -> None:
        """Check the guard on every rank; with ``log``, write the window's metrics."""
        bad = (self._bad_step >= 0).to(self._window.dtype)
        grad = self._grad_norm / self.world  # identical on every rank after DDP's all-reduce
        s_loss, s_n, s_grad, s_bad = self._reduce(torch.stack([self._window[0], self._window[1], grad, bad]))
        self._raise_non_finite(s_bad > 0)
        if not log or s_n == 0:
            return
        loss = s_loss / s_n
        self._window.zero_()
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        row = {"step": self.global_step, "epoch": self.current_epoch, "wall_s": round(time.perf_counter() - self._t0, 3),
               "train/loss": loss, "train/bound": -loss, "lr": lr, "grad_norm": s_grad}
        self.progress = {"loss": f"{loss:.4g}", "bound": f"{-loss:.4g}"}
        if self._last_val is not None:
            self.progress["val_bound"] = f"{self._last_val:.4g}"
        self._write(row)
        if self.print_lines and self.trainer.is_global_zero:
            total = f"/{self.trainer.max_steps}" if self.trainer.max_steps and self.trainer.max_steps > 0 else ""
            items = "  ".join(f"{k} {v}" for k, v in self.progress.items())
            print(f"step {self.global_step}{total}  epoch {self.current_epoch}  {items}", file=sys.stderr, flush=True)

    def _write(self, row: dict) -> None:
        if self.writer is not None and self.trainer.is_global_zero:
            self.writer.log(row)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._log_step()

    def _log_step(self) -> None:
        # Also called by the checkpoint callback, which runs before this hook: log first, then save.
        if self.global_step % self.config.log_every_n_steps == 0 and self._logged_step != self.global_step:
            self._logged_step = self.global_step
            self.sync(log=True)

    @torch.no_grad()
    def validation_bound(self) -> tuple[float, int]:
        """Mean bound over the validation set with the current (frozen) parameters, reduced over ranks."""
        was_training = self.model.training
        self.model.eval()
        self.set_kl_weight(1.0)  # the bound itself; the next training step sets its own weight again
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self._seed(derive_seed(self.config.seed, "val", self.rank))
            total = torch.zeros((), dtype=self._window.dtype, device=self.device)
            count = 0
            rows = torch.arange(len(self.val_data))[self.rank::self.world]
            size = self.config.val_batch_size or max(self.config.batch_size, 1000)
            for start in range(0, len(rows), size):
                batch = self.val_data.batch(rows[start:start + size]).to(self.device)
                batch = self.trainer.precision_plugin.convert_input(batch) if self._trainer is not None else batch
                total += self.objective(self.model, batch).terms["bound"].to(total.dtype).sum()
                count += len(batch)
        self.model.train(was_training)
        s, n = self._reduce(torch.stack([total, total.new_tensor(float(count))]))
        return s / n, int(n)

    def on_train_epoch_end(self) -> None:
        self._end_epoch(self.current_epoch)

    def _end_epoch(self, epoch: int) -> None:
        """Epoch bookkeeping: the epoch's mean loss, validation, early stopping, a history entry."""
        self.sync(log=False)
        s_loss, s_n = self._reduce(self._epoch.clone())
        self._epoch.zero_()
        if self._batches is not None:
            self._batches.consumed = 0
        entry = {"epoch": epoch, "step": self.global_step, "train_loss": s_loss / s_n if s_n else float("nan"),
                 "val_bound": None}
        row = {"step": self.global_step, "epoch": epoch, "wall_s": round(time.perf_counter() - self._t0, 3),
               "epoch/train_loss": entry["train_loss"]}
        if self.val_data is not None and (epoch + 1) % self.config.val_every_n_epochs == 0:
            bound, count = self.validation_bound()
            entry["val_bound"] = self._last_val = bound
            row.update({"val/bound": bound, "val/count": count})
            self.progress["val_bound"] = f"{bound:.4g}"
            self._track_best(bound, epoch)
            self._early_stopping(bound)
        self.history.append(entry)
        self._write(row)

    def _track_best(self, bound: float, epoch: int) -> None:
        """Remember the validation with the highest bound (a NaN bound is never the best); with
        ``restore_best`` keep a CPU copy of the model's parameters at it."""
        best = self.best
        if not math.isfinite(bound) or (best["bound"] is not None and bound <= best["bound"]):
            return
        best.update(bound=bound, epoch=epoch, step=self.global_step)
        if self.config.restore_best:
            self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def restore_best_state(self) -> bool:
        """Load the parameters of the best validation into the model; ``False`` when there are none to load
        (``restore_best`` off, or no validation ran)."""
        if self._best_state is None:
            return False
        self.model.load_state_dict(self._best_state)
        return True

    def _early_stopping(self, bound: float) -> None:
        patience = self.config.early_stopping_patience
        if patience is None:
            return
        es = self.early_stop
        if es["best"] is None or bound > es["best"] + self.config.early_stopping_min_delta:
            es["best"], es["wait"] = bound, 0
        else:
            es["wait"] += 1
            if es["wait"] >= patience:
                es["stopped"] = True
                self.trainer.should_stop = True

    def on_train_start(self) -> None:
        self._to_device()
        if self._make_writer is not None and self.trainer.is_global_zero and self.writer is None:
            self.writer = self._make_writer()
        # A checkpoint taken after the last batch of an epoch but before its end-of-epoch hook: Lightning resumes
        # at the next epoch, so finish the interrupted epoch's bookkeeping here (same parameters, same numbers).
        state = self._restored
        if state is not None and self._batches is not None:
            epoch, consumed = state["data"]["epoch"], state["data"]["consumed"]
            if consumed >= self._batches.num_batches and all(h["epoch"] != epoch for h in self.history):
                self._end_epoch(epoch)
                if self.early_stop["stopped"]:
                    self.trainer.should_stop = True

    # -- checkpoint state -----------------------------------------------------------------------------------------
    def prepare_checkpoint(self) -> None:
        """Collective: gather the global accumulators that the (rank-0) checkpoint will carry."""
        if self.trainer.training:
            self._log_step()
        self.sync(log=False)
        window = self._reduce(self._window.clone())
        epoch = self._reduce(self._epoch.clone())
        self._pending = {"window": window, "epoch": epoch}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        pending = getattr(self, "_pending", None) or {"window": self._window.tolist(), "epoch": self._epoch.tolist()}
        checkpoint["pimvae"] = {
            "format": FORMAT,
            "data": self._batches.state_dict() if self._batches is not None else {"epoch": 0, "consumed": 0},
            "accumulators": pending,
            "history": [dict(h) for h in self.history],
            "last_val": self._last_val,
            "early_stop": dict(self.early_stop),
            "best": dict(self.best),
            "rng": _rng_state(),
        }
        if self._best_state is not None:
            checkpoint["pimvae"]["best_state"] = self._best_state
        self._pending = None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["pimvae"]
        self._restored = state
        self.history = [dict(h) for h in state["history"]]
        self._last_val = state["last_val"]
        self.early_stop = dict(state["early_stop"])
        self.best = dict(state.get("best", self.best))  # checkpoints written before the best was kept lack it
        self._best_state = state.get("best_state")
        # Global sums were saved; rank 0 carries them, the others start from zero, so the reductions add up.
        own = self.global_rank == 0
        self._window = torch.tensor(state["accumulators"]["window"] if own else [0.0, 0.0], dtype=torch.float64)
        self._epoch = torch.tensor(state["accumulators"]["epoch"] if own else [0.0, 0.0], dtype=torch.float64)
        _set_rng_state(state["rng"])


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
