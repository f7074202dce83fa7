"""Reading tables of URL + caption (CSV, TSV, Parquet, JSONL) and checking their columns."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tld.common import first_line
from tld.errors import TLDError

# File suffix -> (pandas reader name, img2dataset input_format)
TABLE_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
}


def table_format(path: str | os.PathLike) -> str:
    """The table's format from its suffix; unknown suffixes are a TLDError naming the known ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise TLDError(f"table {path} has suffix {suffix!r}; expected one of {sorted(TABLE_FORMATS)}")
    return TABLE_FORMATS[suffix]


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV / TSV / Parquet / JSONL table into a DataFrame (strings kept as strings)."""
    path = Path(path)
    if not path.is_file():
        raise TLDError(f"table {path} does not exist")
    fmt = table_format(path)
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if fmt == "tsv":
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True, dtype=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (ValueError, OSError) as exc:
        raise TLDError(f"cannot read table {path} as {fmt}: {first_line(exc)}") from None


def check_columns(df: pd.DataFrame, required: list[str], source: str) -> None:
    """Fail with the columns that were found when a required one is missing, or when there are no rows."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        found = list(map(str, df.columns))
        raise TLDError(f"{source} has no column(s) {missing}; columns found: {found}")
    if len(df) == 0:
        raise TLDError(f"{source} is empty: expected at least one row with columns {required}")
