"""Add the MCC of the generating model's own posterior to ``results.json`` files written before the experiments
reported it: ``mcc_truth`` / ``mcc_truth_sample`` for the linear-Gaussian ones (exact posterior, see
``pimvae.experiments.linear_dense.truth_mcc``), ``mcc_cca1_truth`` / ``mcc_truth`` for the non-linear ones
(importance-sampled posterior mean, see ``pimvae.experiments.base.oracle_reference``). The values depend only on
the data (seed and missing rate), so they are recomputed exactly as a new run would compute them.

    python docs/results/add_truth_mcc.py docs/results/linear-dense docs/results/bimodal-label ...

Then regenerate each ``table.md`` with the command in its README plus ``resume=true`` (nothing is retrained).
"""

import json
import sys
from pathlib import Path

from pimvae import experiments


def main(dirs: list[str]) -> None:
    cache: dict[tuple, dict] = {}
    for d in dirs:
        path = Path(d) / "results.json"
        records = json.loads(path.read_text())
        for r in records:
            eta = r.get("missing_rate") or None
            key = (r["experiment"], int(r["seed"]), eta)
            if key not in cache:
                info = experiments.get(r["experiment"]).data(int(r["seed"]), quick=False, missing_rate=eta).info
                names = ("mcc_truth", "mcc_truth_sample") if "mcc_truth_sample" in info else ("mcc_cca1_truth", "mcc_truth")
                cache[key] = {k: info[k] for k in names}
            r.update(cache[key])
        path.write_text(json.dumps(records, indent=1))
        print(f"{path}: {len(records)} records")


if __name__ == "__main__":
    main(sys.argv[1:])
