"""The dashboard in a real browser: Playwright drives Debian's ``chromium-headless-shell``
(``executable_path``; Playwright's own browser download is not reachable) through every page of
``streamlit run dashboard/app.py`` over a tiny release, and asks the assistant a question.

Without the browser the test skips on a developer machine and fails under CI (CI=true), like
the infra tests: ``make browser`` installs it.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from retention.insights.segments import SegmentModel
from retention.store.model_store import ModelStore

ROOT = Path(__file__).resolve().parent.parent
BROWSER = "chromium-headless-shell"
PAGES = {
    "": "Phase health",
    "segments": "Customer segments",
    "customer": "Customer lookup",
    "ab_report": "A/B report",
    "assistant": "Assistant",
}


def _browser() -> str:
    path = shutil.which(BROWSER)
    if path:
        return path
    message = f"{BROWSER} is not installed (make browser: apt-get install -y {BROWSER})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run this check")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard(insights_release, tmp_path_factory):
    profile, _ = insights_release
    port = _free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
             "--server.address", "127.0.0.1", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--", "--profile", "tiny", "--model-store", profile.model_store,
             "--serving", "http://127.0.0.1:9"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"streamlit did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
    yield url, profile
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_every_page_loads_and_the_assistant_answers_with_the_number(dashboard):
    executable = _browser()
    from playwright.sync_api import expect, sync_playwright

    url, profile = dashboard
    model = SegmentModel(ModelStore(profile.model_store).resolve("segments"))
    total = f"{model.overall['total_clv']:,.2f}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page()
            for path, title in PAGES.items():
                page.goto(f"{url}/{path}")
                expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=60_000)
                expect(page.get_by_text("Traceback")).to_have_count(0)
                expect(page.locator("[data-testid='stException']")).to_have_count(0)
            page.goto(f"{url}/segments")
            charts = page.locator("[data-testid='stPlotlyChart']")
            expect(charts).to_have_count(3, timeout=60_000)
            expect(charts.first.locator(".js-plotly-plot")).to_be_attached(timeout=60_000)
            page.goto(f"{url}/assistant")
            box = page.get_by_placeholder("Ask a question")
            box.fill("What is our total CLV?")
            box.press("Enter")
            answer = page.locator("[data-testid='stChatMessage']").nth(1)
            expect(answer).to_contain_text(total, timeout=60_000)
        finally:
            browser.close()
