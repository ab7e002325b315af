"""Policies on the same held-out episodes (same customers, same seeds), with confidence intervals.

Because the env uses common random numbers, "never contact" on an episode is the exact
counterfactual of every other policy on it: net revenue retained = (value kept − value never
contacting would keep) − spend, per episode.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retention.config import RetentionEnvConfig
from retention.contract import N_LEVELS, ContactContract
from retention.decision.baselines import LagrangianPriced, NeverContact, Policy, RiskThreshold
from retention.decision.env import Book, RetentionEnv, make_env_config


@dataclass(frozen=True)
class Episode:
    customers: np.ndarray
    seed: int


def held_out_episodes(n_customers: int, per_episode: int, rounds: int, seed: int) -> list[Episode]:
    """Each round shuffles every customer into episodes (the last one topped up from the start)."""
    out = []
    for r in range(rounds):
        order = np.random.default_rng(seed + 1000 * r).permutation(n_customers)
        n_eps = int(np.ceil(n_customers / per_episode))
        padded = np.resize(order, n_eps * per_episode)
        for e in range(n_eps):
            chunk = padded[e * per_episode : (e + 1) * per_episode]
            out.append(Episode(chunk, seed + 1000 * r + e))
    return out


def sampled_episodes(n_customers: int, per_episode: int, count: int, seed: int) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [Episode(rng.integers(0, n_customers, per_episode), seed + 1 + e) for e in range(count)]


def run_episode(policy: Policy, env: RetentionEnv, episode: Episode) -> dict[str, Any]:
    obs, _ = env.reset(seed=episode.seed, options={"customers": episode.customers})
    policy.begin(env)
    done = False
    while not done:
        obs, _, done, _, info = env.step(policy.act(obs, env))
    return info["episode_stats"]


def run_policy(policy: Policy, env: RetentionEnv, episodes: Sequence[Episode]) -> list[dict]:
    return [run_episode(policy, env, ep) for ep in episodes]


def expected_net_revenue(policy: Policy, env: RetentionEnv, episode: Episode) -> float:
    """Net revenue retained with churn integrated out (an env in ``expected`` mode, no lambdas).

    Acceptance and the risk paths are still drawn from the episode seed; only the churn lottery
    is replaced by its expectation, which leaves the mean unchanged and removes most of the noise.
    """
    obs, _ = env.reset(seed=episode.seed, options={"customers": episode.customers})
    policy.begin(env)
    total, done = 0.0, False
    while not done:
        obs, r, done, _, _ = env.step(policy.act(obs, env))
        total += r
    return total * env.book.mean_value


def mean_ci(x: Sequence[float]) -> dict[str, float]:
    x = np.asarray(x, float)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else 0.0
    m = float(x.mean())
    return {"mean": m, "low": m - float(half), "high": m + float(half)}


def summarise(
    stats: list[dict], never: list[dict], expected: list[float] | None = None
) -> dict[str, Any]:
    """Per-episode metrics, each as mean with a 95 % interval over episodes."""
    net = [
        s["retained_value"] - n["retained_value"] - s["spend"]
        for s, n in zip(stats, never, strict=True)
    ]
    extra = {}
    if expected is not None:
        extra = {
            "expected_net_revenue_retained": mean_ci(expected),
            "expected_net_revenue_retained_per_episode": [round(x, 4) for x in expected],
        }
    spend = [s["spend"] for s in stats]
    per_customer = [v / s["customers"] for v, s in zip(net, stats, strict=True)]
    contacts = np.sum([s["contacts"] for s in stats])
    mix = np.sum([np.asarray(s["offer_mix"]) * s["contacts"] for s in stats], axis=0)
    return {
        "episodes": len(stats),
        "customers": int(np.sum([s["customers"] for s in stats])),
        "net_revenue_retained": mean_ci(net),
        "net_revenue_retained_per_customer": mean_ci(per_customer),
        "net_revenue_retention": mean_ci([s["net_revenue_retention"] for s in stats]),
        "roi": float(np.sum(net) / max(np.sum(spend), 1e-12)),
        "contact_rate": mean_ci([s["contact_rate"] for s in stats]),
        "offer_mix": (mix / max(contacts, 1)).round(4).tolist(),
        "budget_used": mean_ci([s["budget_used"] for s in stats]),
        "budget_overshoot": float(np.max([s["budget_overshoot"] for s in stats])),
        "budget_overshoot_mean": float(np.mean([s["budget_overshoot"] for s in stats])),
        "fatigue_violations": float(np.sum([s["fatigue_violations"] for s in stats])),
        "cooldown_violations": float(np.sum([s["cooldown_violations"] for s in stats])),
        "churned": int(np.sum([s["churned"] for s in stats])),
        "attempts": {
            k: float(np.sum([s[f"{k}_attempts"] for s in stats]))
            for k in ("budget", "fatigue", "cooldown")
        },
        # Share of the contacts the policy chose that the shield refused.
        "blocked_rate": float(
            np.sum([s["blocked_contacts"] for s in stats])
            / max(np.sum([s["attempted_contacts"] for s in stats]), 1)
        ),
        **extra,
    }


def sampled_env(book: Book, params: RetentionEnvConfig, contract: ContactContract) -> RetentionEnv:
    """Evaluation samples churn: the statistics count what happened to each customer."""
    return RetentionEnv(
        make_env_config(book, params.model_copy(update={"churn_reward": "sampled"}), contract)
    )


def expected_env(book: Book, params: RetentionEnvConfig, contract: ContactContract) -> RetentionEnv:
    return RetentionEnv(
        make_env_config(book, params.model_copy(update={"churn_reward": "expected"}), contract)
    )


def compare(
    policies: Sequence[Policy],
    book: Book,
    params: RetentionEnvConfig,
    contract: ContactContract,
    episodes: list[Episode],
) -> dict[str, dict[str, Any]]:
    env, env_exp = sampled_env(book, params, contract), expected_env(book, params, contract)
    never = run_policy(NeverContact(), env, episodes)
    return {
        p.name: summarise(
            run_policy(p, env, episodes),
            never,
            [expected_net_revenue(p, env_exp, ep) for ep in episodes],
        )
        for p in policies
    }


def paired_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Mean and 95 % interval of a − b on the same episodes (expected net revenue retained)."""
    x = np.asarray(a["expected_net_revenue_retained_per_episode"])
    y = np.asarray(b["expected_net_revenue_retained_per_episode"])
    return mean_ci(x - y)


def best_on(candidates: Sequence[Policy], env: RetentionEnv, episodes: list[Episode]) -> Policy:
    """The candidate with the best mean expected net revenue on ``episodes`` (first on ties)."""
    best, best_net = None, -np.inf
    for cand in candidates:
        net = float(np.mean([expected_net_revenue(cand, env, ep) for ep in episodes]))
        if net > best_net:
            best, best_net = cand, net
    return best


def tune_threshold(
    book: Book,
    params: RetentionEnvConfig,
    contract: ContactContract,
    episodes: list[Episode],
    grid: int = 9,
) -> RiskThreshold:
    """The risk threshold and offer level with the best expected net revenue on training episodes."""
    qs = np.quantile(book.churn_prob, np.linspace(0.1, 0.9, grid))
    cands = [RiskThreshold(float(t), lvl) for t, lvl in itertools.product(qs, range(N_LEVELS))]
    return best_on(cands, expected_env(book, params, contract), episodes)


# Shadow prices of the budget tried, in value per unit of worst-case cost: 0 spends on every
# positive expected uplift, 20 only on the very best.
MU_GRID = (0.0, *np.geomspace(0.02, 20.0, 16).round(4).tolist())


def tune_lagrangian(
    book: Book,
    params: RetentionEnvConfig,
    contract: ContactContract,
    episodes: list[Episode],
    grid: Sequence[float] = MU_GRID,
) -> LagrangianPriced:
    """The budget's shadow price ``mu`` with the best expected net revenue on training episodes:
    too low spends the budget on the first customers, too high leaves it unused."""
    cands = [LagrangianPriced(float(mu)) for mu in grid]
    return best_on(cands, expected_env(book, params, contract), episodes)
