"""The same runs at two budgets: for each run of the second folder (aggregator, prior, bound, β, seed, missing
rate) that the first folder also has, print each metric's value in both and the change, then the mean change per
bound. Nothing is retrained; it reads the two ``results.json``.

    python docs/results/trend.py docs/results/five-modal/eta-0.5/seed0_rerun docs/results/five-modal/eta-0.5/steps_12k
    python docs/results/trend.py A B --metrics llh mcc_cca1
"""

import argparse
import json
import statistics
from pathlib import Path

from pimvae.experiments.base import _run_key as run_key  # the key merge.py replaces records by


def changes(before: list[dict], after: list[dict], metric: str) -> list[tuple[tuple, float, float]]:
    """``(run key, value before, value after)`` for every run of ``after`` with ``metric`` that ``before`` has."""
    old = {run_key(r): r for r in before}
    return [(run_key(r), float(old[run_key(r)][metric]), float(r[metric])) for r in after
            if run_key(r) in old and r.get(metric) is not None and old[run_key(r)].get(metric) is not None]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--metrics", nargs="+", default=["llh", "lower_bound", "mcc_cca1", "mcc"])
    args = parser.parse_args(argv)
    before, after = (json.loads((f / "results.json").read_text()) for f in (args.before, args.after))
    steps = lambda rs: sorted({r.get("steps") for r in rs})  # noqa: E731
    print(f"## {args.before} (steps {steps(before)}) → {args.after} (steps {steps(after)})\n")
    table = {m: {k: (a, b) for k, a, b in changes(before, after, m)} for m in args.metrics}
    keys = [run_key(r) for r in after if any(run_key(r) in table[m] for m in args.metrics)]
    if not keys:
        raise SystemExit("no run of the second folder is in the first")
    print("| aggregator | prior | bound | β | seed | η | " + " | ".join(args.metrics) + " |")
    print("|---|---|---|---:|---:|---:|" + "---|" * len(args.metrics))
    for k in keys:
        cells = [f"{table[m][k][0]:.4g} → {table[m][k][1]:.4g}" if k in table[m] else "—" for m in args.metrics]
        print("| " + " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in k) + " | " + " | ".join(cells) + " |")
    print()
    for bound in sorted({k[2] for k in keys}):
        for m in args.metrics:
            d = [b - a for k, (a, b) in table[m].items() if k[2] == bound]
            if d:
                print(f"{bound} {m}: change mean {statistics.mean(d):+.3f}, min {min(d):+.3f}, max {max(d):+.3f} "
                      f"({len(d)} runs)")


if __name__ == "__main__":
    main()
