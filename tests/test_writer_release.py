"""The released writer: a template release serves the template, and the gates judge the release."""

import asyncio
import json

import pytest

from retention.config import load_profile
from retention.evaluation.gates import evaluate
from retention.messaging.shield import check_message, template_message
from retention.results import WriterResult


def _release(folder, released: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"stage": "ppo", "base": {"source": "tiny"}, "released": released, "reason": "test"}
    (folder / "writer.json").write_text(json.dumps(meta))


def test_a_template_release_serves_the_template_with_no_model(tmp_path):
    from serving.predictors import WriterPredictor

    profile = load_profile("tiny", overrides=[f"writer.model.cache_dir={tmp_path / 'cache'}"])
    _release(tmp_path / "writer", "template")
    pred = WriterPredictor.from_profile(profile, tmp_path / "writer")
    assert pred.load() and pred.writer.model is None and pred.writer.released == "template"
    facts = {"name": "Сергей", "plan": "Pro", "tenure": 4}
    out = asyncio.run(pred.predict({"instances": [{"facts": facts, "offer_level": 2}]}))
    message = out["predictions"][0]["message"]
    assert message == template_message(facts, 2, profile.contract)
    assert check_message(message, facts, 2, profile.contract).passed
    assert not (tmp_path / "cache").exists()  # no base model was built or converted


def _result(**kw) -> WriterResult:
    base = {
        "released": "sft",
        "pass_rate_as_written": 0.97,
        "distinct_2_vs_reference": 0.95,
        "violation_rate_after_shield": 0.0,
        "mean_kl_to_reference": 0.0,
    }
    return WriterResult(**{**base, **kw})


@pytest.mark.parametrize(
    ("result", "passed"),
    [
        (_result(), True),
        # The template released in the LLM's place: its pass rate is the better LLM's, which
        # missed the bar, so the local gates fail instead of shipping the template as a writer.
        (_result(released="template", pass_rate_as_written=0.6), False),
        (_result(pass_rate_as_written=0.94), False),
        (_result(distinct_2_vs_reference=0.3), False),  # one message repeated
        (_result(released="ppo", mean_kl_to_reference=25.0), False),
    ],
)
def test_the_local_gates_judge_the_released_writer_without_tolerance(result, passed):
    gates = load_profile("local").gates
    assert gates["rm"].min == {"accuracy": 0.95}
    writer = [g for g in evaluate({"writer": gates["writer"]}, {"writer": result})]
    assert all(g.passed for g in writer) is passed, [g.message for g in writer]


def test_the_tiny_gates_only_hold_the_shields_guarantee():
    # Its random Llama releases the template (tests/test_ppo_text.py): nothing else to judge.
    gates = load_profile("tiny").gates["writer"]
    assert gates.min == {} and gates.max == {"violation_rate_after_shield": 0.0}
