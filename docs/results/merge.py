"""Merge the ``results.json`` of grids run in pieces (e.g. one seed per job, two jobs at a time) into one folder,
then rewrite its ``table.md`` and the figures drawn from records (rates and distortions, posterior KL); latent
scatters need the runs' artifacts and are left as they are. Nothing is retrained or re-evaluated.

    python docs/results/merge.py docs/results/linear-sparse runs/res/ls_s3 runs/res/ls_s4

A run of the same (aggregator, prior, bound, β, seed, missing rate) in a later folder replaces the earlier one.
Records are sorted by seed, then by the experiment's row order, then bound and β.
"""

import json
import sys
from pathlib import Path

from pimvae import experiments
from pimvae.experiments.base import Budget, _run_key, format_table, write_results


def merge(dest: Path, sources: list[Path]) -> list[dict]:
    merged: dict[tuple, dict] = {}
    for folder in [dest, *sources]:
        path = folder / "results.json"
        if path.is_file():
            for r in json.loads(path.read_text()):
                merged[_run_key(r)] = r
    if not merged:
        raise SystemExit(f"no results.json in {dest} or {', '.join(map(str, sources))}")
    records = list(merged.values())
    names = {r["experiment"] for r in records}
    if len(names) != 1:
        raise SystemExit(f"records of several experiments: {sorted(names)}")
    exp = experiments.get(names.pop())
    order = {(row.aggregator, row.prior): i for i, row in enumerate(exp.rows)}
    bounds = {b: i for i, b in enumerate(exp.bounds)}
    records.sort(key=lambda r: (r["seed"], order.get((r["aggregator"], r["prior"]), len(order)),
                                bounds.get(r["bound"], len(bounds)), r["beta"]))
    dest.mkdir(parents=True, exist_ok=True)
    write_results(records, dest)
    # records written before a Budget field existed lack it: compare with the defaults filled in
    budgets = {Budget(**r["budget"]) for r in records}
    budget = budgets.pop() if len(budgets) == 1 else None
    (dest / "table.md").write_text(format_table(exp, records, budget))
    exp.figures(records, [], dest)
    return records


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    recs = merge(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
    print(f"{sys.argv[1]}: {len(recs)} records, seeds {sorted({r['seed'] for r in recs})}")
