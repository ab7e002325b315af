"""Split every ingested table into train / valid / test Parquet files.

Stratified by the target (seeded), time-ordered when the spec names a time column, grouped when rows
of one customer must stay together, or passed through whole (``split: none``) for tables whose
trainer makes its own point-in-time cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from retention.config import DatasetSpec, Profile, SplitConfig
from retention.data.ingest import read_table
from retention.fileio import atomic_dir, write_json

PARTS = ("train", "valid", "test")


def split_frame(
    df: pd.DataFrame, spec: DatasetSpec, fractions: SplitConfig, seed: int
) -> dict[str, pd.DataFrame]:
    holdout = fractions.valid + fractions.test
    test_share = fractions.test / holdout
    if spec.split == "none":
        return {"all": df}
    if spec.split == "time":
        if not spec.time_column:
            raise ValueError("split 'time' needs the dataset spec's time_column")
        ordered = df.sort_values(spec.time_column, kind="stable").reset_index(drop=True)
        n = len(ordered)
        a, b = int(round(n * fractions.train)), int(round(n * (fractions.train + fractions.valid)))
        return {"train": ordered[:a], "valid": ordered[a:b], "test": ordered[b:]}
    if spec.split == "group":
        if not spec.group_column:
            raise ValueError("split 'group' needs the dataset spec's group_column")
        groups = df[spec.group_column].to_numpy()
        outer = GroupShuffleSplit(n_splits=1, test_size=holdout, random_state=seed)
        tr, rest = next(outer.split(df, groups=groups))
        inner = GroupShuffleSplit(n_splits=1, test_size=test_share, random_state=seed)
        va, te = next(inner.split(rest, groups=groups[rest]))
        return {"train": df.iloc[tr], "valid": df.iloc[rest[va]], "test": df.iloc[rest[te]]}
    strat = df[spec.target] if spec.target else None
    train, rest = train_test_split(df, test_size=holdout, random_state=seed, stratify=strat)
    strat_rest = rest[spec.target] if spec.target else None
    valid, test = train_test_split(
        rest, test_size=test_share, random_state=seed, stratify=strat_rest
    )
    return {"train": train, "valid": valid, "test": test}


def split(profile: Profile, dataset_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for name, spec in profile.data.items():
            parts = split_frame(read_table(dataset_dir, name), spec, profile.split, profile.seed)
            (tmp / name).mkdir()
            info = {}
            for part, frame in parts.items():
                frame.reset_index(drop=True).to_parquet(tmp / name / f"{part}.parquet", index=False)
                info[part] = {"rows": len(frame)}
                if spec.target and part != "all":
                    info[part]["positive_rate"] = round(float(np.mean(frame[spec.target])), 4)
            summary[name] = info
        write_json(tmp / "splits.json", summary)
    return summary


def read_split(split_dir: str | Path, name: str, part: str) -> pd.DataFrame:
    return pd.read_parquet(Path(split_dir) / name / f"{part}.parquet")
