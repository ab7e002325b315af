"""OPE of a released contact policy on logs from the simulator, whose counterfactual is exact.

Each customer gets one decision at the start of its track; with common random numbers the
simulator knows every action's net revenue for every customer, so a candidate policy's true
value on the logged customers is a sum, not an estimate.
"""

from __future__ import annotations

import numpy as np
import pytest

from retention.config import RetentionEnvConfig
from retention.contract import ContactContract
from retention.decision.baselines import LagrangianPriced
from retention.decision.env import OBS_NAMES, Book, RetentionEnv, make_env_config
from retention.decision.evaluate import expected_env
from retention.decision.ope_log import (
    action_probabilities,
    counterfactual_rewards,
    day0_observations,
    one_shot_log,
    read_log,
    simulated_coverage,
)
from retention.decision.policy import META_FILE, ExportedPolicy
from retention.fileio import write_json

C = ContactContract()
N = 400


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rng = np.random.default_rng(0)
    book = Book(
        rng.beta(2, 3, N),
        np.sort(rng.uniform(0.1, 0.6, (N, 4)), axis=1),
        rng.gamma(2.0, 600.0, N),
        effect=rng.uniform(0, 3, N),
    )
    # A budget that never binds: customers do not interact, so one decision each is a bandit.
    params = RetentionEnvConfig(customers_per_episode=N, budget_share=10.0, risk_volatility=0.2)
    env = RetentionEnv(make_env_config(book, params, C, seed=0))
    rule = LagrangianPriced(0.3)
    rule.begin(expected_env(book, params, C))
    policy_dir = tmp_path_factory.mktemp("policy")
    write_json(policy_dir / META_FILE, {"obs_names": list(OBS_NAMES), "rule": rule.rule})
    return env, ExportedPolicy(policy_dir), policy_dir


def test_counterfactual_rewards_differ_by_action_on_the_same_luck(world):
    env, _, _ = world
    customers = np.arange(50)
    r = counterfactual_rewards(env, customers, seed=3)
    assert r.shape == (50, 5)
    np.testing.assert_array_equal(r, counterfactual_rewards(env, customers, seed=3))
    assert (r[:, 0] >= 0).all()  # no contact spends nothing
    assert (r[:, 1:] != r[:, [0]]).any(axis=0).all()  # every offer changes some outcome


def test_intervals_cover_the_exact_value_at_about_their_nominal_rate():
    covered = simulated_coverage(runs=20, n=300)
    # 95 % intervals over 20 logs: 17 or more covering is what a correct interval gives with
    # probability ~0.98; a biased one fails it.
    assert all(covered[name] * 20 >= 16 for name in ("ips", "snips", "dr")), covered


def test_a_bad_log_is_named(world, tmp_path):
    env, policy, _ = world
    customers = np.arange(20)
    probs = np.full((20, 5), 0.2)
    paths = one_shot_log(env, customers, 0, probs, tmp_path)
    obs = paths["observations"]
    with pytest.raises(FileNotFoundError, match="outcomes: no file"):
        read_log(paths["decisions"], tmp_path / "none.csv", obs)
    out = paths["outcomes"]
    out.write_text(out.read_text().replace("reward", "revenue"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"outcomes: missing columns \['reward'\]"):
        read_log(paths["decisions"], out, obs)
    obs.write_text(obs.read_text().replace("churn_risk", "risk"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"observations.csv: missing column\(s\) \['churn_risk'\]"):
        read_log(paths["decisions"], paths["outcomes"], obs)


def test_the_ope_command_reads_a_log_and_writes_its_estimates(world, tmp_path, capsys):
    from retention.fileio import read_json
    from retention_cli.main import main

    env, policy, policy_dir = world
    customers = np.arange(200)
    target = action_probabilities(policy, day0_observations(env, customers, 1))
    paths = one_shot_log(env, customers, 1, 0.5 * target + 0.1, tmp_path / "log")
    code = main(["ope", str(paths["decisions"]), "--policy", str(policy_dir),
                 "--outcomes", str(paths["outcomes"]), "--observations",
                 str(paths["observations"]), "--out", str(tmp_path / "ope.json")])  # fmt: skip
    assert code == 0
    assert "DR gain over the logged policy" in capsys.readouterr().out
    doc = read_json(tmp_path / "ope.json")
    assert doc["decisions"] == 200 and doc["dr"]["low"] <= doc["dr"]["value"] <= doc["dr"]["high"]
    bad = main(["ope", str(paths["decisions"]), "--policy", str(policy_dir),
                "--outcomes", str(tmp_path / "missing.csv"),
                "--observations", str(paths["observations"])])  # fmt: skip
    assert bad == 2
