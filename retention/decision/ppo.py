"""PPO on Ray RLlib (new API stack) with Lagrange multipliers for budget, fatigue and cooldown.

Between training iterations the multipliers follow dual ascent on the iteration's episodes,
``lambda_k <- clip(lambda_k + lr * (usage_k - limit_k), 0, max_lambda)``, and are pushed into every
env copy, so the reward each iteration optimises is ``r - sum_k lambda_k * cost_k``.

Ray starts in-process unless ``decision.ray_address`` names a cluster (KubeRay), with usage stats
off and its temp dir inside the run directory when that path is short enough for Ray's Unix
sockets, else in a private temp dir that is removed afterwards.
"""

from __future__ import annotations

import copy
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
from retention.contract import ContactContract
from retention.decision.baselines import Policy
from retention.decision.env import (
    ACTION_DIMS,
    OBS_NAMES,
    USAGE_KEYS,
    Book,
    RetentionEnv,
    make_env_config,
)
from retention.decision.evaluate import (
    Episode,
    expected_env,
    expected_net_revenue,
    sampled_episodes,
)
from retention.decision.policy import META_FILE, POLICY_FILE, argmax_action, split_probabilities
from retention.fileio import atomic_dir, write_json
from retention.progress import Progress, progress_logger

log = logging.getLogger(__name__)

# Ray puts Unix sockets at <temp>/session_<date>_<pid>/sockets/plasma_store (~62 more bytes),
# and a socket path must stay under 108 bytes.
_MAX_RAY_TEMP = 44


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    lambdas: dict[str, float] = field(default_factory=dict)
    env_steps: int = 0
    wall_s: float = 0.0
    sample_steps_per_s: float = 0.0
    export_max_abs_diff: float = float("nan")
    selection: list[dict[str, float]] = field(default_factory=list)
    selected_iteration: int = 0
    warm_start_loss: float = float("nan")
    teacher_validation: float = float("nan")


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


def build_config(
    cfg: DecisionConfig,
    contract: ContactContract,
    book: Book,
    seed: int,
    lambdas: dict[str, float],
):
    from ray.rllib.algorithms.ppo import PPOConfig

    from retention.decision.rllib_callbacks import ConstraintMetrics

    return (
        PPOConfig()
        .environment(
            RetentionEnv,
            env_config=make_env_config(book, cfg.env, contract, lambdas=lambdas, seed=seed),
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
        .rl_module(model_config=module_config(cfg))
        .callbacks(ConstraintMetrics)
        .debugging(seed=seed, log_level="ERROR")
    )


def _set_lambdas(algo, lambdas: dict[str, float]) -> None:
    def push(runner):
        runner.env.unwrapped.call("set_lambdas", lambdas)

    algo.env_runner_group.foreach_env_runner(push, local_env_runner=True)


def module_config(cfg: DecisionConfig) -> dict[str, Any]:
    """The policy network's RLlib model config."""
    return {"fcnet_hiddens": list(cfg.hidden), "vf_share_layers": False}


def policy_meta(
    cfg: DecisionConfig,
    contract: ContactContract,
    lambdas: dict[str, float],
    mean_value: float,
    selected_iteration: int,
) -> dict[str, Any]:
    """``policy.json`` of an exported policy: what serving needs to build its observations."""
    return {
        "format": "retention.policy/v1",
        "obs_names": list(OBS_NAMES),
        "action_dims": list(ACTION_DIMS),
        "env": cfg.env.model_dump(),
        # The contract it was trained under: serving refuses the policy under another one.
        "contract": contract.model_dump(),
        "lambdas": dict(lambdas),
        "hidden": list(cfg.hidden),
        # The value scale of the observation: serving normalises with the same number.
        "mean_value": float(mean_value),
        "selected_iteration": selected_iteration,
    }


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


class ModulePolicy(Policy):
    """The live RLlib module as a deterministic policy (for validation during training)."""

    name = "ppo"

    def __init__(self, module):
        import torch

        self.module, self._torch = module, torch

    def act(self, obs, env=None):
        with self._torch.inference_mode():
            x = self._torch.from_numpy(np.asarray(obs, dtype=np.float32).reshape(1, -1))
            logits = self.module.forward_inference({"obs": x})["action_dist_inputs"].numpy()
        return argmax_action(logits[0])


def demonstrations(
    teacher: Policy, book: Book, params, contract: ContactContract, episodes: list[Episode]
) -> tuple[np.ndarray, np.ndarray]:
    """(observations, actions) of ``teacher`` on training episodes, for the warm start."""
    env = expected_env(book, params, contract)
    obs_rows, act_rows = [], []
    for ep in episodes:
        obs, _ = env.reset(seed=ep.seed, options={"customers": ep.customers})
        teacher.begin(env)
        done = False
        while not done:
            action = teacher.act(obs, env)
            obs_rows.append(obs)
            act_rows.append(action)
            obs, _, done, _, _ = env.step(action)
    return np.asarray(obs_rows, dtype=np.float32), np.asarray(act_rows, dtype=np.int64)


def behaviour_clone(
    algo, obs: np.ndarray, actions: np.ndarray, epochs: int, lr: float, seed: int
) -> float:
    """Fit the policy head to the demonstrations (cross-entropy per action component) on the
    learner, then push the weights to the env runners; returns the final loss."""

    def fit(learner) -> float:
        import torch
        import torch.nn.functional as F

        torch.manual_seed(seed)
        module = next(iter(learner.module.values()))
        opt = torch.optim.Adam(module.parameters(), lr=lr)
        x, a = torch.from_numpy(obs), torch.from_numpy(actions)
        loss = torch.tensor(0.0)
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(256):
                logits = module.forward_train({"obs": x[idx]})["action_dist_inputs"]
                loss = sum(
                    F.cross_entropy(part, a[idx, k])
                    for k, part in enumerate(torch.split(logits, list(ACTION_DIMS), dim=1))
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
        return float(loss.detach())

    (first, *_) = list(algo.learner_group.foreach_learner(fit))
    if not first.ok:
        raise RuntimeError(f"behaviour cloning failed on the learner: {first.get()}")
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group, inference_only=True
    )
    return float(first.get())


def _iteration_line(row: dict[str, Any], lambdas: dict[str, float], loop_s: float) -> str:
    """What a person watching PPO needs: the return, the multipliers after this iteration's dual
    step, how much of each limit the iteration used, and the sampling speed."""
    usage = " ".join(f"{k} {v:.3f}" for k, v in row["usage"].items())
    lams = " ".join(f"{k} {v:.3f}" for k, v in lambdas.items())
    speed = row["env_steps"] / loop_s if loop_s > 0 else float("nan")
    return (
        f"return {row['episode_return_mean']:.2f}, lambda [{lams}], usage [{usage}], "
        f"{speed:.0f} env steps/s"
    )


def train_ppo(
    cfg: DecisionConfig,
    contract: ContactContract,
    book: Book,
    seed: int,
    run_dir: str | Path,
    model_dir: str | Path,
    teacher: Policy | None = None,
    valid_book: Book | None = None,
) -> TrainResult:
    """Train, export the policy to ``model_dir`` (policy.pt + policy.json), return the history.

    With a ``teacher`` (the tuned baseline), the policy starts as its behaviour clone, so PPO
    improves on the best heuristic instead of rediscovering it from random actions. Every
    ``select_every`` iterations the deterministic policy is scored on validation episodes drawn
    from ``valid_book`` (customers PPO never trains on; the training book if none is given);
    the best checkpoint is the one exported (PPO's last iterate is not reliably its best).
    """
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
    say = progress_logger()
    lambdas = {k: d.init for k, d in cfg.lagrange.duals().items()}
    t0 = time.perf_counter()
    try:
        algo = build_config(cfg, contract, book, seed, lambdas).build_algo()
        try:
            vbook = valid_book if valid_book is not None else book
            val_eps = sampled_episodes(
                len(vbook), cfg.env.customers_per_episode, cfg.select_episodes, seed + 3
            )
            val_env = expected_env(vbook, cfg.env, contract)

            def validate() -> float:
                pol = ModulePolicy(algo.get_module())
                return float(np.mean([expected_net_revenue(pol, val_env, e) for e in val_eps]))

            if teacher is not None and cfg.warm_start_episodes > 0:
                demo_eps = sampled_episodes(
                    len(book), cfg.env.customers_per_episode, cfg.warm_start_episodes, seed + 5
                )
                say.info("ppo: warm start: %s on %d training episodes", teacher.name, len(demo_eps))
                obs, actions = demonstrations(teacher, book, cfg.env, contract, demo_eps)
                say.info("ppo: warm start: cloning %d decisions for %d epochs",
                         len(obs), cfg.warm_start_epochs)  # fmt: skip
                result.warm_start_loss = behaviour_clone(
                    algo, obs, actions, cfg.warm_start_epochs, cfg.warm_start_lr, seed
                )
                result.teacher_validation = float(
                    np.mean([expected_net_revenue(teacher, val_env, e) for e in val_eps])
                )
            best_score, best_state, best_it = validate(), None, 0
            if teacher is not None and cfg.warm_start_episodes > 0:
                say.info("ppo: warm start: loss %.3f; validation %.1f (the teacher %.1f)",
                         result.warm_start_loss, best_score, result.teacher_validation)  # fmt: skip
            best_state = copy.deepcopy(algo.get_module().state_dict())
            result.selection.append({"iteration": 0, "validation": best_score})
            progress = Progress("ppo", cfg.iterations, unit="iteration")
            loop_t0 = time.perf_counter()
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
                if (it + 1) % cfg.select_every == 0 or it + 1 == cfg.iterations:
                    score = validate()
                    result.selection.append({"iteration": it + 1, "validation": score})
                    if score > best_score:
                        best_score, best_it = score, it + 1
                        best_state = copy.deepcopy(algo.get_module().state_dict())
                progress.step(it + 1, _iteration_line(row, lambdas, time.perf_counter() - loop_t0))
            result.wall_s = time.perf_counter() - t0
            result.env_steps = result.history[-1]["env_steps"] if result.history else 0
            sample_s = np.nansum([h["sample_s"] for h in result.history])
            if sample_s > 0:
                result.sample_steps_per_s = result.env_steps / sample_s
            result.lambdas = lambdas
            result.selected_iteration = best_it
            module = algo.get_module()
            module.load_state_dict(best_state)
            meta = policy_meta(cfg, contract, lambdas, book.mean_value, best_it)
            result.export_max_abs_diff = export_module(module, Path(model_dir), meta)
        finally:
            algo.stop()
    finally:
        if started_here:
            ray.shutdown()
        if owned:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return result
