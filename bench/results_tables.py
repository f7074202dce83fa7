"""Compact tables for docs/results*.md from the cells that `bench/results_demo.sh` or
`bench/results_fashion.sh` computed.

    python bench/results_tables.py results/demo          # prints markdown to stdout
    python bench/results_tables.py runs/fashion/eval/sweep_n500 --cfg 3 \
        --seeds runs/fashion/eval/seed_1000_n500 runs/fashion/eval/seed_2000_n500

Each table is read from the cached cell JSON files (`results/demo/cells/*.json`), so every number printed
is one that `tld eval sweep` measured; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def load_cells(folder: Path) -> list[dict[str, Any]]:
    """The cached cells of a results folder: {"identity": ..., "result": ...} each."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("cells/*.json"))]


def load_rows(folder: Path) -> list[Row]:
    return [cell["result"] for cell in load_cells(folder)]


def pivot(rows: Iterable[Row], row_key: Callable[[Row], str], col_key: Callable[[Row], Any], value: str,
          spec: str = ".2f") -> str:  # fmt: skip
    """A markdown table: one line per row_key, one column per col_key, cells = row[value]."""
    cells: dict[str, dict[Any, Any]] = {}
    for r in rows:
        cells.setdefault(row_key(r), {})[col_key(r)] = r.get(value)
    cols = sorted({c for line in cells.values() for c in line})
    out = ["| | " + " | ".join(str(c) for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, line in sorted(cells.items()):
        vals = [format(line[c], spec) if line.get(c) is not None else "-" for c in cols]
        out.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def settings_table(rows: Iterable[Row], label: Callable[[Row], str]) -> str:
    """One line per setting with every score (class accuracy for class-conditional cells, else the
    caption rank and the hue check)."""
    rows = sorted(rows, key=label)
    classes = any(r.get("class_accuracy") is not None for r in rows)
    last = "class acc." if classes else "caption top-5 | hue acc."
    # classifier features are unnormalised ReLU outputs: their KID has an arbitrary scale, shown as is
    kid = "KID (std)" if classes else "KID x1000 (std)"
    scale = 1 if classes else 1000
    out = [f"| setting | NFE | FID | {kid} | precision | recall | {last} |",
           "|---" * (7 if classes else 8) + "|"]  # fmt: skip
    for r in rows:
        if classes:
            tail = f"{r['class_accuracy']:.3f}"
        else:
            tail = f"{r['align_top5']:.3f} | " + ("-" if r.get("hue_accuracy") is None else f"{r['hue_accuracy']:.3f}")
        out.append(
            f"| {label(r)} | {r['nfe']} | {r['fid']:.2f} | {scale * r['kid_mean']:.2f} ({scale * r['kid_std']:.2f}) "
            f"| {r['precision']:.3f} | {r['recall']:.3f} | {tail} |"
        )
    return "\n".join(out)


def nfe_tables(rows: list[Row], cfg: float = 2.0) -> str:
    rows = [r for r in rows if r["used_schedule"] == "karras" and r["used_cfg"] == cfg and not r.get("options")]
    if not rows:
        return ""
    fid = pivot(rows, lambda r: r["sampler"], lambda r: r["nfe"], "fid")
    kid = pivot(rows, lambda r: r["sampler"], lambda r: r["nfe"], "kid_mean", ".4f")
    return f"FID by sampler (rows) and NFE (columns), karras schedule, cfg {cfg:g}:\n\n{fid}\n\nKID:\n\n{kid}\n"


def schedule_tables(rows: list[Row], cfg: float = 2.0) -> str:
    samplers = {r["sampler"] for r in rows if r["used_schedule"] != "karras"}
    rows = [r for r in rows if r["sampler"] in samplers and r["nfe"] <= 15 and r["used_cfg"] == cfg
            and not r.get("options")]  # fmt: skip
    if not rows:
        return ""
    return pivot(rows, lambda r: f"{r['sampler']} / {r['used_schedule']}", lambda r: r["nfe"], "fid") + "\n"


def goal_line(rows: list[Row], cfg: float = 2.0) -> str:
    """The issue's goal: the best sampler at <= 15 NFE within 5% of the FID of 100-step Heun (NFE 99)."""
    karras = [r for r in rows if r["used_schedule"] == "karras" and r["used_cfg"] == cfg and not r.get("options")]
    ref = [r for r in karras if r["sampler"] == "heun" and r["steps"] == 50]
    cheap = [r for r in karras if r["nfe"] <= 15]
    if not ref or not cheap:
        return ""
    best, heun = min(cheap, key=lambda r: r["fid"]), ref[0]["fid"]
    verdict = "met" if best["fid"] <= 1.05 * heun else "not met"
    return (
        f"Goal (best sampler at <= 15 NFE within 5% of 100-step Heun's FID): **{verdict}**. Heun, 50 steps "
        f"(NFE 99): {heun:.2f}; best at <= 15 NFE: {best['sampler']} at NFE {best['nfe']}, {best['fid']:.2f} "
        f"({100 * (best['fid'] / heun - 1):+.1f}%).\n"
    )


def seed_summary(seeds: list[Row]) -> str:
    """Mean and standard deviation of FID over the sampling seeds (the noise in one cell)."""
    if len(seeds) < 2:
        return ""
    import statistics

    fids = [r["fid"] for r in seeds]
    return f"\nFID over {len(fids)} seeds: mean {statistics.mean(fids):.2f}, std {statistics.stdev(fids):.2f}.\n"


def select(rows: list[Row], **want: Any) -> list[Row]:
    return [r for r in rows if all(r.get(k) == v or (callable(v) and v(r.get(k))) for k, v in want.items())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="a results folder with cells/ (from bench/results_*.sh)")
    ap.add_argument("--cfg", type=float, default=2.0, help="the guidance scale of the main tables (default 2)")
    ap.add_argument("--seeds", type=Path, nargs="*", help="results folders of the other sampling seeds "
                    "(default: ROOT/seed_1000 and ROOT/seed_2000)")  # fmt: skip
    args = ap.parse_args()
    root, cfg = args.root, args.cfg
    seed_dirs = args.seeds if args.seeds is not None else [root / "seed_1000", root / "seed_2000"]
    rows = load_rows(root)
    options = lambda r: r.get("options") or "none"  # noqa: E731
    karras = {"used_schedule": "karras"}
    seeds = [{**r, "seed": 0} for r in select(rows, sampler="dpmpp_2m", steps=15, used_cfg=cfg, options=None, **karras)]
    seeds += [{**cell["result"], "seed": cell["identity"]["seed"]} for folder in seed_dirs for cell in load_cells(folder)]
    sections = [
        ("Sampler x NFE", nfe_tables(rows, cfg) + "\n" + goal_line(rows, cfg)),
        (f"Schedules (FID, cfg {cfg:g})", schedule_tables(rows, cfg)),
        ("DDIM eta", settings_table(select(rows, sampler="ddim", used_cfg=cfg, **karras), lambda r: f"ddim {r['steps']:>2} steps, {options(r)}")),
        ("Heun churn", settings_table(select(rows, sampler="heun", steps=lambda s: s in (8, 13), used_cfg=cfg, **karras), lambda r: f"heun {r['steps']} steps, {options(r)}")),
        ("Dynamic thresholding", settings_table(select(rows, sampler="dpmpp_2m", steps=15, used_cfg=lambda c: c in (cfg, 5), **karras), lambda r: f"cfg {r['used_cfg']:g}, {options(r)}")),
        ("CFG scale (dpmpp_2m, 15 steps)", settings_table(select(rows, sampler="dpmpp_2m", steps=15, options=None, **karras), lambda r: f"cfg {r['used_cfg']:g}")),
        (f"Sampling seeds (dpmpp_2m, 15 steps, cfg {cfg:g})", settings_table(seeds, lambda r: f"seeds {r['seed']}+k") + seed_summary(seeds)),
    ]  # fmt: skip
    for title, body in sections:
        if body.strip() and body.count("\n") > 1:
            print(f"### {title}\n\n{body}\n")


if __name__ == "__main__":
    main()
