"""A grid of sampler settings (sampler x steps x schedule x cfg), each cell scored against one reference.

Each finished cell is written to `<out>/cells/<label>.json` together with the identity of the run
(model, data fingerprint, extractor, dtype, device, N, seed, scoring options, the cell's settings); a rerun with the same identity reads
the cell instead of computing it, so an interrupted sweep resumes where it stopped, and a changed
identity recomputes. The report (results.md, results.csv, fid_vs_nfe.png) is rewritten at the end.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from tld.common import write_json_atomic
from tld.errors import TLDError
from tld.eval.evaluate import EvalConfig, SampleSettings, evaluate_setting, generation_identity
from tld.eval.features import FeatureExtractor
from tld.eval.reference import ReferenceSet
from tld.eval.report import write_report

if TYPE_CHECKING:
    from tld.pipeline import TLDPipeline


@dataclass
class SweepGrid:
    """The values of each axis; None in schedules/cfgs means the model's default."""

    samplers: list[str]
    steps: list[int]
    schedules: list[str | None] = field(default_factory=lambda: [None])
    cfgs: list[float | None] = field(default_factory=lambda: [None])
    options: list[str | None] = field(default_factory=lambda: [None])  # JSON objects, see SampleSettings

    def cells(self) -> list[SampleSettings]:
        for name in ("samplers", "steps", "schedules", "cfgs", "options"):
            if not getattr(self, name):
                raise TLDError(f"the sweep needs at least one value for {name}")
        cells = [
            SampleSettings(sampler=sampler, steps=steps, schedule=schedule, cfg=cfg, options=options)
            for sampler, steps, schedule, cfg, options in itertools.product(
                self.samplers, self.steps, self.schedules, self.cfgs, self.options
            )
        ]
        for cell in cells:
            cell.validate()  # every bad value is reported before any image is made
        return cells


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    computed: int  # cells evaluated in this run
    reused: int  # cells read from an earlier run
    paths: dict[str, Path]


def _read_cell(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable: recompute it
    return stored.get("result") if stored.get("identity") == identity else None


def run_sweep(
    pipe: TLDPipeline,
    ref: ReferenceSet,
    extractor: FeatureExtractor,
    grid: SweepGrid,
    config: EvalConfig,
    out_dir: str | os.PathLike,
    identity: dict[str, Any],
) -> SweepResult:
    """Evaluate every cell not already cached under out_dir, then write the report.

    `identity` names what the cells were computed from (model, data ...); the pipeline's dtype and
    device, the scoring options from `config` and the cell's own settings are added to it, so
    changing any of them (N, the seed, --dtype ...) recomputes the cell.
    """
    cells = grid.cells()
    config.validate()
    identity = {
        **identity,
        **generation_identity(pipe),
        **{k: v for k, v in asdict(config).items() if k not in ("progress", "batch_size")},
    }
    cell_dir = Path(out_dir) / "cells"
    cell_dir.mkdir(parents=True, exist_ok=True)
    rows, computed = [], 0
    for cell in tqdm(cells, desc="sweep", disable=not config.progress):
        path = cell_dir / f"{cell.label}.json"
        # as read back from JSON, for the comparison
        cell_identity = json.loads(json.dumps({**identity, "setting": cell.to_dict()}))
        result = _read_cell(path, cell_identity)
        if result is None:
            result = evaluate_setting(pipe, ref, extractor, cell, config)
            write_json_atomic(path, {"identity": cell_identity, "result": result})
            computed += 1
        rows.append(result)
    header = (
        f"Sweep of {identity.get('model', 'a model')} against {identity.get('data', 'the reference')}: "
        + (
            f"N={config.n} generated vs {len(ref.features)} real images, {ref.extractor} features, seed {config.seed}. "
            "NFE counts denoiser calls per image (a CFG pair runs as one batched call)."
        )
    )
    paths = write_report(rows, out_dir, header)
    return SweepResult(rows=rows, computed=computed, reused=len(cells) - computed, paths=paths)
