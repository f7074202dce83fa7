"""The table of docs/results_recipe.md from the runs of bench/ablations_fashion.sh.

    python bench/ablation_table.py [runs/fashion/abl]

One row per run and guidance scale: FID (2000 generated vs the 10000 test images, classifier
features), precision, recall, class accuracy.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fashion/abl")
    print("| run | cfg | FID | precision | recall | class acc. |")
    print("|---|---|---|---|---|---|")
    for run in sorted(p for p in root.iterdir() if p.is_dir()):
        for ev in sorted(run.glob("eval_cfg*/results.csv")):
            with ev.open() as f:
                for row in csv.DictReader(f):
                    cells = [row.get(k, "") for k in ("fid", "precision", "recall", "class_accuracy")]
                    nums = [f"{float(c):.3f}" if c else "-" for c in cells]
                    nums[0] = f"{float(cells[0]):.2f}" if cells[0] else "-"
                    print(f"| {run.name} | {row.get('used_cfg')} | " + " | ".join(nums) + " |")


if __name__ == "__main__":
    main()
