"""FID-over-training curves of several runs as one markdown table, read from their log.jsonl files.

    python bench/fid_curves.py runs/objective/tld runs/objective/edm     # prints markdown to stdout

Each run's FID during training (`fid` block, tld.training.fid_eval) appends {"step", "fid", "kid", ...}
to `<output_dir>/log.jsonl`; a rerun or resume may log a step twice, and the last value counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve(run: Path) -> dict[int, dict]:
    """step -> the last FID row logged for it."""
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return {int(r["step"]): r for r in rows if "fid" in r}


def table(runs: list[Path], value: str = "fid", scale: float = 1.0, spec: str = ".2f") -> str:
    curves = {run.name: curve(run) for run in runs}
    steps = sorted({s for c in curves.values() for s in c})
    out = ["| step | " + " | ".join(curves) + " |", "|---" * (len(curves) + 1) + "|"]
    for step in steps:
        cells = [format(c[step][value] * scale, spec) if step in c else "-" for c in curves.values()]
        out.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="training output folders holding log.jsonl")
    args = p.parse_args()
    print("FID:\n\n" + table(args.runs) + "\n\nKID x1000:\n\n" + table(args.runs, "kid", 1000.0, ".1f"))


if __name__ == "__main__":
    main()
