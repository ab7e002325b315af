"""retention.messaging.sft on the tiny random Llama: the real trl path, in seconds."""

import json

import pytest

pytest.importorskip("trl")

from retention.config import load_profile  # noqa: E402
from retention.messaging.sft import distinct_2, judge, train_sft  # noqa: E402
from retention.models.outputs import METRICS_FILE, MODEL_DIR  # noqa: E402
from retention.results import SftResult  # noqa: E402


def test_distinct_2_separates_variety_from_collapse():
    assert distinct_2(["a b c", "d e f"]) == 1.0
    assert distinct_2(["a b", "a b", "a b"]) == pytest.approx(1 / 3)


def test_sft_trains_a_lora_adapter_and_judges_held_out_messages(tmp_path):
    profile = load_profile(
        "tiny",
        overrides=[
            "writer.sft.steps=3",
            "writer.sft.examples=24",
            "writer.sft.eval_prompts=4",
            "writer.sft.max_new_tokens=8",
            f"writer.model.cache_dir={tmp_path / 'cache'}",
        ],
    )
    m = train_sft(profile, tmp_path / "sft")
    assert isinstance(m, SftResult) and m.steps == 3 and m.train_loss > 0
    assert (tmp_path / "sft" / MODEL_DIR / "adapter_config.json").is_file()
    adapter = json.loads((tmp_path / "sft" / MODEL_DIR / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32
    saved = SftResult.load(tmp_path / "sft" / METRICS_FILE)
    assert saved == m and m.eval_prompts == 4 and len(m.details["samples"]) == 4
    # A random model writes gibberish: the shield must say so, by rule.
    assert m.shield_pass_rate == 0.0 and "missing_name" in m.details["violations_by_rule"]


def test_judge_counts_violations_by_rule():
    from retention.contract import ContactContract
    from retention.messaging.data import examples

    items = examples(2, 0, ContactContract())
    res = judge([items[0].message, "Hi!"], items)
    assert res["shield_pass_rate"] == 0.5
    assert res["violations_by_rule"]["length"] == 1
