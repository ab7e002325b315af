"""PPO for text: the arithmetic by hand, the KL controller, and one real update on tiny models."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from retention.messaging.ppo_math import (  # noqa: E402
    AdaptiveKLController,
    gae,
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


@pytest.mark.parametrize("stage", ["ppo"])
def test_one_ppo_update_on_tiny_models_end_to_end(tmp_path, stage):
    pytest.importorskip("trl")
    from retention.config import load_profile
    from retention.messaging.ppo_text import train_ppo_text
    from retention.messaging.reward import train_rm
    from retention.messaging.sft import eval_examples, train_sft
    from retention.results import WriterResult

    profile = load_profile("tiny", overrides=[
        "writer.sft.steps=2", "writer.sft.examples=16", "writer.sft.eval_prompts=3",
        "writer.sft.max_new_tokens=6", "writer.rm.steps=1", "writer.rm.pairs=8",
        "writer.rm.eval_pairs=4", "writer.ppo.updates=2", "writer.ppo.batch_size=3",
        "writer.ppo.max_new_tokens=6", f"writer.model.cache_dir={tmp_path / 'cache'}",
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
    assert m.updates == 2 and 0.0 <= m.win_rate_rm <= 1.0
    assert 0.0 <= m.win_rate_checklist <= 1.0
    # A random tiny model fails every check; the shield's fallback passes every one.
    assert m.violation_rate_before_shield == 1.0 and m.violation_rate_after_shield == 0.0
    assert m.final_kl_coef != 0.1  # the controller moved
    saved = WriterResult.load(tmp_path / "ppo" / "metrics.json")
    assert saved == m
    history = saved.details["history"]
    assert len(history) == 2 and np.isfinite(history[-1]["pg_loss"])
    model = tmp_path / "ppo" / "model"
    assert (model / "ppo_adapter" / "adapter_config.json").is_file()
    assert (model / "sft_adapter" / "adapter_config.json").is_file()
    # Serving's writer: both adapters merged into the base, the same greedy text as the
    # PPO policy that was just evaluated.
    from retention.messaging.writer import MessageWriter, WriterLoadError

    writer = MessageWriter.load(model, profile.contract, max_new_tokens=6)
    assert writer.write([{"name": "Sam", "plan": "Pro"}], [2]) == writer.write(
        [{"name": "Sam", "plan": "Pro"}], [2]
    )
    assert (
        saved.details["samples"][0]
        == writer.write(
            [ex.facts for ex in eval_examples(profile)[:1]],
            [ex.offer_level for ex in eval_examples(profile)[:1]],
        )[0]
    )
    text, n_new, seconds = writer.timed_write({"name": "Sam"}, 1)
    assert 0 < n_new <= 6 and seconds > 0
    with pytest.raises(WriterLoadError, match="writer.json is missing"):
        MessageWriter.load(tmp_path / "rm", profile.contract)


def test_bf16_only_where_the_hardware_has_it(monkeypatch):
    from retention.messaging import device

    monkeypatch.setattr(device, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert device.bf16_ok(True) is False  # emulated bf16 on AVX2 was ~18x slower
    monkeypatch.setattr(device, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert device.bf16_ok(True) is True
    assert device.bf16_ok(False) is False
