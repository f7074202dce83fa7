"""Sweep results as a markdown table, a CSV file and a FID-vs-NFE plot."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tld.common import require

# Columns of the table and the CSV, in order; the CSV also keeps every other field of a row.
TABLE_COLUMNS = (
    ("sampler", "sampler", None), ("steps", "steps", None), ("used_schedule", "schedule", None),
    ("used_cfg", "cfg", "g"), ("options", "options", None), ("nfe", "NFE", None), ("fid", "FID", ".2f"), ("kid_mean", "KID", ".4f"),
    ("kid_std", "KID std", ".4f"), ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
    ("align_top1", "caption top-1", ".3f"), ("align_top5", "caption top-5", ".3f"),
    ("align_overlap", "word overlap", ".3f"),
    ("hue_accuracy", "hue acc.", ".3f"), ("class_accuracy", "class acc.", ".3f"),
    ("seconds_per_image", "s/image", ".3f"),
)  # fmt: skip


def _sort_key(row: dict[str, Any]) -> tuple:
    return (
        row["sampler"],
        str(row.get("used_schedule")),
        float(row.get("used_cfg") or 0),
        str(row.get("options") or ""),
        row["nfe"],
        row["steps"],
    )


def _fmt(value: Any, spec: str | None) -> str:
    if value is None:
        return "-"
    if spec and isinstance(value, int | float):
        return format(value, spec)
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    header = "| " + " | ".join(title for _, title, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    body = [
        "| " + " | ".join(_fmt(row.get(key), spec) for key, _, spec in TABLE_COLUMNS) + " |"
        for row in sorted(rows, key=_sort_key)
    ]
    return "\n".join([header, rule, *body]) + "\n"


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    first = [key for key, _, _ in TABLE_COLUMNS]
    extra = sorted({k for row in rows for k in row} - set(first))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=first + extra)
        writer.writeheader()
        for row in sorted(rows, key=_sort_key):
            writer.writerow(row)


def plot_fid_vs_nfe(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """One panel per schedule; a line per sampler (and cfg, when several) of FID against NFE."""
    require("matplotlib", "eval").use("Agg")
    import matplotlib.pyplot as plt

    schedules = sorted({str(r.get("used_schedule")) for r in rows})
    several_cfgs = len({r.get("used_cfg") for r in rows}) > 1
    fig, axes = plt.subplots(1, len(schedules), figsize=(5 * len(schedules), 4), squeeze=False, sharey=True)
    for ax, schedule in zip(axes[0], schedules):
        lines: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            if str(r.get("used_schedule")) == schedule:
                label = r["sampler"] + (f" cfg {r.get('used_cfg'):g}" if several_cfgs else "")
                label += f" {r['options']}" if r.get("options") else ""
                lines.setdefault(label, []).append((r["nfe"], r["fid"]))
        for label, points in sorted(lines.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.set_xscale("log")
        nfes = sorted({p[0] for points in lines.values() for p in points})
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.minorticks_off()
        ax.set_xlabel("NFE (denoiser calls per image; a CFG pair counts once)")
        ax.set_title(f"schedule: {schedule}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("FID")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, header: str = ""
) -> dict[str, Path]:
    """results.md, results.csv and fid_vs_nfe.png in out_dir; returns their paths."""
    out = Path(out_dir)
    paths = {"markdown": out / "results.md", "csv": out / "results.csv", "plot": out / "fid_vs_nfe.png"}
    paths["markdown"].write_text((header + "\n\n" if header else "") + markdown_table(rows))
    write_csv(rows, paths["csv"])
    plot_fid_vs_nfe(rows, paths["plot"])
    return paths
