"""Add ``mcc_truth`` / ``mcc_truth_sample`` (the MCC of the generating model's exact posterior, see
``pimvae.experiments.linear_dense.truth_mcc``) to linear-Gaussian ``results.json`` files written before the
experiments reported it. The values depend only on the data seed, so they are recomputed exactly as a new run
would compute them.

    python docs/results/add_truth_mcc.py docs/results/linear-dense docs/results/linear-sparse ...

Then regenerate each ``table.md`` with the command in its README plus ``resume=true`` (nothing is retrained).
"""

import json
import sys
from pathlib import Path

from pimvae import experiments


def main(dirs: list[str]) -> None:
    cache: dict[tuple[str, int], dict] = {}
    for d in dirs:
        path = Path(d) / "results.json"
        records = json.loads(path.read_text())
        for r in records:
            key = (r["experiment"], int(r["seed"]))
            if key not in cache:
                info = experiments.get(r["experiment"]).data(int(r["seed"]), quick=False).info
                cache[key] = {"mcc_truth": info["mcc_truth"], "mcc_truth_sample": info["mcc_truth_sample"]}
            r.update(cache[key])
        path.write_text(json.dumps(records, indent=1))
        print(f"{path}: {len(records)} records")


if __name__ == "__main__":
    main(sys.argv[1:])
