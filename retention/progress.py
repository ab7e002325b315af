"""Throttled progress lines for long loops (Optuna trials, PPO iterations, trainer steps).

A loop calls ``Progress.step(done, detail)`` as often as it likes; a line reaches the
``retention.progress`` logger for the first step, the last one, and otherwise at most once every
``every_s`` seconds, so a person watching a run sees it move without a flood.

Inside a task of the local runner (``pipelines/local_run.py``), which sets ``STREAM_ENV`` for the
task subprocesses, the lines go to stdout behind ``MARK`` instead: kfp pipes everything a task
prints into the runner, which keeps it all in the run's log file and forwards only the marked
lines to the terminal. Anywhere else the logger behaves as any other (the CLI shows INFO).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

LOGGER = "retention.progress"
STREAM_ENV = "RETENTION_PROGRESS_STREAM"
MARK = f"[{LOGGER}] "
EVERY_S = 5.0


class _MarkedStdout(logging.Handler):
    """Writes to the stdout of the moment (the task's pipe), flushing: a block-buffered pipe would
    hold a long task's lines back until it ends."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(MARK + self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # logging's contract: a broken handler never raises
            self.handleError(record)


def progress_logger() -> logging.Logger:
    """The progress logger, routed for the runner's pipe when ``STREAM_ENV`` is set (read now, not
    at import: the variable is the runner's word to its children)."""
    logger = logging.getLogger(LOGGER)
    if os.environ.get(STREAM_ENV) == "1" and not any(
        isinstance(h, _MarkedStdout) for h in logger.handlers
    ):
        logger.addHandler(_MarkedStdout())
        logger.setLevel(logging.INFO)
        # kfp's executor logs the root logger to the same pipe: propagating would print each
        # line twice, once without the mark.
        logger.propagate = False
    return logger


class Progress:
    """Progress of ``total`` units of work named ``unit`` inside ``what``.

    A line reads ``what: unit done/total, X s/unit, detail``; the seconds per unit count from
    construction, so build it right before the loop.
    """

    def __init__(
        self,
        what: str,
        total: int,
        unit: str = "step",
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total < 1:
            raise ValueError(f"progress of {what!r}: total must be at least 1, got {total}")
        if every_s < 0:
            raise ValueError(f"progress of {what!r}: every_s must be >= 0, got {every_s}")
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self._clock = clock
        self._started = clock()
        self._last: float | None = None

    def step(self, done: int, detail: str = "") -> bool:
        """Report ``done`` units finished; True when this call emitted a line."""
        if not 1 <= done <= self.total:
            raise ValueError(
                f"progress of {self.what!r}: {self.unit} {done} is outside 1..{self.total}"
            )
        now = self._clock()
        due = self._last is None or done == self.total or now - self._last >= self.every_s
        if not due:
            return False
        self._last = now
        per = (now - self._started) / done
        line = f"{self.what}: {self.unit} {done}/{self.total}, {per:.2f} s/{self.unit}"
        progress_logger().info(line + (f", {detail}" if detail else ""))
        return True
