import pytest

from retention.config import DatasetSpec
from retention.data.ingest import ingest
from retention.data.validate import DataValidationError, parse_table, validate_table
from tests.conftest import write

SPEC = DatasetSpec(
    target="Churn",
    positive="Yes",
    labels=["Yes", "No"],
    id_column="id",
    columns={"tenure": "integer", "charges": "number"},
)
GOOD = "id,tenure,charges,plan,Churn\na,1,10.5,Pro,Yes\nb,2,20,Basic,No\nc,3, ,Pro,No\n"


def load(text: bytes | str, spec=SPEC, name="f.csv"):
    raw = text.encode() if isinstance(text, str) else text
    return validate_table(parse_table(raw, name, spec), name, spec)


def test_good_file_is_typed_and_target_is_binary():
    df = load(GOOD)
    assert df["Churn"].tolist() == [1, 0, 0]
    assert df["tenure"].dtype.kind in "if"
    assert df["charges"].isna().tolist() == [False, False, True]  # blank means missing


def test_missing_column_names_file_and_column():
    with pytest.raises(DataValidationError, match=r"f.csv: column 'charges': required column"):
        load(GOOD.replace("charges", "price"))


def test_wrong_type_names_column_row_and_value():
    bad = GOOD.replace("b,2,20", "b,two,20")
    with pytest.raises(DataValidationError) as err:
        load(bad)
    msg = str(err.value)
    assert "column 'tenure'" in msg and "row 2 (line 3)" in msg and "'two'" in msg


def test_fractional_integer_is_rejected():
    with pytest.raises(DataValidationError, match="expected an integer"):
        load(GOOD.replace("a,1,", "a,1.5,"))


def test_empty_file():
    with pytest.raises(DataValidationError, match="f.csv: file is empty"):
        load("")


def test_header_only():
    with pytest.raises(DataValidationError, match="no data rows"):
        load("id,tenure,charges,plan,Churn\n")


def test_unknown_label_names_row():
    with pytest.raises(DataValidationError) as err:
        load(GOOD.replace("c,3, ,Pro,No", "c,3, ,Pro,Maybe"))
    assert "unknown label 'Maybe'" in str(err.value) and "row 3" in str(err.value)


def test_missing_label():
    with pytest.raises(DataValidationError, match="label is missing"):
        load(GOOD.replace("Basic,No", "Basic,"))


def test_duplicated_id_names_rows():
    with pytest.raises(DataValidationError) as err:
        load(GOOD.replace("c,3", "a,3"))
    assert "duplicated id 'a'" in str(err.value) and "row 3 (line 4)" in str(err.value)


def test_bad_encoding_names_line():
    raw = GOOD.encode().replace(b"Basic", b"B\xe4sic")
    with pytest.raises(DataValidationError, match=r"line 3: bytes are not valid utf-8"):
        load(raw)


def test_latin1_is_readable_when_declared():
    raw = GOOD.encode().replace(b"Basic", b"B\xe4sic")
    df = load(raw, SPEC.model_copy(update={"encoding": "latin-1"}))
    assert df["plan"].tolist()[1] == "Bäsic"


def test_ingest_writes_nothing_when_one_file_is_bad(tiny, tmp_path):
    bad = write(tmp_path / "bad.csv", "customerID,tenure\nx,1\n")
    tiny.data.customers.uri = str(bad)
    out = tmp_path / "out"
    with pytest.raises(DataValidationError, match="bad.csv: column 'Churn'"):
        ingest(tiny, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.csv"]


def test_ingest_synthetic_has_every_dataset(tiny, tmp_path):
    manifest = ingest(tiny, tmp_path / "ds")
    assert set(manifest["datasets"]) == {
        "customers", "offers", "journey", "orders", "messages", "campaign"
    }  # fmt: skip
    assert manifest["datasets"]["journey"]["rows"] == tiny.data.journey.rows * 6
    assert 0.1 < manifest["datasets"]["customers"]["positive_rate"] < 0.45
