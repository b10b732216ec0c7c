"""The initial posterior and loss of the linear-dense encoders, as the grid builds them (Table 1 networks, LeCun
init, seed s for data and weights): SelfAttention with random residual branches (the default before session 9),
with zero-initialised ones (the default since), and SumPooling.

    python docs/results/linear-dense/collapse/init_scale.py     # seconds; writes init_scale.md beside this file

Loss: the masked bound's loss per point on the first 250 training points; |∇|: its global gradient norm.
"""

from functools import partial
from pathlib import Path

import torch

from pimvae import aggregators as agg_lib
from pimvae import experiments
from pimvae.experiments.base import Row

VARIANTS = [("SelfAttention, random branches", "self_attention", False),
            ("SelfAttention, zero-initialised branches", "self_attention", True),
            ("SumPooling", "sum_pooling", None)]


def main() -> str:
    torch.set_num_threads(1)
    exp = experiments.get("linear-dense")
    objective = exp.objective("masked", 1.0)
    lines = ["| encoder | seed | initial loss | initial ‖∇‖ | posterior location RMS | posterior scales (min–max) |",
             "|---|---:|---:|---:|---:|---|"]
    for label, name, zero in VARIANTS:
        for seed in range(5):
            data = exp.data(seed, False)
            registry = dict(agg_lib.REGISTRY)
            if zero is not None:
                agg_lib.REGISTRY[name] = partial(agg_lib.SelfAttention, zero_init_blocks=zero)
            try:
                torch.manual_seed(seed)  # as run_one
                model = exp.model(Row(name, "standard_normal"), data, False)
            finally:
                agg_lib.REGISTRY.update(registry)
            loss = objective(model, data.train.batch(torch.arange(250))).loss
            loss.backward()
            grad = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
            with torch.no_grad():
                q = model.encode(data.train.batch(torch.arange(500)))
            lines.append(f"| {label} | {seed} | {loss.item():.0f} | {grad.item():.3g} | {q.mean.pow(2).mean().sqrt():.2f} "
                         f"| {q.stddev.min():.3g}–{q.stddev.max():.3g} |")
    text = "\n".join(lines) + "\n"
    (Path(__file__).parent / "init_scale.md").write_text(__doc__.split("\n\n")[0] + "\n\n" + text)
    return text


if __name__ == "__main__":
    print(main())
