import functools
import http.server
import threading
from pathlib import Path

import pytest

from retention.data.ingest import load_dataset
from retention.fileio import atomic_path, read_bytes
from retention.store.model_store import ModelStore
from tests.conftest import write


@pytest.fixture
def http_dir(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_ingest_reads_over_http(tiny, http_dir):
    folder, base = http_dir
    write(folder / "c.csv", "customerID,tenure,MonthlyCharges,TotalCharges,Contract,Churn\n"
          "a,1,20,20,Month-to-month,Yes\nb,5,30,150,Two year,No\n")  # fmt: skip
    spec = tiny.data.customers.model_copy(update={"uri": f"{base}/c.csv"})
    df, source = load_dataset("customers", spec, 0, tiny.contract)
    assert source.endswith("/c.csv") and df["Churn"].tolist() == [1, 0]


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_bytes(str(tmp_path / "nope.csv"))


def test_atomic_path_leaves_old_file_on_error(tmp_path):
    target = write(tmp_path / "f.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


class _Blob:
    def __init__(self, bucket, name):
        self.bucket, self.name = bucket, name

    def upload_from_filename(self, path, if_generation_match=None):
        if if_generation_match == 0 and self.name in self.bucket.objects:
            raise FileExistsError(self.name)
        self.bucket.objects[self.name] = Path(path).read_bytes()

    def upload_from_string(self, text, content_type=None):
        self.bucket.objects[self.name] = text.encode()

    def exists(self):
        return self.name in self.bucket.objects

    def download_as_text(self):
        return self.bucket.objects[self.name].decode()

    def download_to_filename(self, path):
        Path(path).write_bytes(self.bucket.objects[self.name])


class _Bucket:
    """An in-memory stand-in for a GCS bucket: the real service is not reachable from here."""

    def __init__(self):
        self.objects = {}

    def blob(self, name):
        return _Blob(self, name)

    def list_blobs(self, prefix):
        return [_Blob(self, n) for n in sorted(self.objects) if n.startswith(prefix)]


class _Client:
    def __init__(self):
        self.buckets = {}

    def bucket(self, name):
        return self.buckets.setdefault(name, _Bucket())


def test_gcs_store_layout_and_pointer(tmp_path):
    client = _Client()
    src = write(tmp_path / "m" / "model.json", "{}").parent
    store = ModelStore("gs://models-bucket/retention", client=client)
    pointer = store.push({"risk": src})
    v = pointer["models"]["risk"]
    objects = client.buckets["models-bucket"].objects
    assert f"retention/risk/{v}/model.json" in objects
    assert pointer["uris"]["risk"] == f"gs://models-bucket/retention/risk/{v}"
    assert store.production()["release"] == v
    local = store.resolve("risk", cache_dir=tmp_path / "cache")
    assert (local / "model.json").read_text() == "{}"
