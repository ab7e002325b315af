"""Feature preparation learned on the training split only and saved as JSON.

Categorical levels come from the training rows alone (no leakage from valid/test); a level never seen
in training becomes missing, which the tree models route down their learned default branch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class TabularPreprocessor:
    numeric: list[str] = field(default_factory=list)
    categorical: dict[str, list[str]] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return self.numeric + list(self.categorical)

    @property
    def feature_types(self) -> list[str]:
        return ["q"] * len(self.numeric) + ["c"] * len(self.categorical)

    @classmethod
    def fit(
        cls, df: pd.DataFrame, exclude: list[str], max_levels: int = 200
    ) -> TabularPreprocessor:
        numeric, categorical = [], {}
        for col in df.columns:
            if col in exclude:
                continue
            s = df[col]
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                numeric.append(col)
            elif pd.api.types.is_datetime64_any_dtype(s):
                continue  # raw timestamps are not features; trainers derive durations instead
            else:
                levels = s.dropna().astype(str).value_counts()
                if len(levels) > max_levels:  # free text or an id-like column
                    continue
                categorical[col] = sorted(levels.index.tolist())
        if not numeric and not categorical:
            raise ValueError("no usable feature columns left after excluding " + ", ".join(exclude))
        return cls(numeric=numeric, categorical=categorical)

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.features if c not in df.columns]
        if missing:
            raise KeyError(f"input lacks feature column(s): {', '.join(missing)}")
        cols = []
        for col in self.numeric:
            cols.append(pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float))
        for col, levels in self.categorical.items():
            lookup = {v: i for i, v in enumerate(levels)}
            s = df[col].astype("string")
            cols.append(s.map(lookup).astype("float64").to_numpy(dtype=float, na_value=np.nan))
        return np.column_stack(cols).astype(np.float32) if cols else np.empty((len(df), 0))

    def to_dict(self) -> dict:
        # A list, not a mapping: feature order must survive JSON writers that sort keys.
        return {
            "numeric": self.numeric,
            "categorical": [{"name": k, "levels": v} for k, v in self.categorical.items()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> TabularPreprocessor:
        return cls(
            numeric=list(d["numeric"]),
            categorical={c["name"]: list(c["levels"]) for c in d["categorical"]},
        )
