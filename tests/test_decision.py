"""retention.decision: env dynamics and constraint accounting, the dual update, baselines, export."""

import subprocess
import sys

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from retention.config import DecisionConfig, Dual, LagrangeConfig, RetentionEnvConfig
from retention.contract import ContactContract, ContactLimits
from retention.decision.baselines import (
    AlwaysMaxOffer,
    GreedyKnapsack,
    LagrangianPriced,
    NeverContact,
    RiskThreshold,
    hull_increments,
    wait_index,
)
from retention.decision.env import OBS_NAMES, Book, RetentionEnv, make_env_config
from retention.decision.evaluate import (
    compare,
    expected_env,
    expected_net_revenue,
    held_out_episodes,
    run_episode,
    sampled_episodes,
    tune_lagrangian,
    tune_threshold,
)
from retention.decision.heuristics import rule_params
from retention.decision.ppo import dual_update


def book(n=200, seed=0, accept=None):
    rng = np.random.default_rng(seed)
    acc = np.sort(rng.uniform(0.05, 0.5, (n, 4)), axis=1) if accept is None else accept
    return Book(rng.beta(1.2, 3, n), acc, rng.gamma(1.0, 300.0, n))


C = ContactContract()  # the default: 0/5/10/15 % for three bills, cooldown 14, cap 3, quarter


def contract(contact_cost=0.2, **limits):
    return ContactContract(contact_cost=contact_cost, limits=ContactLimits(**limits))


def env_for(b, contract=C, **params):
    return RetentionEnv(make_env_config(b, RetentionEnvConfig(**params), contract, seed=0))


def one_customer(churn=0.3, accept=1.0, value=1200.0, contract=C, **params):
    b = Book(np.array([churn]), np.full((1, 4), accept), np.array([value]))
    params.setdefault("customers_per_episode", 1)
    params.setdefault("risk_volatility", 0.0)
    return env_for(b, contract, **params)


def test_env_passes_gymnasium_check():
    env = env_for(book())
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (len(OBS_NAMES),)
    assert env.observation_space.contains(obs)


def test_common_random_numbers_make_episodes_repeatable():
    env = env_for(book())
    a = run_episode(NeverContact(), env, sampled_episodes(200, 50, 1, 3)[0])
    b = run_episode(NeverContact(), env, sampled_episodes(200, 50, 1, 3)[0])
    assert a == b
    assert a["contacts"] == 0 and a["spend"] == 0.0


def test_churn_without_contact_follows_the_clock():
    # Constant hazard: the customer churns iff its unit-exponential clock is below h0 * period.
    env = one_customer(churn=0.4)
    churned = 0
    for seed in range(400):
        env.reset(seed=seed)
        clock = env.clock[0]
        done = False
        while not done:
            _, _, done, _, info = env.step([0, 0, 7])
        assert info["episode_stats"]["churned"] == int(clock <= env.h0[0] * env.period_days)
        churned += info["episode_stats"]["churned"]
    assert abs(churned / 400 - 0.4) < 0.08  # the risk model's probability, over the period


def test_accepted_offer_cuts_the_hazard_and_costs_the_discount():
    env = one_customer(
        churn=0.3, accept=1.0, value=1200.0, contract=contract(contact_cost=0.5), budget_share=1.0
    )
    env.reset(seed=0)
    _, reward, _, _, info = env.step([1, 3, 7])  # accept certain; 60 days of wait
    p = env.params
    assert env.stats.accepted == 1
    assert env.spend == pytest.approx(0.5 + 0.15 * 1200 / 12 * 3)
    expected_hazard = env.h0[0] * 60 * (1 - p.hazard_reduction[3])
    assert env.cum_hazard == pytest.approx(expected_hazard)
    saved = np.exp(-expected_hazard) - np.exp(-env.h0[0] * 60)
    penalty = env.lambdas["budget"] * info["costs"]["budget"]
    assert reward == pytest.approx(saved - env.spend / 1200 - penalty)


def test_without_the_shield_violations_happen_and_are_counted():
    env = one_customer(
        accept=0.0,
        contract=contract(cooldown_days=14, fatigue_cap=2),
        budget_share=0.0001,
        shield=False,
    )
    env.set_lambdas({"budget": 0.0, "fatigue": 3.0, "cooldown": 2.0})
    env.reset(seed=0)
    _, _, _, _, info = env.step([1, 0, 0])  # day 0 -> 1; 0.2 contact cost > 0.12 budget
    assert info["costs"] == {"budget": 1.0, "fatigue": 0.0, "cooldown": 0.0}
    _, r, _, _, info = env.step([1, 0, 3])  # day 1: inside the cooldown
    assert info["costs"] == {"budget": 1.0, "fatigue": 0.0, "cooldown": 1.0}
    assert r < -2.0  # lambda_cooldown = 2
    _, _, _, _, info = env.step([1, 0, 3])  # day 15: cooldown over, 3rd contact > cap 2
    assert info["costs"]["fatigue"] == 1.0 and info["costs"]["cooldown"] == 0.0
    stats = env.stats.as_dict()
    assert stats["contacts"] == 3 and stats["blocked_contacts"] == 0
    assert stats["fatigue_violations"] == 1 and stats["cooldown_violations"] == 1
    assert stats["budget_overshoot"] == pytest.approx((0.6 - env.budget) / env.budget)


def test_the_shield_refuses_breaches_and_charges_the_attempt():
    env = one_customer(
        accept=0.0, contract=contract(cooldown_days=14, fatigue_cap=2), budget_share=0.01
    )
    env.set_lambdas({"budget": 5.0, "fatigue": 3.0, "cooldown": 2.0})
    env.reset(seed=0)  # budget 12: two 0.2 contacts fit, a 15 % offer (45) does not
    _, r, _, _, info = env.step([1, 3, 0])
    assert info["costs"]["budget"] == 1.0 and env.spend == 0.0 and env.contacts == 0
    assert r == pytest.approx(-5.0)
    env.step([1, 0, 0])  # day 1: allowed; next decision after 1 day
    _, _, _, _, info = env.step([1, 0, 3])  # day 2: cooldown -> refused; wait 14 days
    assert info["costs"]["cooldown"] == 1.0 and env.contacts == 1
    env.step([1, 0, 3])  # day 16: cooldown over -> 2nd contact; wait 14 days
    _, _, _, _, info = env.step([1, 0, 0])  # day 30: 3rd contact -> fatigue cap, refused
    assert info["costs"] == {"budget": 0.0, "fatigue": 1.0, "cooldown": 0.0}
    env.step([1, 0, 0])  # day 31: fatigue cap (the cooldown ended on day 30) -> refused
    stats = env.stats.as_dict()
    assert stats["contacts"] == 2 and stats["blocked_contacts"] == 4
    assert stats["attempted_contacts"] == 6
    assert stats["fatigue_violations"] == 0 and stats["cooldown_violations"] == 0
    assert stats["budget_overshoot"] == 0.0
    assert (stats["budget_attempts"], stats["fatigue_attempts"], stats["cooldown_attempts"]) == (
        1,
        2,
        1,
    )


def test_expected_churn_reward_equals_the_sampled_return_up_to_a_constant():
    # E[expected-mode return] = E[sampled return] + E[value lost without any offer]: the same
    # optimum, with a fraction of the variance.
    def returns(mode):
        env = one_customer(churn=0.5, accept=0.5, churn_reward=mode, risk_volatility=0.5)
        env.set_lambdas({"budget": 0.0})
        total, no_offer_loss = [], []
        for seed in range(3000):
            env.reset(seed=seed)
            ret, done = 0.0, False
            while not done:
                _, r, done, _, _ = env.step([1, 2, 5])
                ret += r
            total.append(ret)
            no_offer_loss.append(-np.expm1(-env.hazard[0].sum()))
        return np.asarray(total), np.asarray(no_offer_loss)

    exp_ret, no_offer = returns("expected")
    smp_ret, _ = returns("sampled")
    diff = exp_ret.mean() - smp_ret.mean() - no_offer.mean()
    se = np.hypot(exp_ret.std(), smp_ret.std()) / np.sqrt(len(exp_ret))
    assert abs(diff) < 4 * se
    assert exp_ret.std() < smp_ret.std() / 3


def test_dual_update_projects_onto_zero_and_the_cap():
    cfg = LagrangeConfig(
        budget=Dual(lr=2.0, limit=0.01),
        fatigue=Dual(lr=2.0, limit=0.5),
        cooldown=Dual(lr=2.0, limit=0.0),
        max_lambda=10.0,
    )
    lam = {"budget": 1.0, "fatigue": 0.1, "cooldown": 5.0}
    out = dual_update(lam, {"budget": 0.05, "fatigue": 0.0, "cooldown": 3.0}, cfg)
    assert out["budget"] == pytest.approx(1.0 + 2.0 * 0.04)
    assert out["fatigue"] == 0.0  # 0.1 - 1.0 projected onto 0
    assert out["cooldown"] == 10.0  # 5 + 6 capped
    assert dual_update(lam, {"budget": float("nan")}, cfg)["budget"] == 1.0


def test_hull_increments_follow_the_upper_convex_hull():
    spend = np.array([1.0, 2.0, 3.0, 4.0])
    uplift = np.array([3.0, 4.0, 6.0, 6.5])
    incs = hull_increments(spend, uplift)
    # (0,0)->(1,3): 3; (1,3)->(3,6): 1.5 (skips level 1 below the hull); (3,6)->(4,6.5): 0.5
    assert [(round(e, 3), d, j) for e, d, j in incs] == [
        (3.0, 1.0, 0),
        (1.5, 2.0, 2),
        (0.5, 1.0, 3),
    ]
    assert hull_increments(spend, -uplift) == []


def test_baselines_keep_every_hard_limit():
    b = book(300)
    eps = held_out_episodes(len(b), 50, 4, 5)
    res = compare(
        [AlwaysMaxOffer(), RiskThreshold(0.2, 2), LagrangianPriced(0.3), GreedyKnapsack()],
        b,
        RetentionEnvConfig(),
        C,
        eps,
    )
    for name, m in res.items():
        assert m["fatigue_violations"] == 0 and m["cooldown_violations"] == 0, name
        assert m["budget_overshoot"] == 0.0, name
        assert m["customers"] == 4 * 300
    assert res["always_max"]["offer_mix"] == [0.0, 0.0, 0.0, 1.0]
    assert res["risk_threshold"]["offer_mix"][2] == 1.0
    # On a budget that binds, targeting beats spraying the largest offer.
    key = "expected_net_revenue_retained"
    assert res["greedy_knapsack"][key]["mean"] > res["always_max"][key]["mean"]
    assert res["greedy_knapsack"][key]["mean"] > 0
    # The knapsack plans against the worst case the ledger charges: it is never refused.
    assert res["greedy_knapsack"]["blocked_rate"] == 0.0


def test_the_knapsack_replans_what_a_declined_offer_left():
    """After a customer declines, the budget its planned offer would have taken goes to the
    customers still to come: the plan made then buys at least as much as the first one did."""
    env = env_for(book(100), budget_share=0.004)
    env.reset(seed=2)
    k = GreedyKnapsack()
    k.begin(env)
    first = {key: lvl for key, lvl in k.plan.items() if key[0] > 0}
    env.i, env.contacts = 1, 0
    env.spend = 0.0  # customer 0 declined whatever it was offered: nothing was spent
    k._replan(env)
    assert k.plan.keys() >= first.keys()
    env.spend = env.budget  # everything spent: nothing more is planned
    k._replan(env)
    assert k.plan == {}


def test_knapsack_plan_fits_the_budget_in_expectation():
    env = env_for(book(100), budget_share=0.002)
    env.reset(seed=2)
    k = GreedyKnapsack()
    k.begin(env)
    assert k.plan, "a positive budget buys some contacts"
    assert all(0 <= lvl <= 3 for lvl in k.plan.values())
    assert all(a == 0 or (i, a - 1) in k.plan for i, a in k.plan)  # attempts in order


def test_held_out_episodes_cover_every_customer_each_round():
    eps = held_out_episodes(105, 50, 2, 0)
    assert len(eps) == 6
    for r in range(2):
        seen = np.concatenate([e.customers for e in eps[3 * r : 3 * r + 3]])
        assert set(seen) == set(range(105))
    assert len({e.seed for e in eps}) == 6


def test_threshold_tuning_returns_the_best_grid_point():
    b = book(200)
    params = RetentionEnvConfig(customers_per_episode=40)
    eps = sampled_episodes(len(b), 40, 4, 1)
    best = tune_threshold(b, params, C, eps, grid=3)
    env = expected_env(b, params, C)

    def net(p):
        return np.mean([expected_net_revenue(p, env, e) for e in eps])

    q = np.quantile(b.churn_prob, np.linspace(0.1, 0.9, 3))
    assert net(best) >= max(net(RiskThreshold(float(t), lvl)) for t in q for lvl in range(4)) - 1e-9


def test_wait_index_picks_the_shortest_long_enough_choice():
    env = env_for(book())
    assert env.params.followup_days[wait_index(env, 14)] == 14
    assert env.params.followup_days[wait_index(env, 15)] == 21
    assert env.params.followup_days[wait_index(env, 999)] == 60


def test_book_rejects_ragged_columns():
    with pytest.raises(ValueError, match="differ in length"):
        Book(np.array([0.1, 0.2]), np.zeros((3, 4)), np.array([1.0, 2.0]))


def test_exported_policy_loads_without_ray():
    code = (
        "import sys, retention.decision.policy as p; "
        "assert 'ray' not in sys.modules, 'ray imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_ppo_trains_and_the_export_matches_rllib(tmp_path):
    from retention.decision.policy import ExportedPolicy, check_contract
    from retention.decision.ppo import demonstrations, train_ppo

    cfg = DecisionConfig(
        env=RetentionEnvConfig(customers_per_episode=10),
        iterations=2,
        train_batch_size=300,
        minibatch_size=64,
        num_epochs=2,
        lagrange=LagrangeConfig(warmup_iterations=0),
        warm_start_episodes=30,
        select_every=1,
        select_episodes=3,
    )
    b = book(100)
    teacher = RiskThreshold(float(np.median(b.churn_prob)), 3)
    res = train_ppo(cfg, C, b, 0, tmp_path, tmp_path / "model", teacher=teacher)
    assert res.export_max_abs_diff < 1e-5
    assert len(res.history) == 2 and res.env_steps >= 600
    assert res.history[1]["lambdas"] != res.history[0]["lambdas"]  # the dual step ran
    assert [s["iteration"] for s in res.selection] == [0, 1, 2]
    best = max(res.selection, key=lambda s: s["validation"])
    assert res.selected_iteration == best["iteration"]

    pol = ExportedPolicy(tmp_path / "model")
    check_contract(pol.meta, C)  # policy.json records the contract it was trained under
    probs = pol.probabilities(np.zeros((5, len(OBS_NAMES)), dtype=np.float32))
    assert [p.shape for p in probs] == [(5, 2), (5, 4), (5, 8)]
    assert all(np.allclose(p.sum(axis=1), 1.0) for p in probs)
    # The warm start imitates the teacher (and PPO moved it by at most two small steps).
    obs, actions = demonstrations(teacher, b, cfg.env, C, sampled_episodes(100, 10, 5, 99))
    agree = np.mean([(pol.act(o) == a).all() for o, a in zip(obs, actions, strict=True)])
    assert agree > 0.8
    env = env_for(b, customers_per_episode=10)
    stats = run_episode(pol, env, sampled_episodes(100, 10, 1, 0)[0])
    assert stats["customers"] == 10


MONTHLY = ContactContract(
    offers=[
        {"discount": 0, "months": 0},
        {"discount": 0.1, "months": 2},
        {"discount": 0.2, "months": 2},
        {"discount": 0.3, "months": 2},
    ],
    limits=ContactLimits(period="month", cooldown_days=7, fatigue_cap=2),
    contact_cost=1.0,
)


@pytest.mark.parametrize("contract", [C, MONTHLY], ids=["default", "monthly"])
def test_serving_observation_matches_the_env_it_was_trained_on(contract):
    from retention.decision.observe import LiveCustomer, observation

    b = book(60, seed=4)
    b.effect = np.random.default_rng(5).uniform(0.0, 3.0, len(b))  # the uplift model's scale
    env = env_for(b, contract, customers_per_episode=40)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        if env.i >= len(env.idx):
            break
        live = LiveCustomer(
            churn_risk=env.current_risk(),
            accept_probs=tuple(env.acc[env.i]),
            value=float(env.value[env.i]),
            day=env.day,
            contacts=env.contacts,
            days_since_contact=None if env.last_contact is None else env.day - env.last_contact,
            offer_active=env.day < env.offer_until,
            budget_left_share=(env.budget - env.spend) / env.budget,
            effect=float(env.effect[env.i]),
        )
        want = env._obs()
        got = observation(
            live,
            env.params,
            env.contract,
            b.mean_value,
            customers_left=(len(env.idx) - env.i) / len(env.idx),
            period_budget=env.budget,
        )
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        checked += 1
        env.step(np.array([rng.integers(2), rng.integers(4), rng.integers(8)]))
    assert checked > 50


@pytest.mark.parametrize("kind", ["risk_threshold", "lagrangian"])
def test_a_released_rule_acts_as_the_heuristic_it_replaces(tmp_path, kind):
    """Champion/challenger releases a tuned rule in PPO's place: served from policy.json it
    must earn exactly what the baseline earned on the same held-out episodes (the gate's
    premise: the paired difference is then identically 0)."""
    from retention.decision.evaluate import paired_difference
    from retention.decision.policy import META_FILE, ExportedPolicy
    from retention.fileio import write_json

    b, params = book(300), RetentionEnvConfig()
    if kind == "risk_threshold":
        rule = RiskThreshold(float(np.quantile(b.churn_prob, 0.6)), 2)
    else:
        rule = LagrangianPriced(0.3)
    rule.begin(expected_env(b, params, C))
    write_json(tmp_path / META_FILE, {"obs_names": list(OBS_NAMES), "rule": rule.rule})
    eps = held_out_episodes(len(b), 50, 2, 3)
    res = compare([rule, ExportedPolicy(tmp_path, name="released")], b, params, C, eps)
    key = "expected_net_revenue_retained"
    assert res["released"][key] == res[rule.name][key]
    assert paired_difference(res["released"], res[rule.name]) == {
        "mean": 0.0,
        "low": 0.0,
        "high": 0.0,
    }
    assert res["released"]["offer_mix"] == res[rule.name]["offer_mix"]
    assert res["released"]["cooldown_violations"] == res["released"]["fatigue_violations"] == 0
    assert res["released"]["blocked_rate"] <= 0.05  # it keeps the limits itself, as the rule does


def test_rule_logits_and_the_scalar_rule_agree_with_the_vectorised_one():
    from retention.decision.heuristics import rule_action, rule_actions, rule_logits

    rng = np.random.default_rng(0)
    obs = rng.uniform(-0.2, 1.2, (3000, len(OBS_NAMES))).astype(np.float32)
    for k in ("cooldown_active", "offer_active"):
        obs[:, OBS_NAMES.index(k)] = rng.integers(0, 2, len(obs))
    params = RetentionEnvConfig()
    rules = [
        rule_params("risk_threshold", C, params, 800.0, threshold=0.5, level=2),
        rule_params("lagrangian", C, params, 800.0, mu=0.3),
    ]
    for rule in rules:
        vec = rule_actions(rule, obs)
        assert 0.02 < vec[:, 0].mean() < 0.98, rule["kind"]  # both branches are exercised
        assert (vec == np.array([rule_action(rule, o) for o in obs])).all(), rule["kind"]
        logits = rule_logits(rule, obs)
        assert (logits[:, :2].argmax(axis=1) == vec[:, 0]).all()
        assert (logits[:, 2:6].argmax(axis=1) == vec[:, 1]).all()
    with pytest.raises(ValueError, match="rule.kind"):
        rule_actions({**rules[0], "kind": "knapsack"}, obs)


def test_the_lagrangian_rule_prices_the_budget():
    """mu = 0 contacts every customer with a positive expected uplift; a high price contacts
    only the best; the tuned price earns at least as much as any on the grid."""
    b = book(200)
    params = RetentionEnvConfig(customers_per_episode=40, budget_share=0.02)
    eps = sampled_episodes(len(b), 40, 4, 1)
    env = expected_env(b, params, C)

    def run(policy):
        return compare([policy], b, params, C, eps)[policy.name]

    cheap, dear = run(LagrangianPriced(0.0)), run(LagrangianPriced(5.0))
    assert cheap["contact_rate"]["mean"] > dear["contact_rate"]["mean"]
    assert cheap["budget_used"]["mean"] >= dear["budget_used"]["mean"]
    grid = (0.0, 0.1, 0.5, 2.0)
    best = tune_lagrangian(b, params, C, eps, grid=grid)
    assert best.mu in grid

    def net(p):
        return np.mean([expected_net_revenue(p, env, e) for e in eps])

    assert net(best) >= max(net(LagrangianPriced(mu)) for mu in grid) - 1e-9


def test_choose_release_holds_ppo_to_a_paired_interval_at_or_above_zero():
    from retention.decision.train import choose_release

    rules = [RiskThreshold(0.5, 2), LagrangianPriced(0.3)]

    def ev(best, low, nets):
        res = {k: {"expected_net_revenue_retained": {"mean": v}} for k, v in nets.items()}
        diff = {"mean": low + 1.0, "low": low, "high": low + 2.0}
        return {"results": res, "best_baseline": best, "difference_vs_best_baseline": diff}

    nets = {"ppo": 60.0, "risk_threshold": 50.0, "lagrangian": 55.0, "greedy_knapsack": 40.0}
    assert choose_release(ev("lagrangian", 0.5, nets), rules)[0] == "ppo"
    name, why = choose_release(ev("lagrangian", -0.5, nets), rules)
    assert name == "lagrangian" and "strongest heuristic" in why
    # The knapsack cannot be served: the best servable rule is released, and the gate (its
    # paired interval against the knapsack) decides whether it ships.
    nets["greedy_knapsack"] = 70.0
    name, why = choose_release(ev("greedy_knapsack", -0.5, nets), rules)
    assert name == "lagrangian" and "serving cannot run" in why


def test_the_offer_effect_scales_the_hazard_cut_per_customer():
    """A lost cause (effect 0) gains nothing from an accepted offer; a persuadable (effect 2)
    keeps twice the average cut; the book rejects a negative effect."""
    acc = np.ones((3, 4))
    b = Book(np.full(3, 0.5), acc, np.full(3, 1000.0), effect=np.array([0.0, 1.0, 2.0]))
    env = env_for(b, customers_per_episode=3)
    env.reset(seed=0, options={"customers": np.arange(3)})
    cut = np.asarray(env.params.hazard_reduction)
    np.testing.assert_allclose(env.keep[0], 1.0)
    np.testing.assert_allclose(env.keep[1], 1.0 - cut)
    np.testing.assert_allclose(env.keep[2], 1.0 - np.minimum(2 * cut, 0.95))
    gains = []
    for i in range(3):
        env.i = i
        env._start_customer()
        gains.append(env.expected_uplift()[3] + env.offer_cost(3) + env.contract.contact_cost)
    assert gains[0] == pytest.approx(0.0, abs=1e-9) and 0 < gains[1] < gains[2]
    with pytest.raises(ValueError, match="effect"):
        Book(np.full(2, 0.5), np.ones((2, 4)), np.ones(2), effect=np.array([1.0, -0.5]))
