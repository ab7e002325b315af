"""Run the DAG on this machine with ``kfp.local.SubprocessRunner`` and summarise the outcome.

kfp.local prints everything to stdout: its own task lines (coloured), each task subprocess's whole
output (the executor input JSON, which holds the profile, for every task), and the outputs. A
person wants one line when a task starts, one when it ends with its wall time, and the progress of
long tasks. So while the pipeline runs, stdout, stderr and the root logger go into
``KfpOutput``: it writes every line to the run's log file and shows on the terminal only the task
lines it recognises (``KFP_LINES``) and the progress lines the tasks mark (``retention.progress``).

This reads kfp.local's output through Python's own stdout: no kfp internals are patched. What it
depends on is the wording of kfp's task lines, written for kfp 2.17 (``task_dispatcher``,
``orchestrator/task_executor`` and ``enhanced_dag_orchestrator``); ``tests/test_local_run.py`` runs
a real kfp.local pipeline and fails if that wording changes.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from retention.config import Profile
from retention.progress import MARK, STREAM_ENV
from retention.registry.registry import Registry
from retention.store.model_store import ModelStore

LOG_FILE = "kfp.log"
TAIL_LINES = 15  # of a failed task's output, shown on the terminal

TaskStatus = Literal["ok", "failed", "cached", "skipped"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_INDENT = " " * 4  # kfp's indent of a task's output (logging_utils.indented_print)
# kfp's own lines start at the margin ("HH:MM:SS.mmm - LEVEL - message"); a task's output is
# indented by kfp, so a task printing the same words is never mistaken for them.
_KFP_LINE = re.compile(r"^\S.*? - [A-Z]+ - (?P<msg>.*)$")
KFP_LINES: dict[str, re.Pattern[str]] = {
    "start": re.compile(r"^Executing task '(?P<task>[^']+)'"),
    "end": re.compile(r"^Task '(?P<task>[^']+)' finished with status (?P<status>SUCCESS|FAILURE)"),
    "cached": re.compile(r"^Task (?P<task>\S+) cache hit"),
    "upstream": re.compile(r"^Skipping task (?P<task>\S+): upstream"),
    "condition": re.compile(r"^Skipping conditional task (?P<task>\S+) "),
}


def _kfp_event(line: str) -> tuple[str, re.Match[str]] | None:
    """Which of ``KFP_LINES`` this line is, if it is one of kfp's own."""
    if m := _KFP_LINE.match(line):
        for kind, pattern in KFP_LINES.items():
            if hit := pattern.match(m["msg"]):
                return kind, hit
    return None


@dataclass(frozen=True)
class TaskTime:
    task: str
    seconds: float | None  # None: the task never ran (or kfp never said it started)
    status: TaskStatus


@dataclass
class PipelineRun:
    """What running one pipeline left behind, whatever the outcome."""

    run_dir: Path | None
    log: Path
    seconds: float
    tasks: list[TaskTime]
    failure: str | None = None  # which tasks failed, when any did


@dataclass
class RunSummary:
    run: PipelineRun
    gates: dict[str, Any] = field(default_factory=dict)
    # The production pointer after the run, and the release this run registered (with its model
    # URIs), if it pushed one: the champion, or with ``registry.promote: manual`` the challenger.
    pushed: dict[str, Any] | None = None
    registered: dict[str, Any] | None = None
    report: Path | None = None


def _symbols(out: TextIO) -> dict[str, str]:
    fancy = {"start": "▶", "ok": "✓", "failed": "✗", "cached": "✓", "skipped": "–"}
    encoding = getattr(out, "encoding", None)  # None: a str buffer, which holds any character
    try:
        if encoding:
            "".join(fancy.values()).encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return {"start": ">", "ok": "ok", "failed": "X", "cached": "ok", "skipped": "-"}
    return fancy


class KfpOutput(io.TextIOBase):
    """A text stream standing in for stdout while kfp runs: the log file gets every line, the
    terminal gets task starts and ends, progress lines, and a failed task's last lines."""

    def __init__(
        self,
        log: TextIO,
        out: TextIO,
        conditions: dict[str, tuple[str, list[str]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._log, self._out, self._clock = log, out, clock
        self._conditions = conditions or {}
        self._sym = _symbols(out)
        self._pending = ""
        # kfp.local runs one task at a time (only a dsl.ParallelFor runs several): the lines
        # between a task's start and end are its output.
        self._started: dict[str, float] = {}
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.tasks: list[TaskTime] = []

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._pending += s
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(s)

    def flush(self) -> None:
        self._log.flush()
        self._out.flush()

    def close_pending(self) -> None:
        if self._pending:
            self._line(_ANSI.sub("", self._pending))
            self._pending = ""
        self.flush()

    @property
    def failed(self) -> bool:
        return any(t.status == "failed" for t in self.tasks)

    def _show(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def _line(self, line: str) -> None:
        self._log.write(line + "\n")
        if MARK in line:
            self._show(_TASK_INDENT + line.split(MARK, 1)[1])
            return
        event = _kfp_event(line)
        if event is None:
            if self._started and line.strip():
                self._tail.append(line.removeprefix(_TASK_INDENT).rstrip())
            return
        kind, hit = event
        task = hit["task"]
        if kind == "start":
            self._started[task] = self._clock()
            self._tail.clear()
            self._show(f"{self._sym['start']} {task}")
        elif kind == "end":
            began = self._started.pop(task, None)
            seconds = None if began is None else self._clock() - began
            status: TaskStatus = "ok" if hit["status"] == "SUCCESS" else "failed"
            self.tasks.append(TaskTime(task, seconds, status))
            took = "" if seconds is None else f"  {seconds:.1f} s"
            self._show(f"{self._sym[status]} {task}{took}")
            if status == "failed":
                for t in self._tail:
                    self._show(_TASK_INDENT + t)
                self._show(_TASK_INDENT + "(its whole output is in the full kfp log)")
        elif kind == "cached":
            self.tasks.append(TaskTime(task, 0.0, "cached"))
            self._show(f"{self._sym['cached']} {task}  cached")
        else:
            # A dsl.If group is reported by its generated key: name the tasks inside instead.
            label, inside = self._conditions.get(task, (task, [task]))
            why = "an upstream task failed" if kind == "upstream" else f"'{label}' was false"
            for t in inside:
                self._skip(t, why)

    def _skip(self, task: str, why: str) -> None:
        self.tasks.append(TaskTime(task, None, "skipped"))
        self._show(f"{self._sym['skipped']} {task}  skipped: {why}")


def _condition_groups(spec: Any) -> dict[str, tuple[str, list[str]]]:
    """For each ``dsl.If`` group of a compiled pipeline: its name as written in the DAG and the
    tasks inside it. kfp reports a skipped group by its generated key (``condition-2``); a person
    wants to read that ``push`` was skipped because ``gates-passed`` was false."""

    def leaves(component: str) -> list[str]:
        out = []
        for key, task in spec.components[component].dag.tasks.items():
            ref = task.component_ref.name
            inner = spec.components[ref].WhichOneof("implementation") == "dag"
            out += leaves(ref) if inner else [key]
        return out

    found: dict[str, tuple[str, list[str]]] = {}

    def walk(dag) -> None:
        for key, task in dag.tasks.items():
            ref = task.component_ref.name
            if spec.components[ref].WhichOneof("implementation") == "dag":
                if task.trigger_policy.condition:
                    found[key] = (task.task_info.name or key, leaves(ref))
                walk(spec.components[ref].dag)

    walk(spec.root.dag)
    return found


@contextlib.contextmanager
def _captured(stream: KfpOutput) -> Iterator[None]:
    """Route stdout, stderr, warnings and the root logger into ``stream``, and tell the task
    subprocesses (which inherit the environment) to mark their progress lines."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, os.environ.get(STREAM_ENV)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    os.environ[STREAM_ENV] = "1"
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        stream.close_pending()
        logging.captureWarnings(False)
        root.handlers = saved[0]
        root.setLevel(saved[1])
        if saved[2] is None:
            os.environ.pop(STREAM_ENV, None)
        else:
            os.environ[STREAM_ENV] = saved[2]


def _newest_run(root: Path, before: set[Path]) -> Path | None:
    runs = [d for d in root.iterdir() if d.is_dir() and d not in before]
    return max(runs, key=lambda d: d.stat().st_mtime) if runs else None


def _file_log(log: Path, root: Path, before: set[Path]) -> tuple[Path | None, Path]:
    """The run folder kfp made, and the log moved into it (left beside it when there is none)."""
    run_dir = _newest_run(root, before)
    return run_dir, (log.replace(run_dir / LOG_FILE) if run_dir is not None else log)


def run_pipeline(
    pipeline: Any, arguments: dict[str, Any], root: Path, out: TextIO | None = None
) -> PipelineRun:
    """Run a kfp pipeline with kfp.local's subprocess runner under ``root``, showing a followable
    account on ``out`` (stdout by default) and keeping kfp's whole output in the run folder."""
    from kfp import local

    out = out or sys.stdout
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    # kfp names the run folder itself, when the run starts: the log is written beside it and
    # moved in once the folder exists.
    stamp = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
    log_path = root / f"{pipeline.name}-{stamp}.log"
    print(f"full kfp log: {log_path}", file=out, flush=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    failure = None
    started = time.perf_counter()
    try:
        with log_path.open("w", encoding="utf-8", buffering=1) as log:
            stream = KfpOutput(log, out, _condition_groups(pipeline.pipeline_spec))
            try:
                with _captured(stream):
                    pipeline(**arguments)
            except RuntimeError as exc:
                if not stream.failed:  # not a failed task: something else went wrong
                    raise
                log.write(_ANSI.sub("", str(exc)) + "\n")
                # kfp's own message lists every failed task "inside" the next: name them plainly.
                failed = [t.task for t in stream.tasks if t.status == "failed"]
                failure = f"{len(failed)} task(s) failed: {', '.join(failed)}"
    except BaseException:
        # No summary will follow (an error, Ctrl-C): say here where the whole story is.
        _, log_path = _file_log(log_path, root, before)
        print(f"full kfp log: {log_path}", file=out, flush=True)
        raise
    seconds = time.perf_counter() - started
    run_dir, log_path = _file_log(log_path, root, before)
    return PipelineRun(run_dir, log_path, seconds, stream.tasks, failure)


def _absolute_profile(profile: Profile, base: Path) -> Profile:
    """Tasks run as subprocesses: pin relative paths to where the user ran the command."""
    p = profile.model_copy(deep=True)
    if "://" not in p.model_store:
        p.model_store = str((base / p.model_store).resolve())
    for _, spec in p.data.items():
        if spec.uri and "://" not in spec.uri and not os.path.isabs(spec.uri):
            spec.uri = str((base / spec.uri).resolve())
    return p


def _find(run_dir: Path, task: str, name: str) -> Path | None:
    hits = sorted(run_dir.glob(f"{task}*/{name}"))
    return hits[0] if hits else None


def run_local(profile: Profile, base: Path | None = None, out: TextIO | None = None) -> RunSummary:
    from pipelines.dag import build_pipeline

    base = (base or Path.cwd()).resolve()
    profile = _absolute_profile(profile, base)
    root = base / profile.pipeline.pipeline_root
    pipeline = build_pipeline(profile, target="local")
    registry = Registry(ModelStore(profile.model_store))
    # What this run registered is what the registry holds after it and did not before: the
    # production pointer alone cannot tell a challenger pushed now from an older champion.
    before = set(registry.releases())
    run = run_pipeline(pipeline, {"config_json": profile.model_dump_json()}, root, out)
    summary = RunSummary(run)
    report = _find(run.run_dir, "evaluate-gates", "report") if run.run_dir else None
    if report and report.with_suffix(".json").is_file():
        summary.report = report
        summary.gates = json.loads(report.with_suffix(".json").read_text())
    if summary.gates.get("passed"):
        summary.registered, summary.pushed = pushed_since(registry, before)
    return summary


def pushed_since(
    registry: Registry, before: set[str]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The release registered since ``before`` (its name and model URIs) and the production
    pointer now; (None, None) when nothing was registered."""
    new = sorted(set(registry.releases()) - before)
    if not new:
        return None, None
    entry = registry.get(new[-1])
    return {"release": entry.release, "uris": dict(entry.uris)}, registry.production()


def format_tasks(tasks: list[TaskTime], total_s: float) -> list[str]:
    """The per-task time table: task, wall seconds, status, and the pipeline's total."""
    width = max([len("task"), len("total"), *(len(t.task) for t in tasks)])
    lines = [f"  {'task':<{width}}  {'wall s':>8}  status"]
    for t in tasks:
        wall = "-" if t.seconds is None else f"{t.seconds:.1f}"
        lines.append(f"  {t.task:<{width}}  {wall:>8}  {t.status}")
    lines.append(f"  {'total':<{width}}  {total_s:>8.1f}")
    return lines


def format_summary(s: RunSummary, model_store: str) -> str:
    run = s.run
    if run.failure:
        lines = [f"pipeline FAILED after {run.seconds:.1f} s: {run.failure}"]
    else:
        lines = [f"pipeline finished in {run.seconds:.1f} s; artifacts under {run.run_dir}"]
    lines += format_tasks(run.tasks, run.seconds)
    for g in s.gates.get("gates", []):
        lines.append(f"  gate {'PASS' if g['passed'] else 'FAIL'}: {g['message']}")
    if s.report:
        lines.append(f"  report: {s.report}")
    if s.registered:
        release = s.registered["release"]
        production = (s.pushed or {}).get("release")
        if production == release:
            lines.append(f"  pushed release {release} to {model_store} (production)")
        else:
            challenger = (s.pushed or {}).get("aliases", {}).get("challenger") == release
            role = " as the challenger (registry.promote: manual)" if challenger else ""
            lines.append(
                f"  pushed release {release} to {model_store}{role}; production stays "
                f"{production or 'none'}: `retention models promote {release}` makes it production"
            )
        for model, uri in s.registered.get("uris", {}).items():
            lines.append(f"    {model}: {uri}")
    else:
        lines.append("  nothing pushed: production unchanged")
    lines.append(f"  full kfp log: {run.log}")
    return "\n".join(lines)
