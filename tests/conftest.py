import subprocess
import sys
from pathlib import Path

import pytest

from retention import catalogue
from retention.config import load_profile

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
PIPELINE_TASKS = catalogue.tasks()


@pytest.fixture
def tiny():
    return load_profile("tiny")


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One end-to-end `retention run --profile tiny` per session: (folder, process)."""
    tmp = tmp_path_factory.mktemp("e2e")
    proc = subprocess.run(
        [sys.executable, "-m", "retention_cli.main", "run", "--profile", "tiny"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return tmp, proc


@pytest.fixture(scope="session")
def insights_release(tmp_path_factory):
    """The models the dashboard and the assistant read, pushed once per session:
    (profile, splits dir)."""
    from tests.insights_fixtures import build_insights_release

    return build_insights_release(tmp_path_factory.mktemp("insights"))
