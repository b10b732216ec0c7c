"""Figure 5 as numbers: for each aggregator, β and bound, the full reconstruction D_M and rate R_M (all
modalities), the cross distortion D^c and cross rate R_\\S averaged over the single-modality subsets, the LLH gap
and the one-draw MCC, as mean (std) over the seeds in ``beta_sweep/results.json``; then, seed by seed, how often
the three patterns the paper reads off its Figure 5 hold. Nothing is retrained.

    python docs/results/linear-sparse-private/beta_sweep_table.py [docs/results/linear-sparse-private/beta_sweep]
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

NAMES = {"poe": "PoE", "sum_pooling": "SumPooling", "self_attention": "SelfAttention"}


def summary(record: dict) -> dict[str, float]:
    full = max(record["rates"], key=lambda r: r["size"])
    single = [r for r in record["rates"] if r["size"] == 1]
    return {"D_M": full["D_S"], "R_M": full["R_S"],
            "Dc": float(np.mean([r["Dc_not_S"] for r in single])),
            "R_not_S": float(np.mean([r["R_not_S"] for r in single])),
            "llh_gap": record["llh_gap"], "mcc": record["mcc_sample"]}


def mean_std(values, fmt: str, sign: str = "") -> str:
    """``mean (std)`` over seeds; the std only with more than one seed."""
    v = np.asarray(values, dtype=float)
    return f"{v.mean():{sign}{fmt}}" + (f" ({v.std(ddof=1):{fmt}})" if len(v) > 1 else "")


def main(folder: Path) -> None:
    records = json.loads((folder / "results.json").read_text())
    cells: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in records:
        cells[(r["aggregator"], r["beta"], r["bound"])][r["seed"]] = summary(r)
    for agg in [a for a in NAMES if any(k[0] == a for k in cells)]:
        seeds = sorted({s for k, v in cells.items() if k[0] == agg for s in v})
        print(f"### {NAMES[agg]} (seeds {', '.join(map(str, seeds))})\n")
        print("| β | bound | D_M | R_M | D^c (mean over s) | R_\\S (mean over s) | LLH gap | MCC (one draw) | seeds |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for beta in sorted({k[1] for k in cells if k[0] == agg}):
            for bound in ("masked", "mixture"):
                runs = cells.get((agg, beta, bound), {})
                if not runs:
                    continue
                cols = [mean_std([x[m] for x in runs.values()], fmt)
                        for m, fmt in [("D_M", ".1f"), ("R_M", ".1f"), ("Dc", ".1f"), ("R_not_S", ".1f"),
                                       ("llh_gap", ".3f"), ("mcc", ".2f")]]
                print(f"| {beta:g} | {'ours' if bound == 'masked' else 'mixture'} | " + " | ".join(cols)
                      + f" | {len(runs)} |")
        print()
    # the distortions move with each seed's data set by tens of nats; the paired differences do not
    print("Paired differences, ours − mixture, mean (std) over the seeds with both bounds:\n")
    print("| aggregator | β | ΔD_M | ΔR_M | ΔD^c | ΔR_\\S | seeds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    counts = defaultdict(lambda: [0, 0])
    for (agg, beta, bound), runs in sorted(cells.items(), key=lambda kv: (list(NAMES).index(kv[0][0]), kv[0][1])):
        if bound != "masked":
            continue
        other = cells.get((agg, beta, "mixture"), {})
        both = sorted(runs.keys() & other.keys())
        if both:
            diffs = [mean_std([runs[s][m] - other[s][m] for s in both], ".1f", sign="+")
                     for m in ("D_M", "R_M", "Dc", "R_not_S")]
            print(f"| {NAMES[agg]} | {beta:g} | " + " | ".join(diffs) + f" | {len(both)} |")
        for seed in both:
            ours, mix = runs[seed], other[seed]
            for pattern, holds in [("ours lower D_M (better full reconstruction)", ours["D_M"] < mix["D_M"]),
                                   ("mixture lower D^c (better cross reconstruction)", mix["Dc"] < ours["Dc"]),
                                   (f"ours higher R_M at β = {beta:g}", ours["R_M"] > mix["R_M"])]:
                counts[pattern][0] += bool(holds)
                counts[pattern][1] += 1
    print("\nSeed by seed, over (aggregator, β, seed) pairs with both bounds:\n")
    for pattern, (k, n) in counts.items():
        print(f"- {pattern}: {k} of {n}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "beta_sweep")
