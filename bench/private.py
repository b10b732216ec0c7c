"""Benchmark 4: training-step time with private latents (paper Table 6, SPEC §5) against the same aggregator
without them (Table 5), at the linear-sparse shapes.

The models are the experiments' own (:mod:`pimvae.experiments.linear_sparse`): M = 5 modalities, D_s ~ U{30..60};
without private latents a 30-dimensional z (Table 17 networks); with them z' of 5 and z̃_s of 5 per modality and
the Table 18 networks (PoE with Example 16's private heads, SumPooling with Example 17's and SelfAttention with
Example 18's equivariant private encoders). Batch 250, the experiments' default. A step is ``zero_grad`` + loss +
``backward`` + ``Adam.step`` on a fixed batch.

What it answers: how much the masked bound costs over the plain ELBO when the private encoder has to run again for
every ``log q`` (its input z' changes between the draws), how much the private encoders cost per step, and what
sharing the private encoder's per-slot features between those calls saves (against a copy of the model whose
posteriors recompute them at every call, as before they were shared).
"""

from __future__ import annotations

from typing import Callable

import torch

from pimvae import experiments
from pimvae.experiments.base import Row
from pimvae.private import PrivatePosterior, WithPrivate

from .common import OBJECTIVES, TrainStep, round_robin

ROWS = ("poe", "sum_pooling", "self_attention")
OBJECTIVE_ORDER = ("elbo", "masked", "mixture")
BATCH = 250


class _Recompute(WithPrivate):
    """Posteriors without the shared per-slot features: the private encoder recomputes them at every call."""

    def pool_many(self, g, subsets):
        return [PrivatePosterior(q.shared, q.encoder, q.h, q.subset) for q in super().pool_many(g, subsets)]


def run(quick: bool, compile: str, log: Callable[[str], None]) -> dict:
    shared_exp, private_exp = experiments.get("linear-sparse"), experiments.get("linear-sparse-private")
    data = {"shared": shared_exp.data(0, False), "private": private_exp.data(0, False)}
    data["recompute"] = data["private"]
    exps = {"shared": shared_exp, "private": private_exp, "recompute": private_exp}
    rounds, inner = (5, 1) if quick else (9, 2)

    def step_fn(kind: str, agg: str, obj: str):
        torch.manual_seed(0)
        d = data[kind]
        model = exps[kind].model(Row(agg), d, False)
        if kind == "recompute":
            model.aggregator.__class__ = _Recompute
        batch = d.train.batch(torch.arange(BATCH))
        step = TrainStep(model, OBJECTIVES[obj]())
        return lambda: step(batch)

    fns = {f"{k}/{a}/{o}": step_fn(k, a, o) for k in ("shared", "private") for a in ROWS for o in OBJECTIVE_ORDER}
    fns.update({f"recompute/{a}/masked": step_fn("recompute", a, "masked") for a in ROWS})
    log(f"private: {len(fns)} configurations, {rounds} rounds × {inner} steps, round-robin")
    timing = round_robin(fns, rounds, inner, warmup=2, progress=lambda m: log(f"private: {m}"))

    rows = []
    for a in ROWS:
        row: dict = {"aggregator": a}
        for k in ("shared", "private"):
            for o in OBJECTIVE_ORDER:
                row[f"{k}_{o}_ms"] = timing.median(f"{k}/{a}/{o}") * 1e3
                row[f"{k}_{o}_spread"] = timing.spread(f"{k}/{a}/{o}")
            row[f"{k}_masked_over_elbo"], row[f"{k}_masked_over_elbo_iqr"] = timing.ratio(f"{k}/{a}/masked",
                                                                                          f"{k}/{a}/elbo")
        row["private_over_shared_masked"], row["private_over_shared_masked_iqr"] = timing.ratio(
            f"private/{a}/masked", f"shared/{a}/masked")
        row["recompute_masked_ms"] = timing.median(f"recompute/{a}/masked") * 1e3
        row["shared_features_over_recompute"], row["shared_features_over_recompute_iqr"] = timing.ratio(
            f"private/{a}/masked", f"recompute/{a}/masked")
        rows.append(row)
    return {"rounds": rounds, "inner": inner, "batch": BATCH, "rows": rows,
            "raw_wall_s": timing.wall_rounds, "raw_cpu_s": timing.cpu_rounds}
