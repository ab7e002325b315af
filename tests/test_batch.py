"""decide-batch: the decision path over a customer base, on a tiny real release.

The release is built in-process (``tests.serving_fixtures``); the input is the tiny profile's
customer table with bad rows planted in it. Every figure of the summary is recounted from the
files, the decisions are checked against the ledger and against the served predictors, and a
re-run of the same run id must replay, charging nothing.
"""

import json
from collections import Counter
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from retention import catalogue
from retention.config import load_profile
from retention.data.split import read_split
from serving.batch import beside, decide_batch
from serving.ledger import ContactLedger
from tests.serving_fixtures import build_release, tiny_serving_profile

# Several chunks and several ledger transactions per chunk, even on the tiny table.
BATCH = ("batch.chunk_rows=200", "batch.ledger_rows=64")
SEND_AT = datetime.fromisoformat("2026-11-23T12:00:00+00:00")
# Planted problems: (row, column, reason).
PLANTED = {
    (3, "customerID", "missing"),
    (5, "MonthlyCharges", "not a number"),
    (6, "MonthlyCharges", "not a finite number"),
    (7, "tenure", "negative"),
    (8, "timezone", "unknown IANA time zone"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    profile = tiny_serving_profile(root, *BATCH)
    build_release(profile, root)
    return profile, root


@pytest.fixture(scope="module")
def customers(built):
    """The tiny customer table with a name, time zones, numbers as text, and bad rows."""
    _, root = built
    parts = [read_split(root / "splits", "customers", p) for p in ("train", "valid", "test")]
    c = pd.concat(parts, ignore_index=True).drop(columns=["Churn"])
    c["name"] = np.where(np.arange(len(c)) % 2 == 0, "Sam", "Сергей")
    c["timezone"] = "Europe/London"
    c["MonthlyCharges"] = c["MonthlyCharges"].map(repr)  # numbers sent as text are numbers
    c.loc[3, "customerID"] = None
    c.loc[5, "MonthlyCharges"] = "abc"
    c.loc[6, "MonthlyCharges"] = "inf"
    c.loc[7, "tenure"] = -3
    c.loc[8, "timezone"] = "Mars/Base"
    dup = c.iloc[[10]]
    c = pd.concat([c, dup], ignore_index=True)  # the last row repeats row 10's customer
    path = root / "customers.parquet"
    c.to_parquet(path, index=False)
    return path, c


def _profile(built, tmp_path, *overrides):
    """The release's profile with a ledger of the test's own."""
    _, root = built
    ledger = f"serving.ledger.url=sqlite:///{tmp_path / 'ledger.db'}"
    return tiny_serving_profile(root, *BATCH, ledger, *overrides)


def _ledger(profile) -> ContactLedger:
    return ContactLedger.for_store(
        profile.model_store, profile.serving.ledger, profile.contract.limits
    )


def test_decide_batch_reports_bad_rows_and_its_summary_is_the_output(built, customers, tmp_path):
    path, table = customers
    profile = _profile(built, tmp_path)
    out = tmp_path / "decisions.parquet"
    s = decide_batch(profile, path, out, send_at=SEND_AT, run_id="night-1")

    rejects = pd.read_parquet(beside(out, "rejects"))
    found = {(int(r.row), r.column, r.reason) for r in rejects.itertuples()}
    dup = (len(table) - 1, "customerID", "duplicate customer id: first at row 10")
    assert found == PLANTED | {dup}
    assert rejects.set_index("row").loc[5, "value"] == "abc"
    assert rejects.set_index("row").loc[7, "customer_id"] == table.loc[7, "customerID"]

    d = pd.read_parquet(out)
    bad_rows = {r for r, _, _ in found}
    assert s.rows == len(table) and s.rejected == len(bad_rows)
    assert s.decided == len(d) == len(table) - len(bad_rows)
    assert d["customer_id"].is_unique and not d["replayed"].any()
    assert list(d["customer_id"]) == [
        table.loc[i, "customerID"] for i in range(len(table)) if i not in bad_rows
    ]
    # The summary, recounted from the file.
    contacts = d[d["contact"]]
    assert s.contacts == len(contacts) > 0
    assert s.spend == pytest.approx(contacts["offer_cost"].sum(), abs=1e-6)
    assert s.offer_mix == {
        str(int(k)): int(v) for k, v in contacts["offer_level"].value_counts().items()
    }
    assert s.arms == d["arm"].value_counts().to_dict()
    assert s.sources == d["source"].value_counts().to_dict()
    assert s.value_sources == {"book_mapping": len(d)}
    assert s.blocked == dict(Counter(b for bs in d["blocked_by"] for b in bs))
    assert json.loads(beside(out, "summary").read_text())["contacts"] == s.contacts
    # Every contact carries its shielded message; names are sent as written.
    assert contacts["message"].notna().all() and contacts["shield_passed"].all()
    assert any("Сергей" in m for m in contacts["message"])
    assert d.loc[~d["contact"], "message"].isna().all()
    # The ledger holds each decision once, as the file says, and the run's spend.
    with _ledger(profile) as led:
        for row in d.itertuples():
            rec = led.get(row.request_id)
            assert rec is not None and rec.contact == row.contact
            assert rec.offer_cost == pytest.approx(row.offer_cost)
        assert led.summary().decisions == len(d)
        assert led.spent(s.period) == pytest.approx(s.spend) == pytest.approx(s.period_spent)
    assert 0 < s.budget_used < 1


def test_a_rerun_of_the_run_replays_and_charges_nothing(built, customers, tmp_path):
    path, _ = customers
    profile = _profile(built, tmp_path)
    first_out, again_out = tmp_path / "first.parquet", tmp_path / "again.parquet"
    first = decide_batch(profile, path, first_out, send_at=SEND_AT)
    with _ledger(profile) as led:
        before = led.summary()
    later = SEND_AT.replace(hour=15)  # the same night's run, restarted: the same default run id
    again = decide_batch(profile, path, again_out, send_at=later)
    with _ledger(profile) as led:
        after = led.summary()
    assert again.run_id == first.run_id
    assert again.replayed == again.decided == first.decided
    assert after == before
    a, b = pd.read_parquet(first_out), pd.read_parquet(again_out)
    assert b["replayed"].all()
    same = [c for c in a.columns if c != "replayed"]
    pd.testing.assert_frame_equal(a[same], b[same])
    assert pd.read_parquet(beside(first_out, "rejects")).equals(
        pd.read_parquet(beside(again_out, "rejects"))
    )
    other_out = tmp_path / "other.parquet"
    other = decide_batch(profile, path, other_out, send_at=SEND_AT, run_id="r2")
    # A new run of the same customers meets the first run's contacts: the cooldown blocks them.
    assert other.replayed == 0 and other.blocked.get("cooldown", 0) > 0
    c = pd.read_parquet(other_out)
    assert not set(c.loc[c["contact"], "customer_id"]) & set(a.loc[a["contact"], "customer_id"])


def test_each_decision_names_its_release_in_the_file_and_the_ledger(built, customers, tmp_path):
    from retention.store.model_store import ModelStore

    path, _ = customers
    profile = _profile(built, tmp_path)
    out = tmp_path / "decisions.parquet"
    s = decide_batch(profile, path, out, send_at=SEND_AT, run_id="rel-1")
    release = ModelStore(profile.model_store).production()["release"]
    d = pd.read_parquet(out)
    assert s.release == release and (d["release"] == release).all()
    assert "release " + release in s.format(["a", "b", "c", "d"])
    # The ledger records each decision's score and release: its export is a monitor's log.
    with _ledger(profile) as led:
        log = pd.read_csv(led.export_decisions(tmp_path / "ledger.csv"))
    log = log.set_index("request_id").loc[d["request_id"]]
    assert (log["release"] == release).all()
    assert np.allclose(log["churn_probability"].to_numpy(), d["churn_probability"].to_numpy())


def test_served_and_batch_decisions_export_as_the_monitors_log(built, customers, tmp_path):
    """The transformer's answers and a batch run on the release record each decision's score
    and release in the ledger; its export is the decision log ``retention monitor`` reads."""
    from fastapi.testclient import TestClient

    from retention.registry.monitor import monitor_release
    from serving.app import create_app
    from serving.server import build_transformer, served_versions
    from tests.serving_fixtures import NOON_TOMORROW

    path, table = customers
    profile = _profile(built, tmp_path)
    release = built_release(profile)
    t, extra = build_transformer(profile, {})
    client = TestClient(create_app(t.served_models(), extra, versions=served_versions(profile)))
    scores = {}
    for row in table.iloc[20:50].to_dict("records"):
        facts = {k: v for k, v in row.items() if v == v and k != "customerID"}
        facts["customer_id"] = str(row["customerID"])
        body = {"request_id": f"m-{row['customerID']}", "send_at": NOON_TOMORROW.isoformat()}
        answer = client.post("/retain", json={**body, "customer_facts": facts}).json()
        assert answer["models"]["risk"] == release, answer
        scores[answer["request_id"]] = answer["risk"]["churn_probability"]
    t.ledger.close()
    s = decide_batch(profile, path, tmp_path / "d.parquet", send_at=SEND_AT, run_id="mon")

    with _ledger(profile) as led:
        out = led.export_decisions(tmp_path / "decisions.parquet")
    log = pd.read_parquet(out)
    assert len(log) == len(scores) + s.decided and (log["release"] == release).all()
    served = log.set_index("request_id").loc[list(scores), "churn_probability"]
    assert served.to_dict() == pytest.approx(scores)
    report, _, _ = monitor_release(profile, str(out), out_dir=tmp_path / "report")
    assert report.release == release and report.decisions == len(log)
    assert {r.name for r in report.rules} >= {"drift", "age"}


def built_release(profile) -> str:
    from retention.store.model_store import ModelStore

    return ModelStore(profile.model_store).production()["release"]


def test_a_binding_budget_is_never_overspent(built, customers, tmp_path):
    path, _ = customers
    profile = _profile(built, tmp_path, "contract.limits.budget_per_period=40.0")
    s = decide_batch(profile, path, tmp_path / "d.parquet", send_at=SEND_AT, run_id="tight")
    assert s.blocked.get("budget", 0) > 0
    assert s.period_spent == pytest.approx(s.spend) and s.period_spent <= 40.0
    d = pd.read_parquet(tmp_path / "d.parquet")
    assert d.loc[d["blocked_by"].map(lambda b: "budget" in b), "contact"].eq(False).all()


def test_batch_scores_are_the_served_predictors_scores(built, customers, tmp_path):
    from serving.server import build_predictors

    path, table = customers
    profile = _profile(built, tmp_path, "batch.chunk_rows=97")
    out = tmp_path / "d.parquet"
    decide_batch(profile, path, out, send_at=SEND_AT, run_id="parity")
    d = pd.read_parquet(out).set_index("customer_id")
    served = {p.name: p for p in build_predictors(profile, ["risk", "accept", "ltv"])}
    picked = table.iloc[[0, 1, 2, 40, 41, 250, 600]]
    rows = [
        {k: v for k, v in r.items() if k != "customerID" and not (isinstance(v, float) and v != v)}
        for r in picked.to_dict("records")
    ]
    risk = served["risk"].predict_rows(rows)
    accept = served["accept"].predict_rows(rows)
    value = served["ltv"].predict_rows(rows)
    for cid, r, a, v in zip(picked["customerID"], risk, accept, value, strict=True):
        got = d.loc[cid]
        assert got["churn_probability"] == pytest.approx(r["churn_probability"], rel=1e-9)
        assert np.allclose(got["accept_probability"], a["accept_probability"], rtol=1e-9)
        assert got["value"] == v["value"] and got["value_source"] == v["source"]
        factors = json.loads(got["risk_factors"])
        assert [f["feature"] for f in factors] == [f["feature"] for f in r["factors"]]
        assert [f["shap"] for f in factors] == pytest.approx([f["shap"] for f in r["factors"]])


def test_an_input_without_the_id_column_is_refused(built, tmp_path):
    profile = _profile(built, tmp_path)
    pd.DataFrame({"tenure": [3]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="no customer id column 'customerID'"):
        decide_batch(profile, tmp_path / "x.parquet", tmp_path / "d.parquet", send_at=SEND_AT)
    assert not (tmp_path / "d.parquet").exists()  # nothing half-written


def test_the_cli_decides_and_prints_the_summary(built, customers, tmp_path, capsys):
    from retention_cli.main import main

    profile, root = built
    path, _ = customers
    rc = main(
        [
            "decide-batch", "--profile", "tiny", "--set", f"model_store={root / 'model-store'}",
            "--set", f"serving.ledger.url=sqlite:///{tmp_path / 'cli.db'}",
            "--input", str(path), "--out", str(tmp_path / "d.parquet"),
            "--send-at", SEND_AT.isoformat(), "--run-id", "cli-1",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0
    assert "decide-batch cli-1 (local)" in printed and "rejected 6" in printed
    assert main(["decide-batch", "--profile", "tiny", "--input", str(path), "--out",
                 str(tmp_path / "e.parquet"), "--send-at", "tomorrow"]) == 2  # fmt: skip


@pytest.mark.slow
def test_ray_data_decides_as_the_local_engine(built, customers, tmp_path):
    path, _ = customers
    local = _profile(built, tmp_path / "local")
    on_ray = _profile(built, tmp_path / "ray", "batch.chunk_rows=300", "batch.ray_workers=2")
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    a = decide_batch(local, path, tmp_path / "a.parquet", send_at=SEND_AT, run_id="x")
    b = decide_batch(
        on_ray, path, tmp_path / "b.parquet", send_at=SEND_AT, run_id="x", engine="ray"
    )
    assert b.engine == "ray" and (a.decided, a.rejected, a.contacts) == (
        b.decided,
        b.rejected,
        b.contacts,
    )
    da, db = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(da, db)
    pd.testing.assert_frame_equal(
        pd.read_parquet(beside(tmp_path / "a.parquet", "rejects")),
        pd.read_parquet(beside(tmp_path / "b.parquet", "rejects")),
    )


def test_the_batch_pipeline_compiles_for_vertex_and_runs_the_command(tmp_path):
    from pipelines.compile import compile_pipeline

    gcp = load_profile("gcp")
    spec = yaml.safe_load(compile_pipeline(gcp, "vertex", tmp_path / "b.yaml", "batch").read_text())
    assert spec["pipelineInfo"]["name"] == f"{gcp.pipeline.name}-batch"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"config_json", "customers", "run_id", "send_at"}
    container = spec["deploymentSpec"]["executors"]["exec-decide-batch"]["container"]
    assert container["image"] == gcp.serving.image  # the ledger and the models live there
    assert container["command"] == ["retention", "decide-batch"]
    assert container["resources"]["resourceCpuLimit"] == gcp.batch.resources.cpu
    # The task's arguments parse as the command line's: every option the task passes exists.
    from retention_cli.main import build_parser

    args = [a if isinstance(a, str) else "X" for a in container["args"]]
    parsed = build_parser().parse_args(["decide-batch", *args])
    assert parsed.func.__name__ == "cmd_decide_batch"
    with pytest.raises(ValueError, match=r"pipeline: expected training, batch or monitor"):
        compile_pipeline(gcp, "vertex", tmp_path / "x.yaml", "nightly")
    assert catalogue.spec("ltv").service == "ltv"  # the batch reads the served value model


def test_the_command_takes_the_profile_as_json_as_a_task_passes_it(built, customers, tmp_path):
    from retention_cli.main import main

    path, _ = customers
    profile = _profile(built, tmp_path)
    summary = tmp_path / "s" / "summary.json"
    rc = main(
        [
            "decide-batch", "--profile-json", profile.model_dump_json(), "--input", str(path),
            "--out", str(tmp_path / "d"), "--rejects", str(tmp_path / "r"),
            "--summary", str(summary), "--run-id", "", "--send-at", "",
        ]
    )  # fmt: skip
    assert rc == 0
    s = json.loads(summary.read_text())
    assert s["rejected"] == len(pd.read_parquet(tmp_path / "r")) == 6  # one problem each
    assert s["decided"] == len(pd.read_parquet(tmp_path / "d"))
    assert main(["decide-batch", "--profile-json", "{}", "--input", str(path), "--out",
                 str(tmp_path / "e")]) == 2  # fmt: skip


def test_column_encoder_reads_columns_as_transform_reads_frames():
    """Arrow columns into the matrix by the rules ``transform`` applies to ``to_pandas()``."""
    from retention.models.columnar import ColumnEncoder
    from retention.models.preprocess import TabularPreprocessor

    rng = np.random.default_rng(11)
    n = 400
    pre = TabularPreprocessor(
        numeric=[
            "n_int",
            "n_float",
            "n_bool",
            "n_text",
            "n_clean_text",
            "n_odd",
            "n_dict",
            "absent",
        ],  # fmt: skip
        categorical={
            "c_text": ["a", "b", "Fiber optic"],
            "c_int": ["1", "2", "3"],
            "c_int_null": ["1.0", "2.0"],
            "c_bool": ["False", "True"],
            "c_float": ["0.5", "1.0"],
            "c_dict": ["x", "y"],
            "c_null": ["z"],
        },
    )
    pick = lambda values: [values[i] for i in rng.integers(0, len(values), n)]  # noqa: E731
    texts = ["1", " 2.5 ", "", "  ", "abc", "1e3", "-4", "inf", "nan", "+.5", "1_000", "0x10", None]
    table = pa.table(
        {
            "n_int": pa.array(pick([1, -2, None, 7]), pa.int64()),
            "n_float": pa.array(pick([0.5, float("nan"), None, -1e30])),
            "n_bool": pa.array(pick([True, False, None])),
            "n_text": pa.array(pick(texts)),
            "n_clean_text": pa.array(pick(["1", "2.25", " ", None, "-3e2"])),
            # Odd but readable: whichever parser reads them must read them as to_number does.
            "n_odd": pa.array(pick(["+.5", "1.", ".5e1", "INF", "-Infinity", "NaN", "007"])),
            "n_dict": pa.array(pick(["4", "5.5", None])).dictionary_encode(),
            "c_text": pa.array(pick(["a", "b", "Fiber optic", "unseen", "", None])),
            "c_int": pa.array(pick([1, 2, 3, 4]), pa.int64()),
            "c_int_null": pa.array(pick([1, 2, None]), pa.int64()),
            "c_bool": pa.array(pick([True, False])),
            "c_float": pa.array(pick([0.5, 1.0, 2.0, None])),
            "c_dict": pa.array(pick(["x", "y", "w", None])).dictionary_encode(),
            "c_null": pa.nulls(n),
        }
    )
    got = ColumnEncoder(pre).encode(table)
    frame = table.to_pandas().reindex(columns=pre.features)
    want = pre.transform(frame)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.isnan(got[:, pre.features.index("absent")]).all()
    assert not np.isnan(got[:, pre.features.index("c_text")]).all()
    with pytest.raises(TypeError, match="n_int: a timestamp"):
        ColumnEncoder(pre).encode(table.set_column(0, "n_int", pa.array([datetime.now()] * n)))
