"""Our bound against the mixture bound, run by run: for each (aggregator, prior, β, missing rate, seed) that has
both bounds, print the two values of a metric and which is better, then the count "ours ahead in k of n pairs"
that the READMEs quote. Nothing is retrained; it reads ``results.json``.

    python docs/results/pairs.py docs/results/five-modal/eta-0              # llh, higher is better
    python docs/results/pairs.py docs/results/linear-sparse --metric llh_gap  # gaps: lower is better
    python docs/results/pairs.py docs/results/linear-dense --metric bound_gap --seeds 0 1

Metrics whose name contains ``gap`` count lower as better; every other metric counts higher as better.
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path


def pairs(records: list[dict], metric: str, seeds: set[int] | None = None) -> list[dict]:
    """One row per run key with both bounds: ``{row, seed, masked, mixture, delta, ours_ahead}``."""
    lower_is_better = "gap" in metric
    by_key: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in records:
        if metric not in r or r[metric] is None or (seeds is not None and r["seed"] not in seeds):
            continue
        key = (r["aggregator"], r.get("prior", ""), r.get("beta", 1.0), r.get("missing_rate", 0.0), r["seed"])
        by_key[key][r["bound"]] = float(r[metric])
    rows = []
    for (aggregator, prior, beta, eta, seed), v in by_key.items():
        if {"masked", "mixture"} <= v.keys():
            delta = v["masked"] - v["mixture"]
            rows.append({"row": f"{aggregator} / {prior} / β={beta:g}" + (f" / η={eta:g}" if eta else ""),
                         "seed": seed, "masked": v["masked"], "mixture": v["mixture"], "delta": delta,
                         "ours_ahead": delta < 0 if lower_is_better else delta > 0})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--metric", default="llh")
    parser.add_argument("--seeds", nargs="*", type=int)
    args = parser.parse_args(argv)
    for folder in args.folders:
        records = json.loads((folder / "results.json").read_text())
        rows = pairs(records, args.metric, set(args.seeds) if args.seeds else None)
        print(f"## {folder}: {args.metric} ({'lower' if 'gap' in args.metric else 'higher'} is better)\n")
        print("| row | seed | ours (masked) | mixture | ours − mixture | ours ahead |")
        print("|---|---:|---:|---:|---:|---|")
        for p in rows:
            print(f"| {p['row']} | {p['seed']} | {p['masked']:.4g} | {p['mixture']:.4g} | {p['delta']:+.3g} | "
                  f"{'yes' if p['ours_ahead'] else 'no'} |")
        ahead = sum(p["ours_ahead"] for p in rows)
        print(f"\nOurs ahead in {ahead} of {len(rows)} (row, seed) pairs.\n")


if __name__ == "__main__":
    main()
