"""Parsing and validating an input table, with errors that name the file, the column and the row.

Rows are reported as 1-based data rows together with the line of the file they came from (the header
is line 1), so a person can open the file and find the culprit.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from retention.config import DatasetSpec

ColumnKind = Literal["number", "integer", "string", "datetime"]
MAX_LISTED = 5


class DataValidationError(ValueError):
    """An input table is not usable; the message says where and why."""

    def __init__(self, source: str, problem: str, *, column: str | None = None, rows=()):
        self.source, self.column, self.rows = source, column, list(rows)
        where = [source]
        if column is not None:
            where.append(f"column '{column}'")
        if self.rows:
            listed = ", ".join(f"row {r} (line {r + 1})" for r in self.rows[:MAX_LISTED])
            more = f" and {len(self.rows) - MAX_LISTED} more" if len(self.rows) > MAX_LISTED else ""
            where.append(listed + more)
        super().__init__(": ".join(where) + f": {problem}")


def _rows(mask: np.ndarray | pd.Series) -> list[int]:
    return [int(i) + 1 for i in np.flatnonzero(np.asarray(mask))]


def _blank(s: pd.Series) -> pd.Series:
    return s.isna() | (s.astype(str).str.strip() == "")


def decode(raw: bytes, source: str, encoding: str) -> str:
    if not raw.strip():
        raise DataValidationError(source, "file is empty")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataValidationError(
            source,
            f"line {line}: bytes are not valid {encoding} (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); re-save the file as {encoding} or set the dataset's encoding",
        ) from None


def parse_table(raw: bytes, source: str, spec: DatasetSpec) -> pd.DataFrame:
    """Bytes → a DataFrame of strings (CSV) or typed columns (Parquet)."""
    fmt = spec.format
    if fmt == "auto":
        fmt = "parquet" if source.lower().endswith((".parquet", ".pq")) else "csv"
    if fmt == "parquet":
        if not raw:
            raise DataValidationError(source, "file is empty")
        try:
            df = pq.read_table(io.BytesIO(raw)).to_pandas()
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataValidationError(source, f"not a readable Parquet file: {exc}") from None
    else:
        text = decode(raw, source, spec.encoding)
        sep = spec.sep if spec.sep != "whitespace" else r"\s+"
        try:
            df = pd.read_csv(
                io.StringIO(text),
                sep=sep,
                dtype=str,
                keep_default_na=False,
                engine="python" if sep == r"\s+" else "c",
            )
        except pd.errors.ParserError as exc:
            raise DataValidationError(source, f"malformed CSV: {exc}") from None
        df.columns = [c.strip() for c in df.columns]
    if df.empty:
        raise DataValidationError(source, "file has a header but no data rows")
    return df


def coerce_column(df: pd.DataFrame, col: str, kind: ColumnKind, source: str) -> pd.Series:
    s = df[col]
    if kind == "string":
        return s.astype("string").str.strip() if s.dtype == object else s.astype("string")
    blank = _blank(s) if s.dtype == object else s.isna()
    if kind == "datetime":
        out = pd.to_datetime(s.where(~blank), errors="coerce", format="mixed")
        what = "a date"
    else:
        out = pd.to_numeric(s.where(~blank), errors="coerce")
        what = "a number"
        if kind == "integer":
            frac = out.notna() & (out != np.floor(out))
            if frac.any():
                raise DataValidationError(
                    source, "expected an integer", column=col, rows=_rows(frac)
                )
            what = "an integer"
    bad = out.isna() & ~blank
    if bad.any():
        sample = s[bad].iloc[0]
        raise DataValidationError(
            source, f"expected {what}, got {sample!r}", column=col, rows=_rows(bad)
        )
    return out


def infer_types(df: pd.DataFrame, skip: set[str]) -> pd.DataFrame:
    """Columns not declared in the spec become numbers when every non-blank value parses."""
    for col in df.columns:
        if col in skip or df[col].dtype != object:
            continue
        blank = _blank(df[col])
        num = pd.to_numeric(df[col].where(~blank), errors="coerce")
        if not (num.isna() & ~blank).any() and (~blank).any():
            df[col] = num
        else:
            df[col] = df[col].astype("string").str.strip()
    return df


def validate_table(df: pd.DataFrame, source: str, spec: DatasetSpec) -> pd.DataFrame:
    """Check the table against its spec; return it typed, with a 0/1 integer target."""
    needed = list(dict.fromkeys(spec.required_columns + list(spec.columns)))
    for col in [spec.target, spec.id_column, spec.time_column, spec.group_column, *needed]:
        if col and col not in df.columns:
            raise DataValidationError(
                source,
                f"required column is missing (columns present: {', '.join(map(str, df.columns))})",
                column=col,
            )
    df = df.drop(columns=[c for c in spec.drop if c in df.columns])
    for col, kind in spec.columns.items():
        df[col] = coerce_column(df, col, kind, source)
    if spec.time_column and spec.time_column not in spec.columns:
        df[spec.time_column] = coerce_column(df, spec.time_column, "datetime", source)
    text_cols = {c for c in (spec.id_column, spec.group_column, spec.target) if c}
    df = infer_types(df, skip=set(spec.columns) | text_cols)

    for col in (spec.id_column, spec.time_column, spec.group_column):
        if col:
            missing = _blank(df[col]) if df[col].dtype == object else df[col].isna()
            if missing.any():
                raise DataValidationError(
                    source, "value is missing", column=col, rows=_rows(missing)
                )
    unique = (
        spec.unique if spec.unique is not None else ([spec.id_column] if spec.id_column else [])
    )
    if unique:
        dup = df.duplicated(subset=unique, keep="first")
        if dup.any():
            first = df.loc[dup, unique].iloc[0].tolist()
            raise DataValidationError(
                source,
                f"duplicated id {first if len(first) > 1 else first[0]!r} "
                f"({', '.join(unique)} must be unique)",
                column=", ".join(unique),
                rows=_rows(dup),
            )
    if spec.target:
        df[spec.target] = _binary_target(df[spec.target], source, spec)
    return df.reset_index(drop=True)


def _binary_target(s: pd.Series, source: str, spec: DatasetSpec) -> pd.Series:
    col = spec.target
    text = s.astype("string").str.strip()
    blank = text.isna() | (text == "")
    if blank.any():
        raise DataValidationError(source, "label is missing", column=col, rows=_rows(blank))
    allowed = spec.labels or sorted(text.unique().tolist())
    if spec.positive is None:
        raise DataValidationError(source, "the dataset spec names no positive label", column=col)
    unknown = ~text.isin(allowed)
    if unknown.any():
        raise DataValidationError(
            source,
            f"unknown label {text[unknown].iloc[0]!r} (allowed: {', '.join(allowed)})",
            column=col,
            rows=_rows(unknown),
        )
    if len(allowed) != 2 or spec.positive not in allowed:
        raise DataValidationError(
            source,
            f"a binary target needs two labels including the positive {spec.positive!r}; "
            f"found {', '.join(allowed)}",
            column=col,
        )
    return (text == spec.positive).astype("int8")
