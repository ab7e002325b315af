import numpy as np

from retention.config import DatasetSpec, SplitConfig
from retention.data import synthetic
from retention.data.ingest import ingest
from retention.data.split import read_split, split, split_frame


def test_stratified_split_is_80_10_10_with_equal_rates(tiny, tmp_path):
    ingest(tiny, tmp_path / "ds")
    split(tiny, tmp_path / "ds", tmp_path / "sp")
    parts = {p: read_split(tmp_path / "sp", "customers", p) for p in ("train", "valid", "test")}
    sizes = {p: len(df) for p, df in parts.items()}
    assert sizes == {"train": 640, "valid": 80, "test": 80}
    rates = [df["Churn"].mean() for df in parts.values()]
    assert max(rates) - min(rates) < 0.02
    ids = [set(df["customerID"]) for df in parts.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_split_is_deterministic(tiny, tmp_path):
    ingest(tiny, tmp_path / "ds")
    split(tiny, tmp_path / "ds", tmp_path / "a")
    split(tiny, tmp_path / "ds", tmp_path / "b")
    a, b = (read_split(tmp_path / d, "customers", "test") for d in "ab")
    assert a["customerID"].tolist() == b["customerID"].tolist()


def test_group_split_keeps_a_customer_in_one_part(tiny):
    df = synthetic.journey(200, 1)
    spec = DatasetSpec(target="health", group_column="customer_id", split="group")
    parts = split_frame(df, spec, SplitConfig(), 42)
    sets = [set(p["customer_id"]) for p in parts.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_time_split_is_ordered():
    df = synthetic.orders(300, 3)
    parts = split_frame(df, DatasetSpec(time_column="date", split="time"), SplitConfig(), 42)
    assert parts["train"]["date"].max() <= parts["valid"]["date"].min()
    assert parts["valid"]["date"].max() <= parts["test"]["date"].min()
    assert sum(len(p) for p in parts.values()) == len(df)
    assert np.isclose(len(parts["train"]) / len(df), 0.8, atol=0.01)
