"""The PostgreSQL server the ledger tests share, and a private schema per ledger.

``RETENTION_TEST_POSTGRES_URL`` (default: the local server, database ``test``). Tests needing it
skip when the server is unreachable, except in CI (``CI=true``), where that is a failure. Each
ledger gets its own schema, dropped afterwards, so parallel runs never see each other's rows.
"""

from __future__ import annotations

import functools
import os
import uuid

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get(
    "RETENTION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@functools.cache
def _postgres_problem() -> str | None:
    engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3}, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        engine.dispose()
    return None


def require_postgres() -> None:
    problem = _postgres_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL at {PG_URL} is required in CI: {problem}")
    pytest.skip(f"PostgreSQL at {PG_URL} not reachable: {problem}")


def new_schema_name(prefix: str = "test_ledger") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def create_schema(schema: str) -> None:
    engine = sa.create_engine(PG_URL, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    engine.dispose()


def drop_schema(schema: str) -> None:
    engine = sa.create_engine(PG_URL, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


def url_in_schema(schema: str) -> str:
    """A ledger URL (``serving.ledger.url``) whose tables live in ``schema``: the search path
    travels in the URL, as a deployment would put it, so the profile needs no schema field."""
    url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)
