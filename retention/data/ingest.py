"""Ingest: every configured dataset from its URI (or the synthetic generator), validated, as Parquet.

A URI is a local path, ``gs://``, ``https://`` or a BigQuery table ``bq://project.dataset.table``
(``retention.data.sources``).

All datasets are read and validated before anything is written, and the output directory appears
only when every table is in it: a bad file leaves no partial output behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from retention.config import DatasetSpec, Profile
from retention.contract import ContactContract
from retention.data import sources, synthetic
from retention.data.validate import parse_table, validate_table
from retention.fileio import atomic_dir, read_bytes, write_json

MANIFEST = "manifest.json"


def load_dataset(
    name: str, spec: DatasetSpec, seed: int, contract: ContactContract
) -> tuple[pd.DataFrame, str]:
    """One validated table and a description of where it came from (synthetic offers and
    messages follow ``contract``)."""
    if sources.is_bigquery(spec.uri):
        # The table's schema is checked against the spec's column kinds before a row is read;
        # its cells come back as text, as a CSV's do, and take the same validation.
        df = sources.read_table(spec.uri, expected=dict(spec.columns))
        if df.empty:
            raise ValueError(f"{spec.uri}: the table has no rows")
        source = spec.uri
    elif spec.uri:
        raw = read_bytes(spec.uri)
        df = parse_table(raw, spec.uri, spec)
        source = spec.uri
    else:
        df = synthetic.generate(name, spec.rows, seed, contract)
        source = f"synthetic:{name}(rows={spec.rows}, seed={seed})"
        # Round-trip through strings like a CSV so synthetic and real data take the same path.
        df = df.astype(str).replace({"nan": "", "NaT": ""})
    return validate_table(df, source, spec), source


def ingest(profile: Profile, out_dir: str | Path) -> dict[str, Any]:
    tables: dict[str, pd.DataFrame] = {}
    manifest: dict[str, Any] = {"profile": profile.name, "datasets": {}}
    for i, (name, spec) in enumerate(profile.data.items()):
        df, source = load_dataset(name, spec, profile.seed + i, profile.contract)
        tables[name] = df
        info: dict[str, Any] = {"source": source, "rows": len(df), "columns": list(df.columns)}
        if spec.target:
            info["positive_rate"] = round(float(df[spec.target].mean()), 4)
        manifest["datasets"][name] = info
    with atomic_dir(out_dir) as tmp:
        for name, df in tables.items():
            df.to_parquet(tmp / f"{name}.parquet", index=False)
        write_json(tmp / MANIFEST, manifest)
    return manifest


def read_table(dataset_dir: str | Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(Path(dataset_dir) / f"{name}.parquet")
