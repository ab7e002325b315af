"""Grounded narratives: the checker, the template fallback and the acceptance share."""

import pytest

from retention import catalogue
from retention.config import NarrativesConfig
from retention.insights.facts import phase_sheet, segment_sheet
from retention.insights.narratives import ground, tidy
from retention.results import NarrativesResult

SEGMENT = {
    "name": "Champions",
    "customers": 433,
    "share": 0.1837,
    "revenue_share": 0.5012,
    "mean_clv": 226.192,
    "churn_rate": 0.471,
    "mean_recency_days": 54.01,
    "mean_orders": 8.217,
    "mean_order_value": 37.6,
}
PHASE = {
    "healthy_share": 0.69,
    "test_auc": 0.8312,
    "drivers": [
        {"feature": "metric_1", "mean_abs_shap": 0.4712},
        {"feature": "operational_metric", "mean_abs_shap": 0.35},
    ],
}


def test_templates_pass_their_own_checker():
    for sheet in (segment_sheet(SEGMENT, 90), phase_sheet("Learn", PHASE)):
        assert sheet.check(sheet.template, 2, 3).ok, sheet.check(sheet.template).problems


def test_the_checker_rejects_invented_numbers_names_and_identifiers():
    s = segment_sheet(SEGMENT, 90)
    good = (
        "Champions are 433 customers, 18% of the base, and bring 50% of revenue. "
        "Their mean 12-month value is 226.19, and 47% bought nothing in 90 days."
    )
    assert s.check(good, 2, 3).ok, s.check(good).problems
    for bad, problem in (
        (good.replace("433", "434"), "number '434'"),
        (good.replace("50%", "55%"), "number '55%'"),
        (good.replace("226.19", "226.5"), "number '226.5'"),
        (good + " Tableau helps.", "name 'Tableau'"),
        (good.replace("Their", "Their MonthlyCharges and"), "name 'MonthlyCharges'"),
        (good.replace("Champions are", "They are"), "does not name its subject"),
        ("Champions are great. They are loyal.", "uses no figure"),
        ("Champions are 433 customers.", "1 sentences, expected 2-3"),
    ):
        verdict = s.check(bad, 2, 3)
        assert not verdict.ok and any(problem in p for p in verdict.problems), (bad, verdict)
    loop = "Champions buy and buy and buy and buy and buy. They are 433 customers."
    assert "repeats itself" in s.check(loop, 2, 3).problems


def test_rounding_follows_the_precision_the_text_shows():
    p = phase_sheet("Learn", PHASE)
    assert p.check("In Learn, 69% are healthy. The AUC is 0.83 and metric_1 leads.", 2, 3).ok
    assert p.check("In Learn, 0.69 are healthy. The AUC is 0.8 and metric_1 leads.", 2, 3).ok
    assert not p.check("In Learn, 70% are healthy. The AUC is 0.83.", 2, 3).ok


def test_tidy_drops_markup_and_a_cut_off_sentence():
    assert tidy('"**Champions** are 433.\n\nThey buy. And then the', 3) == (
        "Champions are 433. They buy."
    )


class Scripted:
    """Drafts written in advance, one list per round, in the order of the prompts asked."""

    source = "scripted"

    def __init__(self, rounds):
        self.rounds = list(rounds)

    def generate(self, prompts, max_new_tokens, sample):
        drafts = self.rounds.pop(0)
        assert len(drafts) == len(prompts)
        return drafts


def test_an_accepted_draft_is_released_and_a_rejected_one_falls_back_to_the_template():
    sheets = [segment_sheet(SEGMENT, 90), phase_sheet("Learn", PHASE)]
    good = (
        "Champions are 433 customers and bring 50% of revenue. Each is worth 226.19 over 12 months."
    )
    invented = "In Learn, 99% of customers are healthy. It is driven by price."
    cfg = NarrativesConfig(attempts=2)
    out = ground(sheets, cfg, Scripted([[good, invented], [invented]]))
    assert [x["source"] for x in out] == ["llm", "template"]
    assert out[0]["text"] == good and out[0]["attempt"] == 1
    assert out[1]["text"] == sheets[1].template and len(out[1]["rejected"]) == 2
    assert "number '99%' is not in the fact sheet" in out[1]["rejected"][0]["problems"]
    assert all(x["grounded"] for x in out)


def test_the_step_on_tiny_gates_what_it_releases(insights_release, tmp_path):
    from retention.fileio import read_json
    from retention.insights.narratives import NARRATIVES_FILE, train_narratives

    spec = catalogue.spec("narratives")
    assert spec.result is NarrativesResult and spec.needs == ("phase_health", "segments")
    profile, splits = insights_release
    trained = splits.parent / "trained"
    # The tiny random Llama writes noise: every draft is rejected, every subject templated.
    r = train_narratives(profile, trained / "phase_health", trained / "segments", tmp_path)
    assert r.model_source == "tiny" and r.narratives == 6 + len(
        read_json(trained / "segments" / "model" / "segments.json")["segments"]
    )
    assert r.acceptance_share == 0.0 and r.ungrounded_released == 0
    assert r.llm_drafts == r.narratives * profile.insights.narratives.attempts
    saved = read_json(tmp_path / "model" / NARRATIVES_FILE)
    assert {n["source"] for n in saved["narratives"]} == {"template"}
    assert all(n["rejected"] for n in saved["narratives"])
    assert saved["phase_order"] == ["Learn", "Buy", "Get", "Use", "Pay", "Renew"]
    assert profile.gates["narratives"].max == {"ungrounded_released": 0}
    with pytest.raises(KeyError):
        r.value("no_such_metric")
