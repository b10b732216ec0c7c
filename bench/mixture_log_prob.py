"""Gaussian-mixture ``log_prob``: ``ReparamMixture.log_prob`` against torch's ``MixtureSameFamily.log_prob``.

The step benchmark measured this rewrite together with the single-component ``rsample`` (bench/optimisations.md,
"mixtures"). This isolates the ``log_prob`` half. Forward and backward are timed on the same distribution object
(``ReparamMixture`` subclasses ``MixtureSameFamily``, so the unbound parent method is torch's path), round-robin, at
the linear-dense shapes: batch 500, D = 30, one sample; K = 32 (MoPoE, the 2^5 subsets of 5 modalities) and K = 5
(MoE).

    python -m bench.mixture_log_prob [--rounds 15] [--inner 20]
"""

from __future__ import annotations

import argparse

import torch
from torch.distributions import MixtureSameFamily

from pimvae.distributions import diag_normal_mixture

from .common import CLOCK, round_robin


def _case(k: int, batch: int = 500, dim: int = 30):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, k, generator=g)
    loc = torch.randn(batch, k, dim, generator=g).requires_grad_()
    scale = (0.1 + torch.rand(batch, k, dim, generator=g)).requires_grad_()
    q = diag_normal_mixture(logits, loc, scale)
    z = q.rsample().detach().requires_grad_()

    def call(log_prob):
        def run():
            log_prob(q, z).sum().backward()
            for t in (loc, scale, z):
                t.grad = None
        return run

    return {"ours": call(type(q).log_prob), "torch": call(MixtureSameFamily.log_prob)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--inner", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    CLOCK["name"] = "cpu"
    print(f"torch {torch.__version__}, 1 thread, CPU time, {args.rounds} rounds x {args.inner} calls")
    print("| K | ours (ms) | torch (ms) | ours / torch (IQR) |\n|---|---|---|---|")
    for k in (32, 5):
        timing = round_robin(_case(k), rounds=args.rounds, inner=args.inner)
        ratio, iqr = timing.ratio("ours", "torch")
        ours, ref = (timing.median(key) * 1e3 for key in ("ours", "torch"))
        print(f"| {k} | {ours:.2f} | {ref:.2f} | {ratio:.2f} ({iqr:.2f}) |")


if __name__ == "__main__":
    main()
