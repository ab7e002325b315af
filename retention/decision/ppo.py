"""PPO on Ray RLlib (new API stack) with Lagrange multipliers for budget, fatigue and cooldown.

Between training iterations the multipliers follow dual ascent on the iteration's episodes,
``lambda_k <- clip(lambda_k + lr * (usage_k - limit_k), 0, max_lambda)``, and are pushed into every
env copy, so the reward each iteration optimises is ``r - sum_k lambda_k * cost_k``.

Ray starts in-process unless ``decision.ray_address`` names a cluster (KubeRay), with usage stats
off and its temp dir inside the run directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retention.config import DecisionConfig, LagrangeConfig
from retention.decision.env import (
    OBS_NAMES,
    USAGE_KEYS,
    Book,
    RetentionEnv,
    make_env_config,
)
from retention.decision.policy import META_FILE, POLICY_FILE, split_probabilities
from retention.fileio import atomic_dir, write_json

log = logging.getLogger(__name__)

# Unix socket paths under Ray's temp dir must stay below ~107 bytes.
_MAX_RAY_TEMP = 60


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    lambdas: dict[str, float] = field(default_factory=dict)
    env_steps: int = 0
    wall_s: float = 0.0
    sample_steps_per_s: float = 0.0
    export_max_abs_diff: float = float("nan")


def dual_update(
    lambdas: dict[str, float], usage: dict[str, float], cfg: LagrangeConfig
) -> dict[str, float]:
    """One projected dual-ascent step; a constraint without usage this iteration keeps its lambda."""
    out = {}
    for k, dual in cfg.duals().items():
        lam = lambdas.get(k, dual.init)
        if k in usage and np.isfinite(usage[k]):
            lam = lam + dual.lr * (usage[k] - dual.limit)
        out[k] = float(min(max(0.0, lam), cfg.max_lambda))
    return out


def _ray_temp_dir(run_dir: Path) -> tuple[Path, bool]:
    wanted = (run_dir / "ray").resolve()
    if len(str(wanted)) <= _MAX_RAY_TEMP:
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted, False
    return Path(tempfile.mkdtemp(prefix="retention-ray-")), True


def build_config(cfg: DecisionConfig, book: Book, seed: int, lambdas: dict[str, float]):
    from ray.rllib.algorithms.ppo import PPOConfig

    from retention.decision.rllib_callbacks import ConstraintMetrics

    return (
        PPOConfig()
        .environment(
            RetentionEnv, env_config=make_env_config(book, cfg.env, lambdas=lambdas, seed=seed)
        )
        .env_runners(
            num_env_runners=cfg.num_env_runners, num_envs_per_env_runner=cfg.envs_per_runner
        )
        .training(
            train_batch_size=cfg.train_batch_size,
            minibatch_size=cfg.minibatch_size,
            num_epochs=cfg.num_epochs,
            lr=cfg.lr,
            gamma=cfg.gamma,
            lambda_=cfg.gae_lambda,
            entropy_coeff=cfg.entropy_coeff,
            clip_param=cfg.clip_param,
        )
        .rl_module(model_config={"fcnet_hiddens": list(cfg.hidden), "vf_share_layers": False})
        .callbacks(ConstraintMetrics)
        .debugging(seed=seed, log_level="ERROR")
    )


def _set_lambdas(algo, lambdas: dict[str, float]) -> None:
    def push(runner):
        runner.env.unwrapped.call("set_lambdas", lambdas)

    algo.env_runner_group.foreach_env_runner(push, local_env_runner=True)


def export_module(module, out_dir: Path, meta: dict[str, Any]) -> float:
    """TorchScript of the module's inference logits; returns the max |Δ probability| vs RLlib."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.m.forward_inference({"obs": obs})["action_dist_inputs"]

    module.eval()
    wrapper = Logits(module).eval()
    probe = torch.from_numpy(
        np.random.default_rng(0).uniform(-1, 2, (1024, len(OBS_NAMES))).astype(np.float32)
    )
    with torch.inference_mode():
        traced = torch.jit.trace(wrapper, probe[:8], check_trace=False)
        ref = module.forward_inference({"obs": probe})["action_dist_inputs"].numpy()
    with atomic_dir(out_dir) as tmp:
        torch.jit.save(traced, str(tmp / POLICY_FILE))
        write_json(tmp / META_FILE, meta)
    reloaded = torch.jit.load(str(out_dir / POLICY_FILE))
    with torch.inference_mode():
        got = reloaded(probe).numpy()
    return float(
        max(
            np.abs(a - b).max()
            for a, b in zip(split_probabilities(ref), split_probabilities(got), strict=True)
        )
    )


def train_ppo(
    cfg: DecisionConfig, book: Book, seed: int, run_dir: str | Path, model_dir: str | Path
) -> TrainResult:
    """Train, export the policy to ``model_dir`` (policy.pt + policy.json), return the history."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    run_dir = Path(run_dir)
    temp_dir, owned = _ray_temp_dir(run_dir)
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if cfg.ray_address:
            kwargs["address"] = cfg.ray_address
        else:
            kwargs.update(num_cpus=max(2, cfg.num_env_runners + 1), _temp_dir=str(temp_dir))
        ray.init(**kwargs)
    result = TrainResult()
    lambdas = {k: d.init for k, d in cfg.lagrange.duals().items()}
    t0 = time.perf_counter()
    try:
        algo = build_config(cfg, book, seed, lambdas).build_algo()
        try:
            for it in range(cfg.iterations):
                r = algo.train()
                runners = r.get("env_runners", {})
                seen = runners.get("constraints", {})
                # Per customer, so lr means the same whatever the portfolio size.
                n = cfg.env.customers_per_episode
                usage = {k: float(seen.get(v, np.nan)) / n for k, v in USAGE_KEYS.items()}
                row = {
                    "iteration": it + 1,
                    "env_steps": int(runners.get("num_env_steps_sampled_lifetime", 0)),
                    "episode_return_mean": float(runners.get("episode_return_mean", np.nan)),
                    "net_revenue": float(seen.get("net_revenue", np.nan)),
                    "budget_used": float(seen.get("budget_used", np.nan)),
                    "usage": usage,
                    "lambdas": dict(lambdas),
                    "sample_s": float(r.get("timers", {}).get("env_runner_sampling_timer", np.nan)),
                }
                result.history.append(row)
                if it + 1 > cfg.lagrange.warmup_iterations:
                    lambdas = dual_update(lambdas, usage, cfg.lagrange)
                _set_lambdas(algo, lambdas)
                log.info(
                    "ppo iteration %d/%d: steps %d, return %.2f, usage %s, lambdas %s",
                    it + 1,
                    cfg.iterations,
                    row["env_steps"],
                    row["episode_return_mean"],
                    {k: round(v, 3) for k, v in usage.items()},
                    {k: round(v, 3) for k, v in lambdas.items()},
                )
            result.wall_s = time.perf_counter() - t0
            result.env_steps = result.history[-1]["env_steps"] if result.history else 0
            sample_s = np.nansum([h["sample_s"] for h in result.history])
            if sample_s > 0:
                result.sample_steps_per_s = result.env_steps / sample_s
            result.lambdas = lambdas
            meta = {
                "format": "retention.policy/v1",
                "obs_names": list(OBS_NAMES),
                "action_dims": [2, 4, 8],
                "env": cfg.env.model_dump(),
                "lambdas": lambdas,
                "hidden": list(cfg.hidden),
            }
            result.export_max_abs_diff = export_module(algo.get_module(), Path(model_dir), meta)
        finally:
            algo.stop()
    finally:
        if started_here:
            ray.shutdown()
        if owned:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return result
