"""train-phase-health: one LightGBM per journey phase, per-phase and overall health, SHAP drivers.

Each phase model predicts P(healthy) from that phase's touchpoint and operational metrics. A
customer's overall health is the mean of their six phase scores. Drivers are ranked by mean |SHAP|
(LightGBM's exact TreeSHAP, ``pred_contrib``); each phase gets a short summary whose every number is
computed from the data: the healthy share, the test AUC, and the health rate in the bottom versus
top quartile of the strongest driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retention.config import Profile
from retention.data.split import read_split
from retention.fileio import atomic_dir, write_json
from retention.models import metrics as M
from retention.models.outputs import METRICS_FILE, MODEL_DIR, SHAP_FILE
from retention.models.preprocess import RowEncoder, TabularPreprocessor
from retention.results import PhaseHealthResult

PHASES = ("Learn", "Buy", "Get", "Use", "Pay", "Renew")


def _features(df: pd.DataFrame, target: str, id_column: str | None) -> list[str]:
    skip = {target, id_column, "phase"}
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]


def _quartile_rates(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    lo, hi = x.quantile([0.25, 0.75])
    return float(y[x <= lo].mean()), float(y[x >= hi].mean())


def summarise_phase(phase: str, y_all: pd.Series, x_all: pd.DataFrame, auc: float, drivers) -> str:
    top = drivers[0]["feature"]
    low, high = _quartile_rates(x_all[top], y_all)
    direction = "more" if high >= low else "less"
    return (
        f"{phase}: {y_all.mean():.0%} of customers are healthy (test AUC {auc:.2f}). "
        f"The strongest driver is {top}: {low:.0%} are healthy in its lowest quartile versus "
        f"{high:.0%} in its highest, so higher {top} goes with {direction} health. "
        f"Next: {', '.join(d['feature'] for d in drivers[1:3])}."
    )


def train_phase_health(
    profile: Profile, split_dir: str | Path, out_dir: str | Path
) -> PhaseHealthResult:
    import lightgbm as lgb

    spec, cfg = profile.data.journey, profile.phase_health
    target = spec.target or "health"
    parts = {p: read_split(split_dir, "journey", p) for p in ("train", "valid", "test")}
    feats = _features(parts["train"], target, spec.id_column)
    phases: dict[str, Any] = {}
    shap_means: dict[str, np.ndarray] = {}
    test_scores = []
    with atomic_dir(Path(out_dir) / MODEL_DIR) as tmp:
        for phase in PHASES:
            d = {k: v[v["phase"] == phase] for k, v in parts.items()}
            if min(len(v) for v in d.values()) == 0:
                raise ValueError(f"journey data has no rows for phase '{phase}' in some split")
            model = lgb.LGBMClassifier(
                n_estimators=cfg.n_estimators,
                learning_rate=cfg.learning_rate,
                num_leaves=cfg.num_leaves,
                min_child_samples=cfg.min_child_samples,
                subsample=0.8,
                subsample_freq=1,
                colsample_bytree=0.8,
                random_state=profile.seed,
                n_jobs=cfg.n_jobs,
                verbose=-1,
            )
            model.fit(
                d["train"][feats],
                d["train"][target],
                eval_X=(d["valid"][feats],),
                eval_y=(d["valid"][target],),
                callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
            )
            p = model.predict_proba(d["test"][feats])[:, 1]
            y = d["test"][target].to_numpy()
            m = M.binary_metrics(y, p)
            contrib = model.booster_.predict(d["test"][feats], pred_contrib=True)[:, :-1]
            mean_abs = np.abs(contrib).mean(axis=0)
            shap_means[phase] = mean_abs
            order = np.argsort(-mean_abs)
            drivers = [
                {"feature": feats[j], "mean_abs_shap": round(float(mean_abs[j]), 4)}
                for j in order[:3]
            ]
            whole = pd.concat(d.values())
            phases[phase] = {
                "test_auc": m["auc"],
                "test_ece": m["ece"],
                "healthy_share": float(whole[target].mean()),
                "drivers": drivers,
                "summary": summarise_phase(phase, whole[target], whole[feats], m["auc"], drivers),
            }
            model.booster_.save_model(str(tmp / f"{phase}.txt"))
            test_scores.append(pd.Series(p, index=d["test"][spec.id_column].to_numpy(), name=phase))
        write_json(tmp / "features.json", {"features": feats, "phases": list(PHASES)})
    overall = pd.concat(test_scores, axis=1).mean(axis=1)
    result = PhaseHealthResult(
        test_auc=float(np.mean([v["test_auc"] for v in phases.values()])),
        test_min_phase_auc=float(min(v["test_auc"] for v in phases.values())),
        test_mean_overall_health=float(overall.mean()),
        # JSON writers sort keys; the journey has an order.
        details={"phases": phases, "phase_order": list(PHASES)},
    )
    result.save(Path(out_dir) / METRICS_FILE)
    write_json(
        Path(out_dir) / SHAP_FILE,
        {
            "features": feats,
            "phases": list(PHASES),
            "mean_abs_shap": {k: v.tolist() for k, v in shap_means.items()},
        },
    )
    return result


def load_phase_models(model_dir: str | Path):
    """{phase: lightgbm.Booster} from the saved text models (no pickles)."""
    import json

    import lightgbm as lgb

    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "features.json").read_text())
    return meta["features"], {
        ph: lgb.Booster(model_file=str(model_dir / f"{ph}.txt")) for ph in meta["phases"]
    }


@dataclass(frozen=True)
class PhaseScore:
    phase: str
    health: float  # P(healthy) in this phase
    missing_features: tuple[str, ...]
    unrecognised_features: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "health": self.health,
            "missing_features": list(self.missing_features),
            "unrecognised_features": list(self.unrecognised_features),
        }


class UnknownPhase(ValueError):
    def __init__(self, row: int, phase: Any, phases: list[str]):
        super().__init__(f"instances[{row}].phase: {phase!r} is not one of {sorted(phases)}")
        self.row = row


class PhaseHealthModels:
    """The saved phase models, loaded once for scoring rows of metrics with their phase.

    Rows are read by ``RowEncoder`` (the tabular models' rules for numbers; float64, as the
    models were trained on float64 frames), and the rows of one phase are one prediction on
    ``num_threads`` threads (1 when serving).
    """

    def __init__(self, model_dir: str | Path, num_threads: int = 1):
        self.features, self.boosters = load_phase_models(model_dir)
        self.num_threads = num_threads
        self.encoder = RowEncoder(TabularPreprocessor(numeric=list(self.features)), dtype=float)

    @property
    def phases(self) -> list[str]:
        return list(self.boosters)

    def score(self, rows: list[dict[str, Any]]) -> list[PhaseScore]:
        """One score per row, in order; ``UnknownPhase`` names a row whose phase has no model."""
        by_phase: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            phase = r.get("phase") if isinstance(r, dict) else None
            if not isinstance(phase, str) or phase not in self.boosters:
                raise UnknownPhase(i, phase, self.phases)
            by_phase.setdefault(phase, []).append(i)
        enc = self.encoder.encode(rows)
        health = np.empty(len(rows))
        for phase, idx in by_phase.items():
            health[idx] = self.boosters[phase].predict(enc.x[idx], num_threads=self.num_threads)
        return [
            PhaseScore(r["phase"], float(health[i]), enc.missing[i], enc.unrecognised[i])
            for i, r in enumerate(rows)
        ]


def score_customer(model_dir: str | Path, rows: pd.DataFrame) -> dict[str, float]:
    """Phase and overall health for one customer's journey rows (one row per phase)."""
    scored = PhaseHealthModels(model_dir).score(rows.to_dict("records"))
    scores = {s.phase: s.health for s in scored}
    scores["overall"] = float(np.mean(list(scores.values())))
    return scores
