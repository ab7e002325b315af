"""Feature preparation learned on the training split only and saved as JSON.

Categorical levels come from the training rows alone (no leakage from valid/test); a level never seen
in training becomes missing, which the tree models route down their learned default branch.

Two ways in, one set of rules. ``TabularPreprocessor.transform`` reads a DataFrame (training,
evaluation, batch scoring); ``RowEncoder`` is the same preparation compiled once per model version
for serving: the feature index and the level -> code maps built up front, rows read straight from
request dicts into a float32 matrix with no pandas per call. What a value means is defined once,
here, and both use it:

* a numeric feature reads a number (``to_number``): bools as 0/1, ints and floats as they are,
  text by a fixed grammar (``parse_number``), anything unreadable as missing;
* a categorical feature reads a level (``level_key``): text as it is, other scalars as their
  Python text (``1`` is ``"1"``, ``True`` is ``"True"``), a level unseen in training as missing;
* ``None`` and NaN are missing. Tree models route missing values down their learned default
  branch; a number beyond float32's range (or infinite) is refused, the trees cannot take it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# The text a number may be written as: decimal digits with an optional sign, fraction and
# exponent, or inf / infinity / nan, surrounded by optional ASCII white space. Not Python's
# float() grammar (no "1_000", no non-ASCII digits) nor pandas' parser, whose rules and rounding
# change between versions: this is the one the models are served with.
_NUMBER = re.compile(
    r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)", re.I | re.A
)
_SPACE = " \t\n\r\x0b\x0c"


class FeatureValueError(ValueError):
    """A value no model can take (not a scalar, or a number out of float32's range)."""

    def __init__(self, row: int, feature: str, problem: str):
        super().__init__(f"instances[{row}].{feature}: {problem}")
        self.row, self.feature, self.problem = row, feature, problem


def is_missing(v: Any) -> bool:
    """None, a float NaN or pandas' NA."""
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v))


def parse_number(v: Any) -> float | None:
    """``v`` as a float, or None when it is text that does not read as a number.

    Raises TypeError for what is not a scalar (a list, a mapping, bytes, a date).
    """
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if isinstance(v, (int, np.integer)):
        try:
            return float(v)
        except OverflowError:  # an int beyond any float: as out of range as float("inf")
            return math.inf if v > 0 else -math.inf
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, str):
        text = v.strip(_SPACE)
        return float(text) if _NUMBER.fullmatch(text) else None
    if v is None or v is pd.NA:
        return math.nan
    raise TypeError(f"expected a number, text or null, got {type(v).__name__}")


def to_number(v: Any) -> float:
    """What a numeric feature reads: ``parse_number`` with unreadable text as missing (NaN)."""
    x = parse_number(v)
    return math.nan if x is None else x


def level_key(v: Any) -> str | None:
    """The text a categorical feature looks up in its levels; None when ``v`` is missing."""
    if isinstance(v, str):
        return v
    if is_missing(v):
        return None
    if isinstance(v, (bool, np.bool_, int, np.integer, float, np.floating)):
        # Python's text for it, as pandas' ``astype("string")`` writes a column of such values.
        return str(v.item() if isinstance(v, (np.bool_, np.integer)) else v)
    raise TypeError(f"expected text, a number or null, got {type(v).__name__}")


def display_value(v: Any) -> Any:
    """A feature's value as an answer shows it: JSON scalars, floats to 4 decimals."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return round(v, 4)
    return v


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
            s = df[col]
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                cols.append(s.to_numpy(dtype=float, na_value=np.nan))
            else:  # text or mixed values: read one by one, by the one rule
                cols.append(np.fromiter((to_number(v) for v in s), dtype=float, count=len(s)))
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


@dataclass(frozen=True)
class EncodedRows:
    """Rows read for a model: the float32 matrix and, per row, the features it had no use of."""

    x: np.ndarray  # (rows, features), NaN where missing
    missing: list[tuple[str, ...]]  # not sent, or sent as null / NaN
    unrecognised: list[tuple[str, ...]]  # sent, but text that is no number or a level unseen


class RowEncoder:
    """``TabularPreprocessor.transform`` compiled for serving: request dicts to float32 rows.

    Built once per model version. ``fixed`` names features the caller of ``encode`` fills in
    itself (the accept model's offer level): they are neither read from the rows nor reported.
    ``dtype`` is the matrix's: float32 as XGBoost reads ``transform``'s output, float64 for
    models trained on float64 frames (LightGBM), so a value never rounds across a split.
    """

    def __init__(
        self, pre: TabularPreprocessor, fixed: Iterable[str] = (), dtype: type = np.float32
    ):
        self.dtype = np.dtype(dtype)
        fixed = set(fixed)
        unknown = fixed - set(pre.features)
        if unknown:
            raise KeyError(f"fixed feature(s) {sorted(unknown)} are not features of this model")
        self.features: list[str] = pre.features
        self.index: dict[str, int] = {f: j for j, f in enumerate(self.features)}
        self.numeric: list[tuple[int, str]] = [
            (self.index[c], c) for c in pre.numeric if c not in fixed
        ]
        self.categorical: list[tuple[int, str, dict[str, float]]] = [
            (self.index[c], c, {lv: float(k) for k, lv in enumerate(levels)})
            for c, levels in pre.categorical.items()
            if c not in fixed
        ]
        # Report order: the model's feature order, as the DataFrame path lists them.
        self.read = sorted([*self.numeric, *((j, c) for j, c, _ in self.categorical)])

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> EncodedRows:
        width = len(self.features)
        nan = math.nan
        values: list[list[float]] = []
        missing: list[tuple[str, ...]] = []
        unrecognised: list[tuple[str, ...]] = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise FeatureValueError(i, "*", f"expected an object, got {type(row).__name__}")
            out = [nan] * width
            lacks: list[int] = []
            unread: list[int] = []
            for j, name in self.numeric:
                v = row.get(name)
                if is_missing(v):
                    lacks.append(j)
                    continue
                try:
                    x = parse_number(v)
                except TypeError as err:
                    raise FeatureValueError(i, name, str(err)) from None
                if x is None:
                    unread.append(j)
                elif math.isnan(x):
                    lacks.append(j)
                else:
                    out[j] = x
            for j, name, codes in self.categorical:
                v = row.get(name)
                try:
                    key = level_key(v)
                except TypeError as err:
                    raise FeatureValueError(i, name, str(err)) from None
                if key is None:
                    lacks.append(j)
                elif key in codes:
                    out[j] = codes[key]
                else:
                    unread.append(j)
            values.append(out)
            missing.append(tuple(self.features[j] for j in sorted(lacks)))
            unrecognised.append(tuple(self.features[j] for j in sorted(unread)))
        wide = np.asarray(values, dtype=np.float64).reshape(len(values), width)
        with np.errstate(over="ignore"):
            x = wide.astype(self.dtype)  # the rounding transform's astype applies
        if np.isinf(x).any():
            i, j = (int(k) for k in np.argwhere(np.isinf(x))[0])
            name = self.features[j]
            raise FeatureValueError(
                i, name, f"{rows[i][name]!r} is not a finite number in {self.dtype.name}'s range"
            )
        return EncodedRows(x, missing, unrecognised)
