"""The run a person can follow: throttled progress lines, the local runner's terminal account and
its log file (a real kfp.local pipeline), and the summary's per-task time table."""

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import dsl

from pipelines.local_run import (
    LOG_FILE,
    KfpOutput,
    PipelineRun,
    RunSummary,
    TaskTime,
    format_summary,
    format_tasks,
    run_pipeline,
)
from retention.progress import LOGGER, MARK, STREAM_ENV, Progress

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def progress_lines(caplog, monkeypatch):
    monkeypatch.delenv(STREAM_ENV, raising=False)
    caplog.set_level(logging.INFO, logger=LOGGER)
    return lambda: [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_progress_emits_first_last_and_at_most_every_interval(progress_lines):
    clock = FakeClock()
    p = Progress("ppo", 10, unit="iteration", every_s=5.0, clock=clock)
    emitted = []
    for k in range(1, 11):
        clock.now += 2.0  # two seconds per iteration
        emitted.append(p.step(k, f"return {k}"))
    # First (t=2), then once 5 s have passed since the last line (t=8, t=14), and the last (t=20).
    assert [k for k, e in enumerate(emitted, 1) if e] == [1, 4, 7, 10]
    lines = progress_lines()
    assert lines[0] == "ppo: iteration 1/10, 2.00 s/iteration, return 1"
    assert lines[-1] == "ppo: iteration 10/10, 2.00 s/iteration, return 10"
    assert len(lines) == 4


def test_progress_without_detail_and_with_zero_interval(progress_lines):
    clock = FakeClock()
    p = Progress("sft", 3, every_s=0.0, clock=clock)
    for k in (1, 2, 3):
        clock.now += 0.5
        assert p.step(k)
    assert progress_lines() == [
        "sft: step 1/3, 0.50 s/step",
        "sft: step 2/3, 0.50 s/step",
        "sft: step 3/3, 0.50 s/step",
    ]


def test_progress_rejects_bad_counts():
    with pytest.raises(ValueError, match="total must be at least 1, got 0"):
        Progress("optuna search", 0, unit="trial")
    with pytest.raises(ValueError, match="every_s must be >= 0"):
        Progress("rm", 5, every_s=-1)
    with pytest.raises(ValueError, match="trial 6 is outside 1..5"):
        Progress("optuna search", 5, unit="trial").step(6)


def test_progress_in_a_runner_task_goes_to_stdout_marked_once():
    """What a task subprocess does under the local runner: kfp's executor logs the root logger to
    stdout, and the progress line must come out once, with the mark, and at once (flushed)."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='[root] %(message)s')\n"
        "from retention.progress import Progress\n"
        "p = Progress('count', 2, every_s=0)\n"
        "p.step(1, 'one'); p.step(2, 'two')\n"
    )
    env = {**os.environ, STREAM_ENV: "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith(MARK) for line in lines), lines
    assert re.fullmatch(re.escape(MARK) + r"count: step 2/2, \d+\.\d\d s/step, two", lines[1])


# Two-plus trivial lightweight components, run for real by kfp.local's subprocess runner through
# the same machinery as `retention run`. A component ships only its body: imports go inside.
@dsl.component(base_image="python:3.11")
def chatty(n: int) -> str:
    import json

    from retention.progress import Progress

    # What the retention tasks flood the terminal with: a big JSON document.
    print(json.dumps({"profile_dump_marker": list(range(n))}, indent=2))
    p = Progress("count", n, every_s=0)
    for k in range(1, n + 1):
        p.step(k, f"k {k}")
    return "x" * n


@dsl.component(base_image="python:3.11")
def measure(text: str) -> int:
    return len(text)


@dsl.component(base_image="python:3.11")
def boom(text: str) -> str:
    print("about to fail")
    raise ValueError(f"the reason it failed: {text}")


@dsl.pipeline(name="followable")
def followable(n: int = 3):
    words = chatty(n=n)
    size = measure(text=words.output)
    with dsl.If(size.output == 0, name="never"):
        measure(text="unused")


@dsl.pipeline(name="failing")
def failing(text: str = "bad input"):
    broken = boom(text=text)
    measure(text=broken.output)  # never runs: its upstream failed
    words = chatty(n=1)  # independent of the failure: still runs
    # A dsl.If, as in the training DAG, makes kfp run the DAG with its enhanced orchestrator,
    # which goes on past a failure; without one it stops at the first.
    with dsl.If(words.output == "x", name="once"):
        measure(text="runs")
    with dsl.If(broken.output == "x", name="after-boom"):
        measure(text="never runs either")


def test_local_run_shows_task_lines_and_progress_and_logs_everything(tmp_path):
    out = io.StringIO()
    handlers = logging.getLogger().handlers[:]
    run = run_pipeline(followable, {"n": 3}, tmp_path / "runs", out)
    terminal = out.getvalue()

    assert run.failure is None
    assert [(t.task, t.status) for t in run.tasks] == [
        ("chatty", "ok"),
        ("measure", "ok"),
        ("measure-2", "skipped"),
    ]
    assert all(t.seconds > 0 for t in run.tasks if t.status == "ok")
    assert re.search(r"^▶ chatty$", terminal, re.M)
    assert re.search(r"^✓ chatty  \d+\.\d s$", terminal, re.M)
    assert re.search(r"^✓ measure  \d+\.\d s$", terminal, re.M)
    assert "– measure-2  skipped: 'never' was false" in terminal
    assert "    count: step 1/3" in terminal and "count: step 3/3" in terminal
    # No executor input JSON, no task output, no kfp banners on the terminal.
    for noise in ("executor_input", "parameterValues", "profile_dump_marker", "KFP Executor", "{"):
        assert noise not in terminal, noise
    assert len(terminal.splitlines()) == 1 + 2 * 2 + 1 + 3  # log path, 2 tasks, skip, progress

    # The whole kfp output is in the run folder, its path printed up front.
    assert run.run_dir is not None and run.log == run.run_dir / LOG_FILE and run.log.is_file()
    log = run.log.read_text()
    for kept in ("Executing task 'chatty'", "Got executor_input", "profile_dump_marker",
                 "finished with status SUCCESS", MARK + "count: step 2/3"):  # fmt: skip
        assert kept in log, kept
    assert "\x1b[" not in log  # colours stripped: the file reads in any pager
    assert terminal.splitlines()[0].startswith("full kfp log: ")
    assert not list((tmp_path / "runs").glob("*.log"))  # moved into the run folder

    # The runner leaves this process as it found it.
    assert logging.getLogger().handlers == handlers
    assert STREAM_ENV not in os.environ and sys.stdout is not out


def test_local_run_failed_task_shows_its_last_lines_and_the_rest_runs(tmp_path):
    out = io.StringIO()
    run = run_pipeline(failing, {"text": "bad input"}, tmp_path / "runs", out)
    terminal = out.getvalue()

    assert run.failure == "1 task(s) failed: boom"
    statuses = {t.task: t.status for t in run.tasks}
    assert statuses == {
        "boom": "failed",
        "measure": "skipped",
        "chatty": "ok",
        "measure-2": "ok",
        "measure-3": "skipped",  # inside a dsl.If after the failed task
    }
    assert re.search(r"^✗ boom  \d+\.\d s$", terminal, re.M)
    assert "    ValueError: the reason it failed: bad input" in terminal
    assert "    about to fail" in terminal
    assert "– measure  skipped: an upstream task failed" in terminal
    assert "– measure-3  skipped: an upstream task failed" in terminal
    log = run.log.read_text()
    assert "Traceback" in log and "Inner task failed: 'boom'" in log  # kfp's own account


def test_kfp_output_times_tasks_and_is_not_fooled_by_task_output():
    clock, log = FakeClock(), io.StringIO()
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")  # a terminal without unicode
    stream = KfpOutput(log, out, clock=clock)
    stream.write("12:00:00.000 - INFO - Executing task \x1b[96m'train-risk'\x1b[0m\n    hello")
    stream.write(" world\n    12:00:01.000 - INFO - Executing task 'fake'\n")
    clock.now += 12.34
    stream.write("12:00:12.340 - INFO - Task 'train-risk' finished with status SUCCESS\n")
    stream.close_pending()
    assert stream.tasks == [TaskTime("train-risk", pytest.approx(12.34), "ok")]
    out.seek(0)
    assert out.buffer.getvalue().decode().splitlines() == ["> train-risk", "ok train-risk  12.3 s"]
    assert "    hello world\n" in log.getvalue() and "\x1b" not in log.getvalue()


def test_time_table_and_summary():
    tasks = [
        TaskTime("ingest", 3.14, "ok"),
        TaskTime("ppo-decision", 241.0, "ok"),
        TaskTime("sft", 0.0, "cached"),
        TaskTime("push", None, "skipped"),
    ]
    assert format_tasks(tasks, 250.0) == [
        "  task            wall s  status",
        "  ingest             3.1  ok",
        "  ppo-decision     241.0  ok",
        "  sft                0.0  cached",
        "  push                 -  skipped",
        "  total            250.0",
    ]
    gates = {
        "passed": True,
        "gates": [
            {"passed": True, "message": "risk.test_auc = 0.8100 >= 0.78"},
            {"passed": False, "message": "ltv.x = 1.0000 misses <= 0.5 by 0.5000"},
        ],
    }
    run = PipelineRun(Path("runs/r"), Path("runs/r/kfp.log"), 250.0, tasks)
    uris = {"risk": "model-store/risk/rel-1"}
    s = RunSummary(
        run,
        gates,
        pushed={"release": "rel-1", "aliases": {"champion": "rel-1"}},
        registered={"release": "rel-1", "uris": uris},
    )
    text = format_summary(s, "model-store")
    assert text.splitlines()[0] == "pipeline finished in 250.0 s; artifacts under runs/r"
    assert "  ppo-decision     241.0  ok" in text
    assert "  gate PASS: risk.test_auc = 0.8100 >= 0.78" in text
    assert "  gate FAIL: ltv.x = 1.0000 misses <= 0.5 by 0.5000" in text
    assert "  pushed release rel-1 to model-store (production)" in text
    assert "    risk: model-store/risk/rel-1" in text
    assert text.splitlines()[-1] == "  full kfp log: runs/r/kfp.log"

    # registry.promote: manual: the release pushed is the challenger, production is the champion.
    manual = RunSummary(
        run,
        gates,
        pushed={"release": "rel-0", "aliases": {"champion": "rel-0", "challenger": "rel-1"}},
        registered={"release": "rel-1", "uris": uris},
    )
    text = format_summary(manual, "model-store")
    assert "(production)" not in text
    assert (
        "  pushed release rel-1 to model-store as the challenger (registry.promote: manual); "
        "production stays rel-0: `retention models promote rel-1` makes it production"
    ) in text
    assert "    risk: model-store/risk/rel-1" in text

    failed = PipelineRun(None, Path("runs/x.log"), 9.5, tasks[:1], failure="1 task(s) failed: x")
    text = format_summary(RunSummary(failed), "model-store")
    assert text.splitlines()[0] == "pipeline FAILED after 9.5 s: 1 task(s) failed: x"
    assert "nothing pushed: production unchanged" in text


def test_the_summary_names_what_the_push_made_of_the_release(tmp_path):
    """A real registry in a model store: a first release is the champion; with
    ``registry.promote: manual`` the next is the challenger, and production stays."""
    from pipelines.local_run import pushed_since
    from retention.registry.registry import Registry, RegistryEntry
    from retention.store.model_store import ModelStore

    registry = Registry(ModelStore(str(tmp_path / "model-store")))
    run = PipelineRun(Path("runs/r"), Path("runs/r/kfp.log"), 1.0, [])

    def register(release: str) -> None:
        uris = {"risk": f"{tmp_path}/model-store/risk/{release}"}
        registry.record(
            RegistryEntry(
                release=release, created="2026-12-01T00:00:00+00:00", models={"risk": release},
                uris=uris, passed=True,
            )
        )  # fmt: skip

    before = set(registry.releases())
    assert pushed_since(registry, before) == (None, None)
    register("rel-0")
    registry.promote("rel-0", action="push")
    registered, pointer = pushed_since(registry, before)
    text = format_summary(RunSummary(run, registered=registered, pushed=pointer), "store")
    assert "  pushed release rel-0 to store (production)" in text

    before = set(registry.releases())
    register("rel-1")
    registry.store.write_pointer(
        {**registry.production(), "aliases": {**registry.aliases(), "challenger": "rel-1"}}
    )
    registered, pointer = pushed_since(registry, before)
    assert registered["release"] == "rel-1" and pointer["release"] == "rel-0"
    text = format_summary(RunSummary(run, registered=registered, pushed=pointer), "store")
    assert "(production)" not in text
    assert "pushed release rel-1 to store as the challenger (registry.promote: manual)" in text
    assert "production stays rel-0" in text
    assert f"    risk: {tmp_path}/model-store/risk/rel-1" in text
