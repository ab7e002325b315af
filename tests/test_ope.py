"""Off-policy evaluation against a simulated contextual bandit whose true target value is exact.

The simulator draws customers from a fixed finite population, so the target policy's value is
the population mean of Σ_a π(a|x)·E[r|x,a], computed exactly rather than estimated.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from retention.contract import ContactLimits
from retention.decision.ope import (
    N_ACTIONS,
    LoggedBandit,
    RewardModel,
    dr,
    evaluate,
    from_export,
    ips,
    snips,
    weights,
)

K, D, POP = 4, 3, 5000


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Bandit:
    """Bernoulli rewards, sigmoid-linear in the context; epsilon-softmax logging policy."""

    def __init__(self, seed: int = 7, eps: float = 0.2) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(POP, D))
        theta, bias = rng.normal(size=(K, D)), rng.normal(scale=0.5, size=K)
        self.mean = 1 / (1 + np.exp(-(self.x @ theta.T + bias)))
        # The logger prefers actions on its own (wrong) score; the target leans on the truth.
        self.mu = (1 - eps) * _softmax(self.x @ rng.normal(size=(K, D)).T) + eps / K
        self.pi = _softmax(2.0 * (self.x @ theta.T + bias))
        self.truth = float(np.mean(np.sum(self.pi * self.mean, axis=1)))

    def log(self, n: int, rng: np.random.Generator) -> tuple[LoggedBandit, np.ndarray]:
        who = rng.integers(0, POP, size=n)
        mu = self.mu[who]
        a = np.minimum((rng.random(n)[:, None] > mu.cumsum(axis=1)).sum(axis=1), K - 1)
        r = (rng.random(n) < self.mean[who, a]).astype(float)
        data = LoggedBandit(a, mu[np.arange(n), a], r, K, features=self.x[who])
        return data, self.pi[who]


@pytest.fixture(scope="module")
def bandit() -> Bandit:
    return Bandit()


def test_estimators_are_unbiased_over_repeats(bandit):
    rng = np.random.default_rng(11)
    reps, n = 300, 400
    est = {"ips": [], "snips": [], "dr": []}
    for _ in range(reps):
        data, probs = bandit.log(n, rng)
        est["ips"].append(ips(data, probs, n_boot=10).value)
        est["snips"].append(snips(data, probs, n_boot=10).value)
        est["dr"].append(dr(data, probs, n_boot=10).value)
    sds = {}
    for name, values in est.items():
        values = np.asarray(values)
        se = values.std(ddof=1) / np.sqrt(reps)
        assert se < 0.01, (name, se)  # the tolerance below is tight enough to mean something
        assert abs(values.mean() - bandit.truth) < 4 * se, (name, values.mean(), bandit.truth)
        sds[name] = values.std(ddof=1)
    # The reward model earns its keep: DR and SNIPS are steadier than plain IPS.
    assert sds["dr"] < sds["ips"] and sds["snips"] < sds["ips"], sds


def test_bootstrap_intervals_cover_the_true_value_at_their_nominal_rate(bandit):
    rng = np.random.default_rng(23)
    logs, n = 100, 2000
    covered = {"ips": 0, "snips": 0, "dr": 0}
    widths = {k: [] for k in covered}
    values = {k: [] for k in covered}
    for i in range(logs):
        data, probs = bandit.log(n, rng)
        report = evaluate(data, probs, n_boot=200, seed=i)
        for name in covered:
            e = getattr(report, name)
            covered[name] += e.covers(bandit.truth)
            widths[name].append(e.high - e.low)
            values[name].append(e.value)
    rates = {k: v / logs for k, v in covered.items()}
    print(f"OPE 95% bootstrap coverage over {logs} logs of {n}: {rates}")
    # 0.88 is three binomial standard errors below 0.95 for 100 logs.
    assert rates["snips"] >= 0.88 and rates["dr"] >= 0.88, rates
    for name in covered:
        # Coverage alone would pass an interval that is just wide: its width must match the
        # spread of the estimates across logs (2 × 1.96 standard deviations).
        nominal = 2 * 1.96 * np.std(values[name], ddof=1)
        assert 0.7 * nominal < np.mean(widths[name]) < 1.3 * nominal, (name, widths[name][:3])


def test_clipping_reduces_variance_and_is_reported(bandit):
    rng = np.random.default_rng(5)
    cap = 2.0
    raw, clipped, shares = [], [], []
    for _ in range(200):
        data, probs = bandit.log(300, rng)
        full, cut = ips(data, probs, n_boot=10), ips(data, probs, max_weight=cap, n_boot=10)
        w = probs[np.arange(len(data)), data.actions] / data.propensities
        assert full.clipped_share == 0.0 and full.max_weight is None
        assert cut.clipped_share == pytest.approx(np.mean(w > cap))
        assert cut.ess > full.ess  # flatter weights are worth more rows
        raw.append(full.value)
        clipped.append(cut.value)
        shares.append(cut.clipped_share)
    assert 0.01 < np.mean(shares) < 0.5  # the cap actually bites on this simulator
    assert np.std(clipped) < 0.8 * np.std(raw)
    # Clipping non-negative rewards can only shrink the estimate: a known downward bias.
    assert np.mean(clipped) < np.mean(raw)


def test_weights_and_effective_sample_size_by_hand():
    data = LoggedBandit(np.array([0, 1, 1]), np.array([0.5, 0.25, 1.0]), np.zeros(3), 2)
    probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    w, share = weights(data, probs, max_weight=1.5)
    np.testing.assert_allclose(w, [1.5, 1.5, 1.0])
    assert share == pytest.approx(2 / 3)
    e = ips(data, probs, max_weight=1.5, n_boot=10)
    assert e.ess == pytest.approx(4.0**2 / (1.5**2 * 2 + 1))


def test_dr_with_the_true_reward_model_needs_no_correction(bandit):
    data, probs = bandit.log(500, np.random.default_rng(3))
    n = len(data)
    # With a deterministic reward equal to q, the correction term vanishes: DR = direct method.
    exact_rewards = np.linspace(0, 1, n)
    data = LoggedBandit(data.actions, data.propensities, exact_rewards, K, features=data.features)
    q_target = np.full(n, 0.3)
    model = RewardModel(logged=exact_rewards, target=q_target)
    e = dr(data, probs, reward_model=model, n_boot=10)
    assert e.value == pytest.approx(0.3) and e.direct == pytest.approx(0.3)


GOOD = dict(actions=np.array([0, 1]), propensities=np.array([0.5, 0.5]), rewards=np.ones(2))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"propensities": np.array([0.0, 0.5])}, "propensities"),
        ({"propensities": np.array([1.5, 0.5])}, "propensities"),
        ({"propensities": np.array([np.nan, 0.5])}, "propensities"),
        ({"rewards": np.array([1.0, np.nan])}, "rewards"),
        ({"rewards": np.ones(3)}, "rewards"),
        ({"actions": np.array([0, 2])}, "actions"),
        ({"features": np.ones((3, 2))}, "features"),
    ],
)
def test_bad_logs_raise_naming_the_field(change, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        LoggedBandit(**{**GOOD, **change}, n_actions=2)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target": np.ones((2, 3)) / 3}, "target"),
        ({"target": np.array([[0.5, 0.2], [0.5, 0.5]])}, "target"),
        ({"max_weight": 0.0}, "max_weight"),
        ({"n_boot": 1}, "n_boot"),
        ({"level": 1.0}, "level"),
        ({"reward_model": RewardModel(np.zeros(3), np.zeros(2))}, "reward_model.logged"),
        ({"target": lambda x: x}, "target"),  # a callable needs features
    ],
)
def test_bad_estimator_arguments_raise_naming_the_field(kwargs, field):
    data = LoggedBandit(**GOOD, n_actions=2)
    kwargs = {"target": np.full((2, 2), 0.5), **kwargs}
    with pytest.raises(ValueError, match=rf"^{field}[:.]"):
        dr(data, **kwargs)


# ------------------------------------------------------------------------- the ledger's export

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday noon: outside quiet hours in UTC


@pytest.fixture(params=[".csv", ".parquet"])
def exported(request, tmp_path) -> pd.DataFrame:
    from serving.ledger import ContactLedger, Proposal

    ledger = ContactLedger(f"sqlite:///{tmp_path}/ledger.sqlite", ContactLimits())
    try:
        made = [
            ("r1", Proposal(True, 2, 5.0, 7, "treatment", 0.4, "policy")),
            ("r2", Proposal(False, 0, 0.0, 7, "treatment", 0.8, "policy")),
            ("r3", Proposal(True, 0, 1.0, 7, "control", 0.5, "rules")),
            ("r4", Proposal(True, 3, 9.0, 14, "treatment", 0.25, "policy")),
        ]
        for i, (rid, proposal) in enumerate(made):
            ledger.decide(rid, f"c{i}", proposal, T0 + timedelta(minutes=i), None)
        out = ledger.export_decisions(tmp_path / f"decisions{request.param}")
    finally:
        ledger.close()
    if request.param == ".parquet":
        return pd.read_parquet(out)
    return pd.read_csv(out, keep_default_na=False)


OUTCOMES = pd.DataFrame({"request_id": ["r4", "r3", "r2", "r1"], "reward": [8.0, 0.0, 1.0, 2.0]})


def test_from_export_maps_proposals_to_actions(exported):
    data = from_export(exported, OUTCOMES)
    assert data.request_ids == ("r1", "r2", "r3", "r4")
    assert list(data.actions) == [3, 0, 1, 4]  # 0 = no contact, 1 + offer level otherwise
    np.testing.assert_allclose(data.propensities, [0.4, 0.8, 0.5, 0.25])
    np.testing.assert_allclose(data.rewards, [2.0, 1.0, 0.0, 8.0])
    assert data.n_actions == N_ACTIONS
    # A target that always contacts with the top offer: only r4 agrees, weight 1 / 0.25.
    always_top = np.zeros((4, N_ACTIONS))
    always_top[:, -1] = 1.0
    assert ips(data, always_top, n_boot=10).value == pytest.approx(8.0 * 4 / 4)
    assert snips(data, always_top, n_boot=10).value == pytest.approx(8.0)


def test_from_export_joins_features_and_handles_missing_outcomes(exported):
    feats = pd.DataFrame({"request_id": ["r3", "r1", "r2", "r4"], "risk": [0.3, 0.1, 0.2, 0.4]})
    data = from_export(exported, OUTCOMES, features=feats)
    np.testing.assert_allclose(data.features[:, 0], [0.1, 0.2, 0.3, 0.4])
    partial = OUTCOMES[OUTCOMES["request_id"] != "r2"]
    with pytest.raises(ValueError, match=r"^outcomes: no reward for 1 decisions \(e.g. 'r2'\)"):
        from_export(exported, partial)
    assert from_export(exported, partial, missing="drop").request_ids == ("r1", "r3", "r4")
    with pytest.raises(ValueError, match=r"^decisions: missing columns \['propensity'\]"):
        from_export(exported.drop(columns="propensity"), OUTCOMES)
    with pytest.raises(ValueError, match=r"^outcomes.request_id: duplicated"):
        from_export(exported, pd.concat([OUTCOMES, OUTCOMES]))
    with pytest.raises(ValueError, match=r"^rewards:"):
        from_export(exported, OUTCOMES.assign(reward=[1.0, np.nan, 0.0, 0.0]))
