"""Merge the ``results.json`` of grids run in pieces (e.g. one seed per job, two jobs at a time) into one folder,
then rewrite its ``table.md`` and its figures. The runs' saved artifacts (``artifacts/``, what latent scatters are
drawn from) are copied into the destination with their records. The latent scatters show the records' first seed
only, and are redrawn only when every run of that seed has its artifacts in the merged folder; otherwise (its
``artifacts/`` removed after an earlier merge, say) they are left as they are, with a warning naming the runs.
Nothing is retrained or re-evaluated.

    python docs/results/merge.py docs/results/linear-sparse runs/res/ls_s3 runs/res/ls_s4
    python docs/results/merge.py --table-only docs/results/five-modal/eta-0.5/steps_40k/all_seeds A B C

``--table-only`` writes the merged ``results.json`` and ``table.md`` and nothing else: no artifacts are copied and
no figure is drawn (a summary over folders that keep their own).

A run of the same (aggregator, prior, bound, β, seed, missing rate) in a later folder replaces the earlier one.
Records are sorted by seed, then by the experiment's row order, then bound and β.
"""

import json
import os
import shutil
import sys
from pathlib import Path

from pimvae import experiments
from pimvae.experiments.base import _run_key, artifact_path, redraw, write_results, write_table


def merge(dest: Path, sources: list[Path], table_only: bool = False) -> list[dict]:
    merged: dict[tuple, dict] = {}
    origin: dict[tuple, Path] = {}  # where each kept record came from
    for folder in [dest, *sources]:
        path = folder / "results.json"
        if path.is_file():
            for r in json.loads(path.read_text()):
                merged[_run_key(r)] = r
                origin[_run_key(r)] = folder
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
    if table_only:
        write_results(records, dest)
        write_table(exp, records, dest)
        return records
    for r in records:  # a replaced record's artifacts go with it: copy the source's, or drop the stale ones
        source, target = artifact_path(origin[_run_key(r)], r), artifact_path(dest, r)
        if origin[_run_key(r)] != dest:
            if source.is_file():  # copied beside, then renamed over: never rewritten in place
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
            elif target.is_file():
                target.unlink()
    write_results(records, dest)
    redraw(exp, dest)
    return records


if __name__ == "__main__":
    args = sys.argv[1:]
    table_only = "--table-only" in args
    args = [a for a in args if a != "--table-only"]
    if len(args) < 2:
        raise SystemExit(__doc__)
    recs = merge(Path(args[0]), [Path(p) for p in args[1:]], table_only=table_only)
    with_art = sum(artifact_path(args[0], r).is_file() for r in recs)
    print(f"{args[0]}: {len(recs)} records, seeds {sorted({r['seed'] for r in recs})}, {with_art} with artifacts")
