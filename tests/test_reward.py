"""retention.messaging.reward on the tiny random Llama: RewardTrainer, scorer format, accuracy."""

import numpy as np
import pytest

pytest.importorskip("trl")

from retention.config import WriterModelConfig, load_profile  # noqa: E402
from retention.contract import ContactContract  # noqa: E402
from retention.messaging.base_model import load_base  # noqa: E402
from retention.messaging.data import CORRUPTIONS, examples  # noqa: E402
from retention.messaging.reward import RewardScorer, train_rm  # noqa: E402
from retention.results import RewardResult  # noqa: E402


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    cfg = WriterModelConfig(source="tiny", cache_dir=str(tmp_path_factory.mktemp("models")))
    model, tok = load_base(cfg, for_sequence_classification=True)
    return RewardScorer(model, tok)


def test_scorer_text_is_the_chat_template_with_the_message_as_assistant_turn(scorer):
    ex = examples(1, 0, ContactContract())[0]
    text = scorer.text(ex.prompt(), ex.message)
    assert text.rstrip().endswith(ex.message + "<|im_end|>")
    assert "<|im_start|>assistant" in text and "<|im_start|>system" in text


def test_padding_in_a_batch_does_not_change_a_score(scorer):
    items = examples(3, 1, ContactContract())
    prompts = [e.prompt() for e in items]
    msgs = [items[0].message, items[1].message + " Thanks again for everything.", "Hi."]
    together = scorer.score(prompts, msgs)
    alone = np.concatenate([scorer.score([p], [m]) for p, m in zip(prompts, msgs, strict=True)])
    assert np.allclose(together, alone, atol=1e-4)
    assert scorer.tok.padding_side == "left"  # restored for generation


def test_rm_trains_and_reports_held_out_accuracy_by_rule(tmp_path):
    profile = load_profile(
        "tiny",
        overrides=[
            "writer.rm.steps=2",
            "writer.rm.pairs=16",
            "writer.rm.eval_pairs=12",
            f"writer.model.cache_dir={tmp_path / 'cache'}",
        ],
    )
    m = train_rm(profile, tmp_path / "rm")
    assert isinstance(m, RewardResult) and 0.0 <= m.accuracy <= 1.0 and m.eval_pairs == 12
    assert RewardResult.load(tmp_path / "rm" / "metrics.json") == m
    # Every pair's rule is one of the corruptions (the checklist's among them), too_short
    # counted under length.
    assert set(m.details["accuracy_by_rule"]) <= (set(CORRUPTIONS) - {"too_short"}) | {"length"}
    assert (tmp_path / "rm" / "model" / "adapter_config.json").is_file()
