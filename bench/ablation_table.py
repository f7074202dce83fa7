"""The tables of docs/results_recipe.md from the runs of bench/ablations_fashion.sh and
bench/ablations_emoji.sh.

    python bench/ablation_table.py [runs/fashion/abl]
    python bench/ablation_table.py --emoji [runs/emoji/abl]

Fashion-MNIST: one row per run and guidance scale: FID (2000 generated vs the 10000 test images,
classifier features), precision, recall, class accuracy.
Emoji: one row per run (and the floors): FID (1000 generated vs 1000 real, EfficientNet-Lite0), its
distance to the VAE round trip's FID, precision, recall, shape words, colour words.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def emoji(root: Path) -> None:
    floor = (_load(root / "floor.json") or {}).get("fid", {})
    vae = floor.get("vae_round_trip")
    print("| run | FID | minus VAE floor | precision | recall | shape words | colour words |")
    print("|---|---|---|---|---|---|---|")
    for name, value in (("real images (floor)", floor.get("real")), ("VAE round trips (floor)", vae)):
        if value is not None:
            print(f"| {name} | {value:.2f} | | | | | |")
    for run in sorted(p for p in root.iterdir() if p.is_dir() and (p / "fid.json").is_file()):
        fid = _load(run / "fid.json")["result"]
        shapes, colours = _load(run / "shapes.json"), _load(run / "colours.json")
        gap = f"{fid['fid'] - vae:.2f}" if vae is not None else "-"
        shape = f"{shapes['settings']['overall']:.1%}" if shapes else "-"
        colour = f"{colours['settings'][0]['overall']:.1%}" if colours else "-"
        print(f"| {run.name} | {fid['fid']:.2f} | {gap} | {fid['precision']:.3f} | {fid['recall']:.3f} | "
              f"{shape} | {colour} |")  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["--emoji"]:
        emoji(Path(sys.argv[2] if len(sys.argv) > 2 else "runs/emoji/abl"))
        return
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fashion/abl")
    print("| run | cfg | FID | precision | recall | class acc. |")
    print("|---|---|---|---|---|---|")
    for run in sorted(p for p in root.iterdir() if p.is_dir()):
        for ev in sorted(run.glob("eval_*cfg*/results.csv")):
            ema = ev.parent.name.removeprefix("eval_").partition("_cfg")[0]  # "ema_0.9999" or ""
            name = f"{run.name} ({ema.replace('_', ' ')})" if ema.startswith("ema_") else run.name
            with ev.open() as f:
                for row in csv.DictReader(f):
                    cells = [row.get(k, "") for k in ("fid", "precision", "recall", "class_accuracy")]
                    nums = [f"{float(c):.3f}" if c else "-" for c in cells]
                    nums[0] = f"{float(cells[0]):.2f}" if cells[0] else "-"
                    print(f"| {name} | {row.get('used_cfg')} | " + " | ".join(nums) + " |")


if __name__ == "__main__":
    main()
