"""bq:// sources, offline: the URI, the query built, the schema's type mapping, the cells."""

from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pytest
from google.cloud import bigquery

from retention.config import load_profile
from retention.data.sources import (
    BigQueryTable,
    build_query,
    cells_of,
    check_schema,
    is_bigquery,
    parse_uri,
)


def test_uri_parsing():
    assert parse_uri("bq://my-project.retention.customers") == BigQueryTable(
        "my-project", "retention", "customers"
    )
    scoped = parse_uri("bq://example.com:my-project.ds.tbl")
    assert scoped.project == "example.com:my-project" and scoped.table == "tbl"
    for bad, why in (
        ("bq://my-project.retention", "got 2 part"),
        ("bq://My_Project.retention.customers", "project name"),
        ("bq://my-project.ret ention.customers", "dataset name"),
        ("bq://my-project.retention.cust`omers", "table name"),
        ("gs://bucket/customers.csv", "not a BigQuery URI"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_uri(bad)
    assert is_bigquery("bq://p.d.t") and not is_bigquery("telco.csv") and not is_bigquery(None)


def test_the_query_selects_quoted_columns_and_parameterises_values():
    t = parse_uri("bq://my-project.retention.decisions")
    sql, params = build_query(t)
    assert sql == "SELECT * FROM `my-project.retention.decisions`" and params == []
    since = datetime(2026, 11, 1, tzinfo=UTC)
    sql, params = build_query(
        t, ["customer_id", "churn_probability"], time_column="decided_at", since=since, limit=10
    )
    assert sql == (
        "SELECT `customer_id`, `churn_probability` FROM `my-project.retention.decisions` "
        "WHERE `decided_at` >= @since LIMIT @limit"
    )
    assert params == [
        {"name": "since", "type": "TIMESTAMP", "value": since},
        {"name": "limit", "type": "INT64", "value": 10},
    ]
    with pytest.raises(ValueError, match="not a valid BigQuery column name"):
        build_query(t, ["a; DROP TABLE x --"])
    with pytest.raises(ValueError, match="needs the time column"):
        build_query(t, since=since)


def test_schema_types_map_to_the_profiles_column_kinds():
    schema = [
        bigquery.SchemaField("customerID", "STRING"),
        bigquery.SchemaField("tenure", "INT64"),
        bigquery.SchemaField("MonthlyCharges", "FLOAT64"),
        bigquery.SchemaField("TotalCharges", "NUMERIC"),
        bigquery.SchemaField("Contract", "STRING"),
        bigquery.SchemaField("signed_up", "TIMESTAMP"),
        bigquery.SchemaField("senior", "BOOL"),
        bigquery.SchemaField("tags", "STRING", mode="REPEATED"),
    ]
    uri = "bq://p-roject.ds.customers"
    spec = load_profile("local").data.customers
    kinds = check_schema(uri, schema, dict(spec.columns))
    assert kinds["tenure"] == "integer" and kinds["TotalCharges"] == "number"
    assert kinds["signed_up"] == "datetime" and kinds["senior"] == "string"
    assert "tags" not in kinds
    # An integer column may hold what the profile calls a number; the reverse is an error.
    assert check_schema(uri, schema, {"tenure": "number"})["tenure"] == "integer"
    with pytest.raises(ValueError, match=r"customers: column 'MonthlyCharges': BigQuery type "):
        check_schema(uri, schema, {"MonthlyCharges": "integer"})
    with pytest.raises(ValueError, match=r"column 'churn' is missing"):
        check_schema(uri, schema, {"churn": "string"})
    with pytest.raises(ValueError, match=r"column 'tags': BigQuery type STRING \(repeated\)"):
        check_schema(uri, schema, {"tags": "string"})


def test_rows_become_cells_as_a_csv_gives_them():
    arrow = pa.table(
        {
            "tenure": pa.array([1, None], pa.int64()),
            "charges": [29.85, None],
            "senior": [True, False],
            "when": pa.array([datetime(2026, 1, 2, tzinfo=UTC), None], pa.timestamp("us", "UTC")),
            "name": ["a", None],
        }
    )
    cells = cells_of(arrow)
    assert cells.to_dict("list") == {
        "tenure": ["1", ""],
        "charges": ["29.85", ""],
        "senior": ["true", "false"],
        "when": ["2026-01-02T00:00:00+00:00", ""],
        "name": ["a", ""],
    }
    assert isinstance(cells, pd.DataFrame)


def test_the_gcp_profile_names_a_real_source_for_every_dataset():
    gcp = load_profile("gcp")
    for name, spec in gcp.data.items():
        assert spec.uri, f"data.{name} is synthetic on the gcp profile"
        if is_bigquery(spec.uri):
            assert parse_uri(spec.uri).project == gcp.gcp.project
    assert is_bigquery(gcp.monitoring.decisions)
