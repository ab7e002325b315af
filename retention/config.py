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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A profile could not be loaded; the message names the file and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------- data


class DatasetSpec(Strict):
    """Where one input table comes from and what its columns mean."""

    uri: str | None = Field(
        default=None, description="Local path, gs:// or https://; none means synthetic."
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


class DataConfig(Strict):
    customers: DatasetSpec
    offers: DatasetSpec
    journey: DatasetSpec
    orders: DatasetSpec
    messages: DatasetSpec

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
    """The calibrated gradient-boosted binary classifier shared by risk and accept."""

    n_estimators: int = Field(default=600, gt=0)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    max_depth: int = Field(default=4, ge=1, le=16)
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
    n_jobs: int = Field(default=2, ge=1)


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


class GatesConfig(Strict):
    """Exit criteria per model; defaults are the seed project's."""

    risk: ModelGates = Field(
        default_factory=lambda: ModelGates(min={"auc": 0.78}, max={"ece": 0.05})
    )
    accept: ModelGates = Field(
        default_factory=lambda: ModelGates(
            min={"auc": 0.70}, max={"ece": 0.05, "monotone_violations": 0}
        )
    )

    phase_health: ModelGates = Field(
        default_factory=lambda: ModelGates(min={"auc": 0.70, "min_phase_auc": 0.65})
    )

    ltv: ModelGates = Field(
        default_factory=lambda: ModelGates(
            min={"top10_capture": 0.25}, max={"abs_revenue_error": 0.3}
        )
    )

    def items(self) -> list[tuple[str, ModelGates]]:
        return [(name, getattr(self, name)) for name in type(self).model_fields]


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

    def resources_for(self, task: str) -> Resources:
        return self.resources.get(task, Resources())


class GcpConfig(Strict):
    project: str | None = None
    region: str = "us-central1"
    service_account: str | None = None
    schedule_cron: str = "0 3 * * 1"
    schedule_name: str = "retention-weekly"
    template_path: str = "retention-pipeline.yaml"


class Profile(Strict):
    name: str
    seed: int = 42
    model_store: str = "model-store"
    data: DataConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    risk: BinaryTrainerConfig = Field(default_factory=BinaryTrainerConfig)
    accept: BinaryTrainerConfig = Field(default_factory=BinaryTrainerConfig)
    phase_health: PhaseHealthConfig = Field(default_factory=PhaseHealthConfig)
    ltv: LtvConfig = Field(default_factory=LtvConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    gcp: GcpConfig = Field(default_factory=GcpConfig)


# ------------------------------------------------------------------------------------------- loading


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
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


def load_profile(
    name: str | None = None, *, config: str | Path | None = None, overrides: list[str] = ()
) -> Profile:
    """Load a profile by name (``configs/NAME.yaml``) or path, then apply ``key=value`` overrides."""
    if name and config:
        raise ConfigError("give a profile name or a config path, not both")
    path = Path(config) if config else profile_path(name or "local")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    raw = apply_overrides(raw, list(overrides))
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(path), exc)) from None
