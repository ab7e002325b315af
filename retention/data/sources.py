"""Tables from BigQuery: ``bq://project.dataset.table``, read where files are read.

Ingest and the monitor accept a BigQuery URI wherever they accept a path, ``gs://`` or
``https://``. The table is read with one query the module builds (:func:`build_query`: the columns
needed, optionally the rows since a time, always parameterised, identifiers quoted and checked
first, so a URI can never inject SQL), and its schema is checked against the profile's column
types (:func:`check_schema`, by :data:`BQ_KINDS`) before anything is read, so a table whose
``tenure`` is a STRING fails naming the table and the column, as a bad file does.

Rows come back as Arrow (REST; no BigQuery Storage client needed) and are turned into text like a
CSV's cells, so a BigQuery table goes through exactly the validation a file does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

SCHEME = "bq://"
# BigQuery project ids (6-30 chars, optionally domain-scoped), dataset and table names.
_PROJECT = re.compile(r"^(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_TABLE = re.compile(r"^[\w$-]{1,1024}$")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")

# BigQuery column type -> the profile's column kind (DatasetSpec.columns).
BQ_KINDS: dict[str, str] = {
    "INTEGER": "integer",
    "INT64": "integer",
    "FLOAT": "number",
    "FLOAT64": "number",
    "NUMERIC": "number",
    "BIGNUMERIC": "number",
    "STRING": "string",
    "BOOL": "string",  # read as "true" / "false", like a CSV's text
    "BOOLEAN": "string",
    "DATE": "datetime",
    "DATETIME": "datetime",
    "TIMESTAMP": "datetime",
}
# A column the profile calls a number may be stored as an integer.
_COMPATIBLE = {("number", "integer")}


def is_bigquery(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(SCHEME)


@dataclass(frozen=True)
class BigQueryTable:
    project: str
    dataset: str
    table: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.project}.{self.dataset}.{self.table}"

    @property
    def table_id(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"


def parse_uri(uri: str) -> BigQueryTable:
    """``bq://project.dataset.table`` (a domain-scoped project ``example.com:proj`` included)."""
    if not is_bigquery(uri):
        raise ValueError(f"{uri}: not a BigQuery URI (expected bq://project.dataset.table)")
    rest = uri[len(SCHEME) :]
    # The project may contain dots only before its ':' (domain-scoped ids).
    head, sep, tail = rest.rpartition(":")
    parts = tail.split(".")
    if len(parts) != 3:
        raise ValueError(f"{uri}: expected bq://project.dataset.table, got {len(parts)} part(s)")
    project = f"{head}{sep}{parts[0]}"
    dataset, table = parts[1], parts[2]
    for what, value, pattern in (
        ("project", project, _PROJECT),
        ("dataset", dataset, _DATASET),
        ("table", table, _TABLE),
    ):
        if not pattern.match(value):
            raise ValueError(f"{uri}: not a valid BigQuery {what} name: {value!r}")
    return BigQueryTable(project, dataset, table)


def _quote(column: str, uri: str) -> str:
    if not _COLUMN.match(column):
        raise ValueError(f"{uri}: column {column!r} is not a valid BigQuery column name")
    return f"`{column}`"


def build_query(
    table: BigQueryTable,
    columns: list[str] | None = None,
    *,
    time_column: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """The SQL and its parameters (name, type, value): the columns (all when none), the rows at
    or after ``since`` on ``time_column``, at most ``limit`` rows."""
    select = ", ".join(_quote(c, table.uri) for c in columns) if columns else "*"
    # Identifiers cannot be query parameters in BigQuery: they were checked by parse_uri and
    # _quote against BigQuery's name rules (no backtick, quote or space can pass).
    sql = f"SELECT {select} FROM `{table.table_id}`"  # noqa: S608
    params: list[dict[str, Any]] = []
    if since is not None:
        if not time_column:
            raise ValueError(f"{table.uri}: 'since' needs the time column to filter on")
        sql += f" WHERE {_quote(time_column, table.uri)} >= @since"
        params.append({"name": "since", "type": "TIMESTAMP", "value": since})
    if limit is not None:
        if limit < 1:
            raise ValueError(f"{table.uri}: limit must be positive, got {limit}")
        sql += " LIMIT @limit"
        params.append({"name": "limit", "type": "INT64", "value": int(limit)})
    return sql, params


def check_schema(uri: str, schema: list[Any], expected: dict[str, str]) -> dict[str, str]:
    """Every column of ``expected`` (name -> kind) exists in ``schema`` (BigQuery SchemaFields)
    with a type of that kind; each column's kind. A repeated or nested column is refused."""
    kinds: dict[str, str] = {}
    for field in schema:
        kind = BQ_KINDS.get(str(field.field_type).upper())
        if field.mode == "REPEATED" or kind is None:
            if field.name in expected:
                raise ValueError(
                    f"{uri}: column '{field.name}': BigQuery type {field.field_type}"
                    f"{' (repeated)' if field.mode == 'REPEATED' else ''} cannot be read as a "
                    f"table column"
                )
            continue
        kinds[field.name] = kind
    for column, want in expected.items():
        if column not in kinds:
            found = ", ".join(f.name for f in schema)
            raise ValueError(f"{uri}: column '{column}' is missing (the table has: {found})")
        got = kinds[column]
        if got != want and (want, got) not in _COMPATIBLE and want != "string":
            raise ValueError(
                f"{uri}: column '{column}': BigQuery type {_type_of(schema, column)} is "
                f"{got}, the profile expects {want}"
            )
    return kinds


def _type_of(schema: list[Any], column: str) -> str:
    return next(str(f.field_type) for f in schema if f.name == column)


def _job_config(params: list[dict[str, Any]]):
    from google.cloud import bigquery

    return bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter(p["name"], p["type"], p["value"]) for p in params
        ]
    )


def read_table(
    uri: str,
    *,
    expected: dict[str, str] | None = None,
    columns: list[str] | None = None,
    time_column: str | None = None,
    since: datetime | None = None,
    client=None,
) -> pd.DataFrame:
    """The table (or the needed columns of it) as a DataFrame of text cells, empty cells ``""``."""
    table = parse_uri(uri)
    if client is None:
        from google.cloud import bigquery

        client = bigquery.Client(project=table.project)
    check_schema(uri, list(client.get_table(table.table_id).schema), expected or {})
    sql, params = build_query(table, columns, time_column=time_column, since=since)
    rows = client.query(sql, job_config=_job_config(params)).result()
    return cells_of(rows.to_arrow(create_bqstorage_client=False))


def cells_of(table) -> pd.DataFrame:
    """An Arrow table as text cells (integers stay integers where a column has nulls)."""
    return as_text(table.to_pandas(integer_object_nulls=True))


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as a CSV would give them: numbers and times as text, missing as ``""``."""
    out = frame.copy()
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_bool_dtype(s):
            out[col] = s.map({True: "true", False: "false"})
        elif pd.api.types.is_datetime64_any_dtype(s):
            out[col] = s.map(lambda v: "" if pd.isna(v) else v.isoformat())
        else:
            out[col] = s.map(
                lambda v: "" if v is None or (isinstance(v, float) and v != v) else str(v)
            )
    return out.fillna("").astype(str)


def read_frame(uri: str, *, client=None) -> pd.DataFrame:
    """Any table the monitor reads, as it is stored: ``bq://`` (text cells), Parquet (typed) or
    CSV (types inferred), from a path, ``gs://`` or ``https://``."""
    if is_bigquery(uri):
        return read_table(uri, client=client)
    import io

    import pyarrow.parquet as pq

    from retention.data.validate import DataValidationError, decode
    from retention.fileio import read_bytes

    raw = read_bytes(uri)
    if not raw.strip():
        raise DataValidationError(uri, "file is empty")
    if uri.lower().endswith((".parquet", ".pq")):
        try:
            return pq.read_table(io.BytesIO(raw)).to_pandas()
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataValidationError(uri, f"not a readable Parquet file: {exc}") from None
    try:
        return pd.read_csv(io.StringIO(decode(raw, uri, "utf-8")))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataValidationError(uri, f"malformed CSV: {exc}") from None
