"""PPO for text: the arithmetic by hand, the KL controller, and one real update on tiny models."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from retention.messaging.ppo_math import (  # noqa: E402
    AdaptiveKLController,
    gae,
    leave_one_out,
    ppo_losses,
    token_rewards,
)


def test_kl_controller_moves_beta_towards_the_target():
    ctl = AdaptiveKLController(value=0.1, target=4.0, horizon=100)
    assert ctl.update(8.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))  # error clipped at +0.2
    ctl = AdaptiveKLController(value=0.1, target=4.0, horizon=100)
    assert ctl.update(3.0, 10) == pytest.approx(0.1 * (1 - 0.2 * 10 / 100))  # -0.25 clipped
    ctl = AdaptiveKLController(value=0.1, target=4.0, horizon=100)
    assert ctl.update(4.4, 10) == pytest.approx(0.1 * (1 + 0.1 * 10 / 100))
    # Far above target for long: beta grows geometrically; at target it stays.
    ctl = AdaptiveKLController(value=0.1, target=1.0, horizon=10)
    for _ in range(5):
        ctl.update(10.0, 10)
    assert ctl.value == pytest.approx(0.1 * 1.2**5)
    before = ctl.value
    assert ctl.update(1.0, 10) == pytest.approx(before)


def test_token_rewards_put_the_score_on_the_last_generated_token():
    score = torch.tensor([1.0, 2.0])
    lp = torch.tensor([[0.0, -1.0, -1.0], [-1.0, -2.0, 0.0]])
    ref = torch.tensor([[0.0, -2.0, -1.0], [-1.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    r, kl = token_rewards(score, lp, ref, mask, beta=0.5)
    assert torch.allclose(kl, torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]]))
    assert torch.allclose(r, torch.tensor([[0.0, -0.5, 1.0], [0.0, 0.5 + 2.0, 0.0]]))


def test_gae_by_hand():
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.5, 0.5]])
    m = torch.ones(1, 3)
    adv, ret = gae(r, v, m, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[0.5, 0.5, 0.5]]))
    assert torch.allclose(ret, torch.ones(1, 3))  # the Monte Carlo return
    adv, _ = gae(r, v, m, gamma=1.0, lam=0.5)
    assert torch.allclose(adv, torch.tensor([[0.125, 0.25, 0.5]]))
    # Padding after the last token is ignored and does not leak into it.
    adv_pad, _ = gae(torch.tensor([[0.0, 0.0, 1.0, 9.0]]), torch.tensor([[0.5, 0.5, 0.5, 7.0]]),
                     torch.tensor([[1.0, 1.0, 1.0, 0.0]]), 1.0, 1.0)  # fmt: skip
    assert torch.allclose(adv_pad, torch.tensor([[0.5, 0.5, 0.5, 0.0]]))


def test_ppo_losses_by_hand():
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.75, 0.25]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, 1.0]])
    m = torch.ones(1, 2)
    pg, vf, stats = ppo_losses(new, old, adv, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]),
                               torch.tensor([[1.0, 1.0]]), m, clip=0.2, value_clip=0.2)  # fmt: skip
    # token 1: max(-1.5, -1.2) = -1.2; token 2: max(-0.5, -0.8) = -0.5; mean -0.85
    assert float(pg) == pytest.approx(-0.85)
    # values: token 1 new 1.0 (clipped 0.2): max(0, 0.64) = 0.64; token 2: max(1, 1) = 1
    assert float(vf) == pytest.approx(0.5 * (0.64 + 1.0) / 2)
    assert stats["clipfrac"] == pytest.approx(1.0)


def test_leave_one_out_judges_each_sample_against_its_siblings():
    r = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    # Prompt 1: 1 - (2+3)/2, 2 - (1+3)/2, 3 - (1+2)/2; prompt 2: all alike, no signal.
    assert torch.allclose(leave_one_out(r, 3), torch.tensor([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    # A prompt that is easy for every sample adds nothing: only differences within it count.
    assert torch.allclose(leave_one_out(r + torch.tensor([0, 0, 0, 5, 5, 5.0]), 3),
                          leave_one_out(r, 3))  # fmt: skip
    with pytest.raises(ValueError, match="groups of k=4"):
        leave_one_out(r, 4)
    with pytest.raises(ValueError, match="k=1"):
        leave_one_out(r, 1)


def test_rloo_advantages_favour_the_better_sample_on_all_its_tokens():
    from types import SimpleNamespace

    from retention.config import PpoTextConfig
    from retention.messaging.ppo_text import advantages

    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    zeros = torch.zeros(4, 3)
    ro = SimpleNamespace(scores=torch.tensor([1.0, 0.0, 5.0, 5.0]), logprobs=zeros,
                         ref_logprobs=zeros, mask=mask, values=None)  # fmt: skip
    cfg = PpoTextConfig(samples_per_prompt=2)
    adv, returns, kl = advantages(ro, ro.scores, 0.1, cfg)
    assert returns is None and torch.all(kl == 0)
    assert torch.all(adv[0, :2] > 0) and torch.all(adv[1] < 0)  # 1 beat 0 on the first prompt
    assert torch.allclose(adv[0, :2], adv[0, 0]) and adv[0, 2] == 0  # one value, masked after
    assert torch.allclose(adv[2:], adv[2, 0].expand(2, 3) * mask[2:])  # tied prompt: equal
    # The KL penalty is part of the sequence reward: same score, the one further from SFT loses.
    lp = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0], [0.0] * 3, [0.0] * 3])
    ro.scores, ro.logprobs = torch.tensor([1.0, 1.0, 0.0, 0.0]), lp
    adv, _, kl = advantages(ro, ro.scores, 0.1, cfg)
    assert float(kl[1].sum()) == 6.0 and adv[0, 0] > adv[1, 0]


def test_reward_is_read_in_units_of_the_sft_samples_spread():
    from retention.messaging.ppo_text import RewardScale, sequence_scores

    scale = RewardScale.of(np.array([1.0, 3.0]))  # mean 2, std 1
    assert (scale.mean, scale.std) == (2.0, 1.0)
    # A violation costs `penalty` in those units, whatever scale the RM was trained to.
    got = sequence_scores(np.array([1.0, 3.0]), np.array([0, 1]), 2.0, scale)
    assert np.allclose(got, [-1.0, -1.0])
    ten_times = sequence_scores(np.array([10.0, 30.0]), np.array([0, 1]), 2.0,
                                RewardScale.of(np.array([10.0, 30.0])))  # fmt: skip
    assert np.allclose(ten_times, got)
    assert RewardScale.of(np.full(4, 5.0)).std == 0.25  # one look-alike batch is no unit
    assert np.allclose(sequence_scores(np.array([3.0]), np.array([1]), 2.0, None), [1.0])


def test_rloo_needs_samples_to_compare():
    from pydantic import ValidationError

    from retention.config import PpoTextConfig

    with pytest.raises(ValidationError, match="samples_per_prompt >= 2"):
        PpoTextConfig(advantage="rloo", samples_per_prompt=1)
    assert PpoTextConfig(advantage="gae", samples_per_prompt=1).samples_per_prompt == 1


def test_ppo_losses_without_a_value_head():
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.75, 0.25]]))
    pg, vf, _ = ppo_losses(new, old, torch.ones(1, 2), None, None, None, torch.ones(1, 2))
    assert float(pg) == pytest.approx(-0.85) and float(vf) == 0.0


@pytest.mark.parametrize("advantage", ["rloo", pytest.param("gae", marks=pytest.mark.slow)])
def test_one_ppo_update_on_tiny_models_end_to_end(tmp_path, advantage):
    pytest.importorskip("trl")
    from retention.config import load_profile
    from retention.messaging.ppo_text import train_ppo_text
    from retention.messaging.reward import train_rm
    from retention.messaging.sft import train_sft
    from retention.results import WriterResult

    profile = load_profile("tiny", overrides=[
        "writer.sft.steps=2", "writer.sft.examples=16", "writer.sft.eval_prompts=3",
        "writer.sft.max_new_tokens=6", "writer.rm.steps=1", "writer.rm.pairs=8",
        "writer.rm.eval_pairs=4", "writer.ppo.updates=2", "writer.ppo.batch_size=3",
        "writer.ppo.max_new_tokens=6", f"writer.model.cache_dir={tmp_path / 'cache'}",
        f"writer.ppo.advantage={advantage}",
        f"writer.ppo.samples_per_prompt={2 if advantage == 'rloo' else 1}",
    ])  # fmt: skip
    train_sft(profile, tmp_path / "sft")
    rm_metrics = train_rm(profile, tmp_path / "rm")
    # The reward model PPO reloads from disk scores exactly as the one just trained.
    from retention.messaging.data import preference_pairs
    from retention.messaging.ppo_text import load_reward_model
    from retention.messaging.reward import EVAL_SEED_OFFSET, pairwise_accuracy

    held_out = preference_pairs(4, profile.seed + EVAL_SEED_OFFSET, profile.contract)
    again = pairwise_accuracy(load_reward_model(profile, tmp_path / "rm"), held_out)
    assert again["accuracy"] == rm_metrics.accuracy
    assert again["mean_margin"] == pytest.approx(rm_metrics.mean_margin, rel=0.05, abs=1e-3)
    m = train_ppo_text(profile, tmp_path / "sft", tmp_path / "rm", tmp_path / "ppo")
    assert m.updates == 2 and 0.0 <= m.win_rate_rm_low <= m.win_rate_rm <= m.win_rate_rm_high
    assert 0.0 <= m.win_rate_checklist_low <= m.win_rate_checklist <= m.win_rate_checklist_high
    # A random tiny model fails every check: neither LLM writer is released, the template is,
    # and the release says why; what it sends passes the shield.
    assert m.eval_prompts == profile.writer.release.eval_prompts
    assert m.ppo_pass_rate_as_written == m.sft_pass_rate_as_written == 0.0
    assert m.released == "template" and "neither language model" in m.release_reason
    assert m.pass_rate_as_written == 0.0 and m.violation_rate_after_shield == 0.0
    assert m.mean_kl_to_reference == 0.0 and m.distinct_2_vs_reference < 0.8
    assert m.final_kl_coef != 0.1  # the controller moved
    saved = WriterResult.load(tmp_path / "ppo" / "metrics.json")
    assert saved == m
    history = saved.details["history"]
    assert len(history) == 2 and np.isfinite(history[-1]["pg_loss"])
    assert 0.0 <= history[-1]["sample_pass_rate"] <= 1.0
    assert (history[-1]["vf_loss"] == 0.0) == (advantage == "rloo")  # no value head with rloo
    model = tmp_path / "ppo" / "model"
    assert (model / "ppo_adapter" / "adapter_config.json").is_file()
    assert (model / "sft_adapter" / "adapter_config.json").is_file()
    # Serving's writer: both adapters merged into the base, the same greedy text as the
    # PPO policy that was just evaluated.
    from retention.fileio import read_json, write_json
    from retention.messaging.ppo_text import release_examples
    from retention.messaging.shield import template_message
    from retention.messaging.writer import MessageWriter, WriterLoadError

    first = release_examples(profile)[:1]
    facts, levels = [e.facts for e in first], [e.offer_level for e in first]
    released = MessageWriter.load(model, profile.contract, max_new_tokens=6)
    assert released.released == "template" and released.model is None
    assert released.write(facts, levels) == [
        template_message(facts[0], levels[0], profile.contract)
    ]
    assert saved.details["samples"][0] == released.write(facts, levels)[0]
    # The same folder released as PPO: both adapters merged, the PPO policy's greedy text.
    meta = read_json(model / "writer.json")
    write_json(model / "writer.json", {**meta, "released": "ppo"})
    writer = MessageWriter.load(model, profile.contract, max_new_tokens=6)
    assert writer.write([{"name": "Sam", "plan": "Pro"}], [2]) == writer.write(
        [{"name": "Sam", "plan": "Pro"}], [2]
    )
    assert saved.details["ppo_samples"][0] == writer.write(facts, levels)[0]
    text, n_new, seconds = writer.timed_write({"name": "Sam"}, 1)
    assert 0 < n_new <= 6 and seconds > 0
    write_json(model / "writer.json", {**meta, "released": "sft"})
    sft_writer = MessageWriter.load(model, profile.contract, max_new_tokens=6)
    assert saved.details["sft_samples"][0] == sft_writer.write(facts, levels)[0]
    # int8 dynamic quantization of the linear layers: still a writer, on the CPU.
    q = MessageWriter.load(model, profile.contract, max_new_tokens=6, quantize_int8=True)
    assert "DynamicQuantizedLinear" in repr(q.model) and isinstance(q.write(facts, levels)[0], str)
    write_json(model / "writer.json", {**meta, "released": "best"})
    with pytest.raises(WriterLoadError, match="released 'best' is not a writer"):
        MessageWriter.load(model, profile.contract)
    with pytest.raises(WriterLoadError, match="writer.json is missing"):
        MessageWriter.load(tmp_path / "rm", profile.contract)


def test_win_rate_counts_ties_half_with_an_interval():
    from retention.messaging.ppo_text import win_rate

    a, b = np.array([1.0, 2.0, 3.0, 3.0]), np.array([0.0, 3.0, 3.0, 1.0])
    rate, low, high = win_rate(a, b, 0.95)
    assert rate == pytest.approx((1 + 0 + 0.5 + 1) / 4) and low < rate < high
    # Violations: fewer is better; all ties is exactly 0.5 with no room either side.
    assert win_rate(np.zeros(64), np.zeros(64), 0.95, lower_is_better=True) == (0.5, 0.5, 0.5)
    rate, low, _ = win_rate(np.zeros(64), np.ones(64), 0.95, lower_is_better=True)
    assert rate == 1.0 and low == 1.0


@pytest.mark.parametrize(
    ("ppo", "sft", "rm_low", "check_low", "released"),
    [
        (0.98, 0.96, 0.6, 0.55, "ppo"),  # PPO wins by both judges and passes the bar
        (0.98, 0.96, 0.6, 0.45, "sft"),  # not by the checklist: SFT
        (0.98, 0.96, 0.45, 0.6, "sft"),  # not by the RM: SFT
        (0.90, 0.96, 0.6, 0.6, "sft"),  # PPO wins but misses the bar: SFT
        (0.97, 0.80, 0.4, 0.4, "ppo"),  # SFT misses the bar, PPO meets it
        (0.90, 0.80, 0.6, 0.6, "template"),  # neither meets the bar
    ],
)
def test_release_is_champion_challenger(ppo, sft, rm_low, check_low, released):
    from retention.config import WriterReleaseConfig
    from retention.messaging.ppo_text import release_decision

    judged = {"ppo_pass_rate": ppo, "sft_pass_rate": sft, "win_rate_rm": rm_low + 0.1,
              "win_rate_rm_low": rm_low, "win_rate_checklist": check_low + 0.1,
              "win_rate_checklist_low": check_low}  # fmt: skip
    got, why = release_decision(judged, WriterReleaseConfig())
    assert got == released and why


def test_bf16_only_where_the_hardware_has_it(monkeypatch):
    from retention.messaging import device

    monkeypatch.setattr(device, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert device.bf16_ok(True) is False  # emulated bf16 on AVX2 was ~18x slower
    monkeypatch.setattr(device, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert device.bf16_ok(True) is True
    assert device.bf16_ok(False) is False
