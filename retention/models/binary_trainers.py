"""The calibrated binary models by catalogue name: what the shared ``train_binary`` step runs.

Risk and accept differ only in their table, columns and checks, all inside their own modules; one
component trains either, so a third binary model is its module, a line here and its spec.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from retention.config import Profile
from retention.models.accept import train_accept
from retention.models.risk import train_risk
from retention.results import BinaryResult

Trainer = Callable[[Profile, str | Path, str | Path], BinaryResult]
TRAINERS: dict[str, Trainer] = {"risk": train_risk, "accept": train_accept}


def train_named(
    name: str, profile: Profile, split_dir: str | Path, out_dir: str | Path
) -> BinaryResult:
    try:
        trainer = TRAINERS[name]
    except KeyError:
        raise KeyError(
            f"no binary trainer for model {name!r} (known: {', '.join(TRAINERS)})"
        ) from None
    return trainer(profile, split_dir, out_dir)
