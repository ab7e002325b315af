"""What each trainer returns: one typed result per model, written as its ``metrics.json``.

Gates read a metric by its field name (``risk: {min: {test_auc: 0.78}}``); a gate on a name that
is not a numeric field of the model's result is a configuration error naming the key. Fields a
trainer could not measure stay ``None`` and fail any gate that reads them. Details that are not
scalars (per-phase tables, histories, hyper-parameters) go under ``details``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ModelResult(BaseModel):
    """A trainer's scalar metrics; ``details`` holds the rest."""

    model_config = ConfigDict(extra="forbid")

    details: dict[str, Any] = Field(default_factory=dict)
    # The KFP Model artifact's ``framework`` metadata.
    framework: ClassVar[str] = ""

    @field_validator("*", mode="before")
    @classmethod
    def _nan_is_not_measured(cls, v: Any) -> Any:
        # NaN (an empty bootstrap, no usable fold) means "not measured": None, which fails any
        # gate that reads it, and which JSON can carry.
        return None if isinstance(v, float) and math.isnan(v) else v

    @classmethod
    def text_fields(cls) -> tuple[str, ...]:
        """The string fields (chosen model family, calibrator, best baseline)."""
        out = []
        for name, f in cls.model_fields.items():
            kinds = get_args(f.annotation) or (f.annotation,)
            if str in kinds:
                out.append(name)
        return tuple(out)

    @classmethod
    def numeric_fields(cls) -> tuple[str, ...]:
        out = []
        for name, f in cls.model_fields.items():
            kinds = get_args(f.annotation) or (f.annotation,)
            if any(k in (int, float) for k in kinds):
                out.append(name)
        return tuple(out)

    def scalars(self) -> dict[str, float]:
        """Every measured numeric field, for KFP ``Metrics`` and the report."""
        return {
            k: float(v)
            for k in self.numeric_fields()
            if (v := getattr(self, k)) is not None and not isinstance(v, bool)
        }

    def value(self, field: str) -> float | None:
        if field not in type(self).numeric_fields():
            raise KeyError(f"{type(self).__name__} has no numeric field {field!r}")
        v = getattr(self, field)
        return None if v is None else float(v)

    def save(self, path: str | Path) -> None:
        from retention.fileio import write_json

        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path):
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))


class BinaryResult(ModelResult):
    """The calibrated binary classifier (risk and accept).

    ``details``: ``hyperparameters`` (after the search), ``calibration_valid_log_loss`` (per
    calibrator), ``cv_fold_auc``.
    """

    framework: ClassVar[str] = "xgboost"
    # What the labels 0 and 1 mean (the confusion matrix's rows in the KFP UI).
    class_names: ClassVar[tuple[str, str]] = ("negative", "positive")
    test_auc: float
    test_auc_ci_low: float | None = None
    test_auc_ci_high: float | None = None
    test_ece: float
    test_brier: float | None = None
    test_log_loss: float | None = None
    test_positive_rate: float | None = None
    test_rows: int | None = None
    threshold: float | None = None
    test_expected_cost_per_row: float | None = None
    best_iteration: int | None = None
    calibration: str | None = None
    cv_auc: float | None = None
    cv_auc_std: float | None = None
    oof_ece: float | None = None
    oof_brier: float | None = None
    oof_log_loss: float | None = None


class RiskResult(BinaryResult):
    class_names: ClassVar[tuple[str, str]] = ("stays", "churns")


class AcceptResult(BinaryResult):
    """``details`` also: ``mean_accept_by_level`` (mean calibrated P(accept) per offer level)."""

    class_names: ClassVar[tuple[str, str]] = ("declines", "accepts")
    monotone_violations: int | None = None


class PhaseHealthResult(ModelResult):
    """``details``: ``phases`` (per phase: test AUC and ECE, healthy share, drivers, summary) and
    ``phase_order`` (the journey's order)."""

    framework: ClassVar[str] = "lightgbm"
    test_auc: float  # mean over the phases
    test_min_phase_auc: float
    test_mean_overall_health: float | None = None


class LtvResult(ModelResult):
    """``details``: ``valid_tweedie_deviance`` (per model family), ``churn_fold_auc``."""

    framework: ClassVar[str] = "ltv"
    chosen: str | None = None  # the model family selected on validation
    cutoff: str | None = None
    test_customers: int | None = None
    test_revenue_error: float | None = None
    test_abs_revenue_error: float | None = None
    test_top10_capture: float | None = None
    test_top10_capture_best_possible: float | None = None
    test_interval_coverage: float | None = None
    baseline_revenue_error: float | None = None
    baseline_top10_capture: float | None = None
    churn_cv_auc: float | None = None
    churn_rate: float | None = None


class SegmentsResult(ModelResult):
    """``details``: ``segments`` (per segment: size, revenue share, mean CLV, churn rate, RFM
    profile) and ``silhouette_by_k``."""

    framework: ClassVar[str] = "kmeans-rfm"
    silhouette: float | None = None
    k: int | None = None
    min_segment_share: float | None = None
    customers: int | None = None
    churn_rate: float | None = None
    total_clv: float | None = None
    cutoff: str | None = None
    most_revenue: str | None = None  # the segment with the largest revenue share


class NarrativesResult(ModelResult):
    """``details``: ``narratives`` (per subject: the text, its source and why a model draft was
    rejected)."""

    framework: ClassVar[str] = "grounded-text"
    narratives: int | None = None
    llm_drafts: int | None = None
    # Share of subjects whose language-model text passed the checker (the rest use the template).
    acceptance_share: float | None = None
    # Released narratives that fail the checker: 0 by construction (the template is grounded).
    ungrounded_released: int | None = None
    generation_s: float | None = None
    model_source: str | None = None


class UpliftResult(ModelResult):
    """``details``: ``params`` (LightGBM settings), ``features``."""

    framework: ClassVar[str] = "lightgbm-two-model"
    test_qini: float | None = None  # normalised Qini AUC on the held-out campaign rows
    test_rows: int | None = None
    train_rows: int | None = None
    mean_uplift: float | None = None  # estimated, over the training rows
    observed_uplift: float | None = None  # treated - control response rate, held out
    test_no_effect_share: float | None = None  # held-out rows whose offer effect is 0
    test_top_effect_share: float | None = None  # ... at the cap
    fit_s: float | None = None


class PolicyResult(ModelResult):
    """``details``: ``lambdas`` (final Lagrange multipliers), ``heuristics`` (the tuned
    rules' knobs), ``net_by_policy`` (held-out mean net revenue retained of each policy)."""

    framework: ClassVar[str] = "torchscript"
    # The released policy's (PPO, or the heuristic released in its place) gain over the
    # strongest heuristic; PPO's own is beside it.
    uplift_vs_best_baseline: float | None = None
    ppo_uplift_vs_best_baseline: float | None = None
    released: str | None = None
    released_reason: str | None = None
    best_baseline: str | None = None
    # Paired 95 % interval of (released - strongest heuristic) per held-out episode: exactly
    # [0, 0] when the released policy is that heuristic. The gate: its low end >= 0.
    released_vs_best_baseline_low: float | None = None
    released_vs_best_baseline_high: float | None = None
    lagrangian_mu: float | None = None
    # Off-policy estimates on the profile's decision log (decision.ope), when it names one.
    ope_decisions: int | None = None
    ope_logged_value: float | None = None
    ope_dr_value: float | None = None
    ope_gain_low: float | None = None
    ope_gain_high: float | None = None
    ope_ess: float | None = None
    net_revenue_retained: float | None = None
    best_baseline_net_revenue_retained: float | None = None
    # PPO's own paired interval against the strongest heuristic.
    difference_vs_best_baseline_low: float | None = None
    difference_vs_best_baseline_high: float | None = None
    sampled_net_revenue_retained: float | None = None
    net_revenue_retention: float | None = None
    roi: float | None = None
    contact_rate: float | None = None
    budget_used: float | None = None
    budget_overshoot: float | None = None
    fatigue_violations: float | None = None
    cooldown_violations: float | None = None
    blocked_rate: float | None = None
    # The same network without the shield: what it would do on its own.
    unshielded_budget_overshoot: float | None = None
    unshielded_budget_overshoot_mean: float | None = None
    unshielded_fatigue_violations: float | None = None
    unshielded_cooldown_violations: float | None = None
    unshielded_net_revenue_retained: float | None = None
    eval_episodes: int | None = None
    eval_customers: int | None = None
    eval_unique_customers: int | None = None
    train_customers: int | None = None
    valid_customers: int | None = None
    env_steps: int | None = None
    env_steps_per_s: float | None = None
    train_wall_s: float | None = None
    export_max_abs_diff: float | None = None
    selected_iteration: int | None = None
    warm_start_loss: float | None = None


class SftResult(ModelResult):
    """``details``: ``violations_by_rule`` and ``samples`` (held-out messages) when evaluated."""

    framework: ClassVar[str] = "peft-lora"
    train_loss: float | None = None
    steps: int | None = None
    train_s: float | None = None
    s_per_step: float | None = None
    eval_prompts: int | None = None
    generation_s: float | None = None
    shield_pass_rate: float | None = None
    distinct_2: float | None = None


class RewardResult(ModelResult):
    """``details``: ``accuracy_by_rule`` (held-out pairwise accuracy per flaw)."""

    framework: ClassVar[str] = "peft-lora-seq-cls"
    train_loss: float | None = None
    steps: int | None = None
    train_s: float | None = None
    s_per_step: float | None = None
    eval_pairs: int | None = None
    accuracy: float | None = None
    mean_margin: float | None = None


class WriterResult(ModelResult):
    """The released writer (champion/challenger: ``ppo``, ``sft`` or ``template``) and why.

    Judged on ``eval_prompts`` held-out prompts from other seeds. The gated fields are the
    released writer's: ``pass_rate_as_written`` (messages the shield passes unchanged; when the
    template is released, the better language model's, which missed the bar),
    ``violation_rate_after_shield``, ``distinct_2``, ``mean_kl_to_reference``. Win rates are PPO's
    over SFT (ties count half) with their intervals. ``details``: ``samples`` (held-out messages
    of the released writer) and ``history`` (one row per PPO update).
    """

    framework: ClassVar[str] = "peft-lora"
    released: str | None = None
    release_reason: str | None = None
    eval_prompts: int | None = None
    updates: int | None = None
    train_s: float | None = None
    s_per_update: float | None = None
    final_kl_coef: float | None = None
    win_rate_rm: float | None = None
    win_rate_rm_low: float | None = None
    win_rate_rm_high: float | None = None
    win_rate_checklist: float | None = None
    win_rate_checklist_low: float | None = None
    win_rate_checklist_high: float | None = None
    pass_rate_as_written: float | None = None
    ppo_pass_rate_as_written: float | None = None
    sft_pass_rate_as_written: float | None = None
    distinct_2: float | None = None
    # Distinct-2 falls with the number of messages; the reference messages of the same prompts
    # are its yardstick (one message repeated scores ~0.1 of them).
    reference_distinct_2: float | None = None
    distinct_2_vs_reference: float | None = None
    ppo_distinct_2: float | None = None
    sft_distinct_2: float | None = None
    violation_rate_after_shield: float | None = None
    ppo_rm_score: float | None = None
    sft_rm_score: float | None = None
    mean_kl_to_reference: float | None = None
    ppo_mean_kl_to_reference: float | None = None
