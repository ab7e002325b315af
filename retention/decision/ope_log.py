"""Off-policy evaluation of a released contact policy from a decision log.

The log is three tables joined on ``request_id``: the decisions as ``ContactLedger
.export_decisions`` writes them (the proposal and its propensity), the outcomes (``reward``: the
net revenue the decision earned, once known) and the observations the acting policy saw (the 18
``OBS_NAMES`` columns). A candidate policy's probabilities of each logged action come from its
export (``ExportedPolicy``: a network or a released rule), and ``retention.decision.ope``
estimates its value per decision by IPS, SNIPS and DR, beside the logged policy's own.

``one_shot_log`` writes such a log from the simulator: each customer gets one decision at the
start of its track, drawn from a stochastic logging policy, and the simulator knows every
action's reward for every customer (common random numbers), so a candidate's exact value on
the logged customers is known and the estimators' intervals can be checked against it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retention.contract import N_LEVELS
from retention.data.sources import read_frame
from retention.decision.env import OBS_NAMES, RetentionEnv
from retention.decision.ope import N_ACTIONS, LoggedBandit, evaluate, from_export
from retention.decision.policy import ExportedPolicy, split_probabilities
from retention.fileio import atomic_path


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """One table of the log (CSV or Parquet, as ``retention monitor`` reads them), or an error
    naming which of the three is missing."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: no file {path}")
    return read_frame(str(path))


def action_probabilities(policy: ExportedPolicy, obs: np.ndarray) -> np.ndarray:
    """(n, 1 + levels): P(no contact), then P(contact at level l) = P(contact) x P(level l)."""
    contact, level, _ = split_probabilities(policy.logits(obs))
    return np.column_stack([contact[:, 0], contact[:, [1]] * level])


def read_log(decisions: str | Path, outcomes: str | Path, observations: str | Path):
    """(LoggedBandit with the observations as features); errors name the file and column."""
    obs = read_table(observations, "observations")
    absent = [c for c in ("request_id", *OBS_NAMES) if c not in obs.columns]
    if absent:
        raise ValueError(f"{observations}: missing column(s) {absent}")
    try:
        return from_export(
            read_table(decisions, "decisions"),
            read_table(outcomes, "outcomes"),
            features=obs[["request_id", *OBS_NAMES]],
        )
    except ValueError as err:
        raise ValueError(f"decision log ({decisions}, {outcomes}, {observations}): {err}") from None


@dataclass(frozen=True)
class OpeSummary:
    """A candidate's estimated value per decision beside the logged policy's."""

    decisions: int
    logged_value: float
    ips: dict[str, Any]
    snips: dict[str, Any]
    dr: dict[str, Any]
    # DR's interval minus the logged mean: how much better (or worse) than what was done.
    gain_low: float
    gain_high: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_policy(
    policy_dir: str | Path,
    log: LoggedBandit,
    *,
    max_weight: float | None = 20.0,
    n_boot: int = 1000,
    seed: int = 0,
) -> OpeSummary:
    policy = ExportedPolicy(policy_dir, name="candidate")
    probs = action_probabilities(policy, log.features)
    rep = evaluate(log, probs, max_weight=max_weight, n_boot=n_boot, seed=seed)
    logged = float(log.rewards.mean())
    return OpeSummary(
        decisions=len(log),
        logged_value=logged,
        ips=asdict(rep.ips),
        snips=asdict(rep.snips),
        dr=asdict(rep.dr),
        gain_low=rep.dr.low - logged,
        gain_high=rep.dr.high - logged,
    )


# ------------------------------------------------------------------------ a simulated log


def counterfactual_rewards(env: RetentionEnv, customers: np.ndarray, seed: int) -> np.ndarray:
    """(n, 1 + levels) net revenue of each customer under each one-shot action at day 0 (no
    contact, or a contact at level l, nothing after), on the same luck (common random numbers).
    The env's budget must not bind (``budget_share`` large), so customers do not interact."""
    out = np.zeros((len(customers), N_ACTIONS))
    for a in range(N_ACTIONS):
        env.reset(seed=seed, options={"customers": customers})
        done = False
        while not done:
            first = env.day == 0 and a > 0
            action = [1, a - 1, 7] if first else [0, 0, 7]
            _, _, done, _, _ = env.step(np.asarray(action))
        out[:, a] = env.customer_kept * env.value - env.customer_spend
    return out


def day0_observations(env: RetentionEnv, customers: np.ndarray, seed: int) -> np.ndarray:
    """Each customer's observation at the start of its track, when nothing was spent."""
    env.reset(seed=seed, options={"customers": customers})
    rows, done = [], False
    obs = env._obs()
    while not done:
        if env.day == 0:
            rows.append(obs)
        obs, _, done, _, _ = env.step(np.asarray([0, 0, 7]))
    return np.asarray(rows, dtype=np.float32)


def one_shot_log(
    env: RetentionEnv,
    customers: np.ndarray,
    seed: int,
    logging_probs: np.ndarray,
    out_dir: str | Path,
) -> dict[str, Path]:
    """Write decisions / outcomes / observations files of a logging policy with action
    probabilities ``logging_probs`` (n, 1 + levels); returns their paths."""
    rng = np.random.default_rng(seed + 1)
    rewards = counterfactual_rewards(env, customers, seed)
    obs = day0_observations(env, customers, seed)
    cum = logging_probs.cumsum(axis=1)
    a = np.minimum((rng.random(len(customers))[:, None] > cum).sum(axis=1), N_LEVELS)
    ids = [f"sim-{seed}-{i}" for i in range(len(customers))]
    tables = {
        "decisions": pd.DataFrame(
            {
                "request_id": ids,
                "proposed_contact": a > 0,
                "proposed_offer_level": np.maximum(a - 1, 0),
                "propensity": logging_probs[np.arange(len(a)), a],
            }
        ),
        "outcomes": pd.DataFrame({"request_id": ids, "reward": rewards[np.arange(len(a)), a]}),
        "observations": pd.DataFrame(obs, columns=list(OBS_NAMES)).assign(request_id=ids),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in tables.items():
        paths[name] = out / f"{name}.csv"
        with atomic_path(paths[name]) as tmp:
            frame.to_csv(tmp, index=False)
    return paths


def simulated_coverage(
    runs: int = 20, n: int = 300, *, n_boot: int = 400, mu: float = 0.3
) -> dict[str, float]:
    """How often IPS / SNIPS / DR 95 % intervals cover a Lagrangian rule's exact value on
    ``runs`` independent one-shot simulator logs of ``n`` decisions (an exploring logger: 60 %
    the rule's own choice, the rest spread evenly), over a seeded population of 400 customers
    whose budget never binds."""
    import tempfile

    from retention.config import RetentionEnvConfig
    from retention.contract import ContactContract
    from retention.decision.baselines import LagrangianPriced
    from retention.decision.env import Book, make_env_config
    from retention.decision.evaluate import expected_env
    from retention.decision.policy import META_FILE
    from retention.fileio import write_json

    rng = np.random.default_rng(0)
    pop = 400
    book = Book(rng.beta(2, 3, pop), np.sort(rng.uniform(0.1, 0.6, (pop, 4)), axis=1),
                rng.gamma(2.0, 600.0, pop), effect=rng.uniform(0, 3, pop))  # fmt: skip
    params = RetentionEnvConfig(customers_per_episode=pop, budget_share=10.0, risk_volatility=0.2)
    contract = ContactContract()
    env = RetentionEnv(make_env_config(book, params, contract, seed=0))
    rule = LagrangianPriced(mu)
    rule.begin(expected_env(book, params, contract))
    covered = {"ips": 0, "snips": 0, "dr": 0}
    with tempfile.TemporaryDirectory(prefix="ope-coverage-") as tmp:
        d = Path(tmp)
        write_json(d / META_FILE, {"obs_names": list(OBS_NAMES), "rule": rule.rule})
        policy = ExportedPolicy(d)
        for k in range(runs):
            customers = np.random.default_rng(100 + k).choice(pop, n, replace=True)
            target = action_probabilities(policy, day0_observations(env, customers, k))
            paths = one_shot_log(env, customers, k, 0.6 * target + 0.4 / N_ACTIONS, d / str(k))
            truth = np.mean(np.sum(target * counterfactual_rewards(env, customers, k), axis=1))
            log = read_log(paths["decisions"], paths["outcomes"], paths["observations"])
            est = evaluate_policy(d, log, max_weight=None, n_boot=n_boot, seed=k)
            for name in covered:
                e = getattr(est, name)
                covered[name] += int(e["low"] <= truth <= e["high"])
    return {"logs": runs, "decisions_per_log": n, "nominal": 0.95} | {
        name: c / runs for name, c in covered.items()
    }
