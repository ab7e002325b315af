"""A small real release for serving tests, built in-process in seconds, without the DAG.

Every released model of the catalogue is trained (or exported) by the project's own functions
on the tiny profile's synthetic tables, then pushed into a model store with the real push, as the
DAG's push step would: risk and accept as calibrated XGBoost ``BinaryModel`` with few trees and no
cross-validation, phase health as its per-phase LightGBMs, the 12-month value by its trainer, the
policy as an untrained RLlib PPO module through the real TorchScript export, the writer as one
LoRA SFT step on the tiny random Llama. Predictions are meaningless; the formats, the loading and
the serving paths are the real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from retention import catalogue
from retention.config import Profile, load_profile
from retention.models.outputs import MODEL_DIR

# The value scale the exported policy normalises observations with (a trained one uses its book's).
POLICY_MEAN_VALUE = 1000.0
# The README's example customer, as the serving tests send it.
FACTS = {
    "customer_id": "c-17",
    "name": "Sam",
    "tenure": 3,
    "plan": "Pro",
    "MonthlyCharges": 89.5,
    "Contract": "Month-to-month",
    "timezone": "Europe/London",
}
# Noon UTC tomorrow: inside the window around now that serving.limits allows send_at in.
NOON_TOMORROW = (datetime.now(UTC) + timedelta(days=1)).replace(
    hour=12, minute=0, second=0, microsecond=0
)


def tiny_serving_profile(root: Path, *overrides: str) -> Profile:
    """The tiny profile, its model store and writer cache under ``root``, the writer one step."""
    return load_profile(
        "tiny",
        overrides=[
            f"model_store={root / 'model-store'}",
            f"writer.model.cache_dir={root / 'cache'}",
            "writer.sft.steps=1",
            "writer.sft.examples=8",
            "writer.sft.evaluate=false",
            *overrides,
        ],
    )


def _binary(profile: Profile, splits: Path, out: Path, table: str, columns, cfg, monotone=None):
    from retention.data.split import read_split
    from retention.models.binary import train_binary

    parts = [read_split(splits, table, p) for p in ("train", "valid", "test")]
    model = train_binary(
        *parts, columns, cfg, profile.seed, monotone=monotone, cross_validation=False
    )[0]
    model.save(out / MODEL_DIR)


def _risk(profile: Profile, splits: Path, out: Path) -> None:
    from retention.models.risk import columns_for

    _binary(profile, splits, out, "customers", columns_for(profile), profile.risk)


def _accept(profile: Profile, splits: Path, out: Path) -> None:
    from retention.models.accept import MONOTONE, columns_for

    _binary(profile, splits, out, "offers", columns_for(profile), profile.accept, MONOTONE)


def _phase_health(profile: Profile, splits: Path, out: Path) -> None:
    from retention.models.phase_health import train_phase_health

    train_phase_health(profile, splits, out)


def _ltv(profile: Profile, splits: Path, out: Path) -> None:
    from retention.models.ltv import train_ltv

    train_ltv(profile, splits, out)


def _uplift(profile: Profile, splits: Path, out: Path) -> None:
    from retention.models.uplift import train_uplift

    train_uplift(profile, splits, out)


def export_untrained_policy(profile: Profile, model_dir: Path) -> None:
    """The PPO module RLlib would start training from, exported as ``train_ppo`` exports one."""
    import gymnasium as gym
    import numpy as np
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig

    from retention.decision.env import ACTION_DIMS, OBS_NAMES
    from retention.decision.ppo import export_module, module_config, policy_meta

    cfg = profile.decision
    algo = PPOConfig().rl_module(model_config=module_config(cfg))
    module_spec = algo.get_default_rl_module_spec()
    module_spec.observation_space = gym.spaces.Box(-np.inf, np.inf, (len(OBS_NAMES),), np.float32)
    module_spec.action_space = gym.spaces.MultiDiscrete(ACTION_DIMS)
    module_spec.model_config = algo.model_config  # the user's keys over RLlib's defaults
    lambdas = {k: d.init for k, d in cfg.lagrange.duals().items()}
    meta = policy_meta(cfg, profile.contract, lambdas, POLICY_MEAN_VALUE, selected_iteration=0)
    torch.manual_seed(profile.seed)  # the same untrained weights, so the same actions, each run
    diff = export_module(module_spec.build(), model_dir, meta)
    if diff > 1e-5:
        raise AssertionError(f"the exported policy differs from the module by {diff}")


def _policy(profile: Profile, splits: Path, out: Path) -> None:
    export_untrained_policy(profile, out / MODEL_DIR)


def _writer(profile: Profile, splits: Path, out: Path) -> None:
    from retention.messaging.sft import train_sft

    train_sft(profile, out)


def _segments(profile: Profile, splits: Path, out: Path) -> None:
    from retention.insights.segments import train_segments

    train_segments(profile, splits, out.parent / "ltv", out)  # ltv is built before it


def _narratives(profile: Profile, splits: Path, out: Path) -> None:
    from retention.insights.narratives import train_narratives

    # Templates only: the tiny random model's drafts are rejected anyway (tests/test_narratives).
    cfg = profile.model_copy(deep=True)
    cfg.insights.narratives.use_llm = False
    train_narratives(cfg, out.parent / "phase_health", out.parent / "segments", out)


# How each released model of the catalogue is made here, by catalogue name.
BUILDERS: dict[str, Callable[[Profile, Path, Path], None]] = {
    "risk": _risk,
    "accept": _accept,
    "phase_health": _phase_health,
    "ltv": _ltv,
    "segments": _segments,
    "narratives": _narratives,
    "uplift": _uplift,
    "policy": _policy,
    "writer": _writer,
}


# Trained tiny releases of this test session, by what training read: modules that train the
# same profile share one training and each push it into a model store of their own.
_TRAINED: dict[str, Path] = {}


def _training_key(profile: Profile) -> str:
    import hashlib
    import json

    doc = profile.model_dump(
        mode="json", exclude={"model_store", "serving", "batch", "registry", "monitoring", "gcp"}
    )
    doc["writer"]["model"].pop("cache_dir", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def build_release(profile: Profile, root: Path) -> dict:
    """Tiny data, every released model, one real push into ``profile.model_store``; returns the
    ``production`` pointer. The training runs once per session for the same training config;
    the data, the splits and the trained models stay in the first caller's ``root``."""
    from retention.data.ingest import ingest
    from retention.data.split import split
    from retention.registry.release import push_models

    missing = [s.name for s in catalogue.released() if s.name not in BUILDERS]
    if missing:
        raise AssertionError(f"no tiny builder for the released model(s) {missing}")
    key = _training_key(profile)
    built = _TRAINED.get(key)
    if built is None:
        built = root
        ingest(profile, root / "data")
        split(profile, root / "data", root / "splits")
        for spec in catalogue.released():
            BUILDERS[spec.name](profile, root / "splits", root / "trained" / spec.name)
        _TRAINED[key] = built
    elif built != root:
        # The callers read the splits and trained folders under their own root.
        import shutil

        for part in ("data", "splits", "trained"):
            shutil.copytree(built / part, root / part, dirs_exist_ok=True)
    trained = {spec.name: root / "trained" / spec.name for spec in catalogue.released()}
    return push_models(
        profile, trained, metadata={"source": "tests.serving_fixtures"}, splits=root / "splits"
    )


class LoopbackServer:
    """An app in a real uvicorn server on 127.0.0.1 (a free port), in a daemon thread."""

    def __init__(self, app, seconds: float = 20):
        import socket
        import threading
        import time

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + seconds
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
