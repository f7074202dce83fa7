"""URL + caption tables -> webdataset shards, fetched with img2dataset.

img2dataset does the fetching, resizing and shard writing; this module checks the table first (so a
missing column is one clear line, not a worker traceback), runs it, and sums its per-shard
`*_stats.json` files into one summary of successes and failure reasons.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tld.preprocessing.shards import write_source_info
from tld.preprocessing.tables import check_columns, read_table

from tld.errors import TLDError

RESIZE_MODES = ("center_crop", "keep_ratio", "border", "no")
# The normalised copy of the user's table that img2dataset reads; a subfolder, because img2dataset
# treats every top-level *.json of its output folder as a finished shard's stats.
INPUT_DIR = "_tld_input"


@dataclass
class DownloadConfig:
    url_col: str = "url"
    caption_col: str = "caption"
    image_size: int = 256
    resize_mode: str = "center_crop"
    samples_per_shard: int = 10000
    processes: int = 1
    threads: int = 32
    timeout: int = 10
    retries: int = 0
    encode_format: str = "jpg"
    min_image_size: int = 0
    overwrite: bool = False
    distributor: str = "multiprocessing"  # or "pyspark" / "ray" for clusters

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DownloadConfig:
        return cls(**d)


@dataclass
class DownloadSummary:
    """img2dataset's counts summed over every shard of the output folder."""

    count: int = 0
    successes: int = 0
    failed_to_download: int = 0
    failed_to_resize: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count
    shards: int = 0

    def format(self) -> str:
        lines = [
            f"{self.successes} of {self.count} images downloaded into {self.shards} shard(s); "
            f"{self.failed_to_download} failed to download, {self.failed_to_resize} failed to resize"
        ]
        for reason, n in sorted(self.failures.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {n:6d}  {reason}")
        return "\n".join(lines)


def summarize_stats(folder: str | os.PathLike) -> DownloadSummary:
    """Sum img2dataset's `*_stats.json` files (one per finished shard)."""
    summary = DownloadSummary()
    reasons: Counter[str] = Counter()
    for path in sorted(Path(folder).glob("*_stats.json")):
        stats = json.loads(path.read_text())
        summary.shards += 1
        summary.count += int(stats.get("count", 0))
        summary.successes += int(stats.get("successes", 0))
        summary.failed_to_download += int(stats.get("failed_to_download", 0))
        summary.failed_to_resize += int(stats.get("failed_to_resize", 0))
        reasons.update({k: int(v) for k, v in stats.get("status_dict", {}).items() if k != "success"})
    summary.failures = dict(reasons)
    return summary


def _write_input_table(table: str | os.PathLike, out: Path, cfg: DownloadConfig) -> Path:
    df = read_table(table)
    check_columns(df, [cfg.url_col, cfg.caption_col], f"table {table}")
    df = df[[cfg.url_col, cfg.caption_col]].rename(columns={cfg.url_col: "url", cfg.caption_col: "caption"})
    df["url"] = df["url"].astype(str).str.strip()
    df["caption"] = df["caption"].fillna("").astype(str)
    df = df[df["url"] != ""]
    if len(df) == 0:
        raise TLDError(f"table {table} has no non-empty values in column {cfg.url_col!r}")
    path = out / INPUT_DIR / "urls.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.reset_index(drop=True).to_parquet(path, index=False)
    return path


def download(
    table: str | os.PathLike, out: str | os.PathLike, config: DownloadConfig | None = None
) -> DownloadSummary:
    """Fetch a URL + caption table into webdataset shards in `out`; a rerun only fetches missing shards.

    Call from under `if __name__ == "__main__":` in scripts: img2dataset starts spawned processes.
    """
    cfg = config or DownloadConfig()
    if cfg.resize_mode not in RESIZE_MODES:
        raise TLDError(f"resize mode must be one of {list(RESIZE_MODES)}, got {cfg.resize_mode!r}")
    if cfg.image_size <= 0 or cfg.samples_per_shard <= 0:
        raise TLDError(
            f"image size and samples per shard must be > 0, got {cfg.image_size} and {cfg.samples_per_shard}"
        )
    out = Path(out)
    if cfg.overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    url_table = _write_input_table(table, out, cfg)

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    spark = spark_session(cfg.processes) if cfg.distributor == "pyspark" else None
    try:
        _run_img2dataset(url_table, out, cfg)
    finally:
        if spark is not None:
            spark.stop()
    write_source_info(
        out, {"source": f"img2dataset:{Path(table).name}", "license": "", "download": cfg.to_dict()}
    )
    return summarize_stats(out)


def spark_session(processes: int):
    """For distributor='pyspark': None when a Spark session is active (a cluster's: img2dataset uses
    it), else a new local[processes] session, light and offline (no UI), for the caller to stop."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise TLDError("--distributor pyspark needs pyspark (pip install pyspark) and Java 17+") from None
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise TLDError("--distributor pyspark needs Java 17+ (Debian: apt-get install default-jre-headless)")
    if SparkSession.getActiveSession() is not None:
        return None
    builder = SparkSession.builder.master(f"local[{max(1, processes)}]").appName("tld-download")
    # The Python workers must be this interpreter (it has img2dataset), not the PATH's python3.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = {
        "spark.ui.enabled": "false",
        "spark.driver.memory": "2g",
        "spark.pyspark.python": sys.executable,
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _run_img2dataset(url_table: Path, out: Path, cfg: DownloadConfig) -> None:
    from img2dataset import download as img2dataset_download  # heavy import: only when downloading

    img2dataset_download(
        url_list=str(url_table),
        output_folder=str(out),
        input_format="parquet",
        url_col="url",
        caption_col="caption",
        output_format="webdataset",
        image_size=cfg.image_size,
        resize_mode=cfg.resize_mode,
        number_sample_per_shard=cfg.samples_per_shard,
        processes_count=cfg.processes,
        thread_count=cfg.threads,
        timeout=cfg.timeout,
        retries=cfg.retries,
        encode_format=cfg.encode_format,
        min_image_size=cfg.min_image_size,
        distributor=cfg.distributor,
        incremental_mode="incremental",
        enable_wandb=False,
        compute_hash=None,
        # Our own test servers and many CDNs send no X-Robots-Tag; honouring it stays the default.
    )
