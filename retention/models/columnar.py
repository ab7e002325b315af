"""The batch path of the tabular models: Arrow columns straight into the model's float32 matrix.

``TabularPreprocessor.transform`` reads a pandas frame column by column, the categorical ones
through a Python mapping per value; on a million customers that costs more than the trees. A
``ColumnEncoder`` is the same preparation compiled once per model version for column batches
(the parquet a batch run reads): numbers are cast by Arrow, levels looked up by
``pyarrow.compute.index_in`` against the training levels, text that has to be read as a number
or non-text levels converted once per distinct value. The rules are ``transform``'s on the
frame ``table.to_pandas()`` would give, and ``tests/test_batch.py`` fuzzes one against the other:

* a numeric feature: numbers and bools as they are (bools 0/1), text by ``to_number``'s grammar
  (unreadable text is missing; Arrow's faster parser is used when it reads every value of the
  column, and the fuzz test holds it to the same numbers), null missing;
* a categorical feature: a level's text as pandas' ``astype("string")`` writes it (``1`` is
  ``"1"``, an integer column with nulls is read as floats, so ``"1.0"``), unseen levels and null
  missing;
* a feature the table lacks is missing for every row; any other column type is a TypeError
  naming the feature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from retention.models.preprocess import TabularPreprocessor, to_number


def decoded(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary column as its plain values; any other column as it is."""
    t = col.type
    if pa.types.is_dictionary(t):
        return col.cast(t.value_type)
    return col


def _through_dictionary(col: pa.ChunkedArray, read) -> np.ndarray:
    """A dictionary column (as parquet stores text): ``read`` (distinct values -> float array)
    on each chunk's dictionary, then one gather by the indices, NaN for null."""
    out = []
    for chunk in col.chunks:
        values = np.append(read(chunk.dictionary), np.nan)  # the last slot stands for null
        idx = pc.fill_null(chunk.indices, len(chunk.dictionary))
        out.append(values[idx.to_numpy(zero_copy_only=False).astype(np.int64)])
    return np.concatenate(out) if out else np.empty(0)


def _is_number(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_boolean(t)
    )


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _by_distinct(col: pa.ChunkedArray | pa.Array, read) -> np.ndarray:
    """``read`` (distinct values -> float array) applied once per distinct value of ``col``."""
    whole = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    encoded = pc.dictionary_encode(whole)
    values = read(encoded.dictionary)
    idx = encoded.indices.to_numpy(zero_copy_only=False)
    out = np.full(len(col), np.nan)
    valid = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
    out[valid] = values[idx[valid].astype(np.int64)]
    return out


class ColumnEncoder:
    """A model version's features read from Arrow tables, as ``transform`` reads frames."""

    def __init__(self, pre: TabularPreprocessor, dtype: type = np.float32):
        self.pre = pre
        self.dtype = np.dtype(dtype)
        self.features = pre.features
        self._levels = {c: pa.array(levels, pa.string()) for c, levels in pre.categorical.items()}
        self._lookup = {c: {v: i for i, v in enumerate(lv)} for c, lv in pre.categorical.items()}

    def encode(self, table: pa.Table) -> np.ndarray:
        """The ``(rows, features)`` matrix, NaN where missing."""
        n = table.num_rows
        x = np.empty((n, len(self.features)), dtype=self.dtype)
        names = set(table.column_names)
        for j, name in enumerate(self.features):
            if name not in names:
                x[:, j] = np.nan
            else:
                col = table.column(name)
                read = self._level_codes if name in self._levels else self._numbers
                t = col.type
                if pa.types.is_dictionary(t) and _is_text(t.value_type):
                    x[:, j] = _through_dictionary(col, lambda d, r=read, c=name: r(c, d))
                else:
                    x[:, j] = read(name, decoded(col))
        return x

    def _numbers(self, name: str, col: pa.ChunkedArray | pa.Array) -> np.ndarray:
        t = col.type
        if pa.types.is_null(t):
            return np.full(len(col), np.nan)
        if _is_number(t):
            return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        if _is_text(t):
            # Arrow's parser first (blank text is missing either way); any value it refuses
            # sends the column through to_number, once per distinct value.
            blank = pc.equal(pc.utf8_trim_whitespace(col), "")
            try:
                cleared = pc.if_else(blank, pa.scalar(None, pa.string()), col)
                return pc.cast(cleared, pa.float64()).to_numpy(zero_copy_only=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                read = np.vectorize(to_number, otypes=[float])
                return _by_distinct(col, lambda d: read(np.asarray(d.to_pylist(), dtype=object)))
        raise TypeError(f"{name}: a {t} column cannot be read as a number")

    def _level_codes(self, name: str, col: pa.ChunkedArray | pa.Array) -> np.ndarray:
        t = col.type
        if pa.types.is_null(t):
            return np.full(len(col), np.nan)
        if _is_text(t):
            codes = pc.index_in(col, value_set=self._levels[name])
            return pc.cast(codes, pa.float64()).to_numpy(zero_copy_only=False)
        if not _is_number(t):
            raise TypeError(f"{name}: a {t} column cannot be read as a level")
        if pa.types.is_integer(t) and col.null_count:
            col = col.cast(pa.float64())  # as to_pandas() gives it: floats, NaN for null
        lookup = self._lookup[name]

        def read(distinct: pa.Array) -> np.ndarray:
            text = pd.Series(distinct.to_pandas()).astype("string")
            return np.asarray([lookup.get(v, np.nan) for v in text], dtype=float)

        return _by_distinct(col, read)
