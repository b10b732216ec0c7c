"""Rewrite ``table.md`` from ``results.json`` in each folder given, with the current table layout and nothing
retrained or re-evaluated (figures are left as they are). The budget line comes from the records' own budget.

    python docs/results/retable.py docs/results/bimodal-label docs/results/five-modal/eta-0 ...
"""

import json
import sys
from pathlib import Path

from pimvae import experiments
from pimvae.experiments.base import Budget, write_table


def main(dirs: list[str]) -> None:
    for d in dirs:
        records = json.loads((Path(d) / "results.json").read_text())
        exp = experiments.get(records[0]["experiment"])
        write_table(exp, records, Path(d))  # records older than a budget field take its default
        budgets = {Budget(**r["budget"]) for r in records if "budget" in r}
        print(f"{d}/table.md: {len(records)} records" + ("" if len(budgets) == 1 else f", {len(budgets)} budgets"))


if __name__ == "__main__":
    main(sys.argv[1:])
