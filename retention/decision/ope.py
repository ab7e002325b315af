"""Off-policy evaluation of a contact policy from a logged decision log with propensities.

Given what a logging policy did (per decision: features, the action taken, that action's logging
propensity, the observed reward) and what a target policy would do (its action probabilities per
logged row), estimate the target's mean reward per decision three ways:

- IPS: mean of w·r with w = π(a|x) / μ(a|x); unbiased, high variance.
- SNIPS: Σ w·r / Σ w; slightly biased, much steadier when weights are large.
- DR: mean of q̂_π(x) + w·(r − q̂(x, a)); unbiased when either the propensities or the reward
  model are right, and lower variance than IPS when q̂ is decent.

Weights can be clipped at ``max_weight`` (trading a known downward bias for variance); every
estimate reports the share of rows clipped and the effective sample size (Σw)² / Σw² of the
weights it used. Intervals are percentile bootstraps over logged rows (seeded); the reward model
of DR is held fixed within the bootstrap, as it is cross-fitted on the whole log.

The maintained OPE libraries need an older Python; this module is deliberately small and
depends on numpy only (pandas for :func:`from_export`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from retention.contract import N_LEVELS

# Action coding for the contact policy: 0 is "no contact", 1 + level is "contact with offer
# level `level`" (the follow-up wait is not part of the action OPE evaluates).
N_ACTIONS = 1 + N_LEVELS

TargetPolicy = np.ndarray | Callable[[np.ndarray], np.ndarray]

#: Columns :func:`from_export` reads from ``ContactLedger.export_decisions`` output.
EXPORT_NEEDS = ("request_id", "proposed_contact", "proposed_offer_level", "propensity")
#: Columns it reads from the outcomes table.
OUTCOME_NEEDS = ("request_id", "reward")


# ------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class LoggedBandit:
    """A logged contextual-bandit dataset, validated on construction.

    ``propensities[i]`` is the logging policy's probability of ``actions[i]`` at row ``i``;
    ``features`` (rows × columns, optional) is what a callable target policy and the default
    reward model see. ``request_ids`` optionally names the rows (kept by :func:`from_export`).
    """

    actions: np.ndarray
    propensities: np.ndarray
    rewards: np.ndarray
    n_actions: int
    features: np.ndarray | None = None
    request_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        actions = np.asarray(self.actions)
        props = np.asarray(self.propensities, dtype=float)
        rewards = np.asarray(self.rewards, dtype=float)
        if not isinstance(self.n_actions, int | np.integer) or self.n_actions < 1:
            raise ValueError(f"n_actions: expected an integer >= 1, got {self.n_actions!r}")
        for name, arr in (("actions", actions), ("propensities", props), ("rewards", rewards)):
            if arr.ndim != 1:
                raise ValueError(f"{name}: expected a 1-d array, got shape {arr.shape}")
        n = len(actions)
        if n == 0:
            raise ValueError("actions: the log is empty")
        for name, arr in (("propensities", props), ("rewards", rewards)):
            if len(arr) != n:
                raise ValueError(f"{name}: length {len(arr)} does not match actions' {n}")
        if not np.issubdtype(actions.dtype, np.integer):
            if not np.all(np.isfinite(actions.astype(float))) or np.any(actions % 1 != 0):
                raise ValueError(f"actions: expected integers, got dtype {actions.dtype}")
            actions = actions.astype(np.int64)
        bad = np.flatnonzero((actions < 0) | (actions >= self.n_actions))
        if bad.size:
            raise ValueError(
                f"actions: expected 0..{self.n_actions - 1}, got {actions[bad[0]]!r} at row "
                f"{bad[0]} ({bad.size} rows)"
            )
        bad = np.flatnonzero(~((props > 0) & (props <= 1)))  # NaN fails too
        if bad.size:
            raise ValueError(
                f"propensities: expected values in (0, 1], got {props[bad[0]]!r} at row "
                f"{bad[0]} ({bad.size} rows)"
            )
        bad = np.flatnonzero(~np.isfinite(rewards))
        if bad.size:
            raise ValueError(
                f"rewards: expected finite values, got {rewards[bad[0]]!r} at row {bad[0]} "
                f"({bad.size} rows)"
            )
        features = self.features
        if features is not None:
            features = np.asarray(features, dtype=float)
            if features.ndim == 1:
                features = features[:, None]
            if features.ndim != 2 or len(features) != n:
                raise ValueError(
                    f"features: expected {n} rows × columns, got shape {np.shape(self.features)}"
                )
            if not np.all(np.isfinite(features)):
                row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
                raise ValueError(f"features: non-finite value at row {row}")
        if self.request_ids is not None and len(self.request_ids) != n:
            raise ValueError(
                f"request_ids: length {len(self.request_ids)} does not match actions' {n}"
            )
        object.__setattr__(self, "actions", actions.astype(np.int64))
        object.__setattr__(self, "propensities", props)
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "features", features)

    def __len__(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class RewardModel:
    """A reward model's predictions on the logged rows, for DR: ``logged[i]`` = q̂(x_i, a_i),
    ``target[i]`` = Σ_a π(a|x_i) q̂(x_i, a). Any regressor can produce these."""

    logged: np.ndarray
    target: np.ndarray


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Estimate:
    """A value estimate of the target policy (mean reward per logged decision) with its
    ``level`` percentile-bootstrap interval [low, high]; ``ess`` and ``clipped_share`` describe
    the (clipped) importance weights it used."""

    value: float
    low: float
    high: float
    ess: float
    clipped_share: float
    n: int
    level: float
    max_weight: float | None

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high


@dataclass(frozen=True)
class IPSEstimate(Estimate):
    """Inverse propensity scoring: mean of w·r."""


@dataclass(frozen=True)
class SNIPSEstimate(Estimate):
    """Self-normalised IPS: Σ w·r / Σ w."""


@dataclass(frozen=True)
class DREstimate(Estimate):
    """Doubly robust; ``direct`` is the reward model's own estimate (mean of q̂_π)."""

    direct: float = float("nan")


@dataclass(frozen=True)
class OPEReport:
    ips: IPSEstimate
    snips: SNIPSEstimate
    dr: DREstimate


# --------------------------------------------------------------------------------- estimators


def target_matrix(data: LoggedBandit, target: TargetPolicy) -> np.ndarray:
    """The target's action probabilities per logged row (rows × n_actions), validated.

    ``target`` is that matrix, or a callable mapping ``data.features`` to it."""
    if callable(target):
        if data.features is None:
            raise ValueError("target: a callable target policy needs data.features")
        probs = np.asarray(target(data.features), dtype=float)
    else:
        probs = np.asarray(target, dtype=float)
    want = (len(data), data.n_actions)
    if probs.shape != want:
        raise ValueError(f"target: expected probabilities of shape {want}, got {probs.shape}")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError("target: probabilities must be finite and in [0, 1]")
    sums = probs.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > 1e-6)
    if bad.size:
        raise ValueError(f"target: row {bad[0]} sums to {sums[bad[0]]:.6g}, expected 1")
    return probs


def weights(
    data: LoggedBandit, probs: np.ndarray, max_weight: float | None = None
) -> tuple[np.ndarray, float]:
    """Importance weights π(a|x)/μ(a|x) of the logged actions, clipped at ``max_weight``;
    returns them and the share of rows that were clipped."""
    _check_max_weight(max_weight)
    w = probs[np.arange(len(data)), data.actions] / data.propensities
    if max_weight is None:
        return w, 0.0
    clipped = w > max_weight
    return np.minimum(w, max_weight), float(clipped.mean())


def effective_sample_size(w: np.ndarray) -> float:
    """(Σw)² / Σw²: how many equally weighted rows the weighted log is worth."""
    sq = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sq if sq > 0 else 0.0


def ips(
    data: LoggedBandit,
    target: TargetPolicy,
    *,
    max_weight: float | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> IPSEstimate:
    probs = target_matrix(data, target)
    w, clipped = weights(data, probs, max_weight)
    terms = w * data.rewards
    low, high = _boot_mean(terms, n_boot, level, seed)
    return IPSEstimate(
        float(terms.mean()), low, high, effective_sample_size(w), clipped, len(data), level,
        max_weight,
    )  # fmt: skip


def snips(
    data: LoggedBandit,
    target: TargetPolicy,
    *,
    max_weight: float | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> SNIPSEstimate:
    probs = target_matrix(data, target)
    w, clipped = weights(data, probs, max_weight)
    if not w.sum() > 0:
        raise ValueError("target: puts no probability on any logged action, SNIPS is undefined")
    value = float(np.sum(w * data.rewards) / np.sum(w))
    low, high = _boot_ratio(w * data.rewards, w, n_boot, level, seed)
    return SNIPSEstimate(
        value, low, high, effective_sample_size(w), clipped, len(data), level, max_weight
    )


def dr(
    data: LoggedBandit,
    target: TargetPolicy,
    *,
    reward_model: RewardModel | None = None,
    max_weight: float | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    alpha: float = 1.0,
) -> DREstimate:
    """Doubly robust estimate; without ``reward_model`` one is fitted by
    :func:`fit_reward_model` (per-action ridge, 2-fold cross-fitted, penalty ``alpha``)."""
    probs = target_matrix(data, target)
    w, clipped = weights(data, probs, max_weight)
    model = reward_model or fit_reward_model(data, probs, alpha=alpha, seed=seed)
    q_logged = _model_array(model.logged, "reward_model.logged", len(data))
    q_target = _model_array(model.target, "reward_model.target", len(data))
    terms = q_target + w * (data.rewards - q_logged)
    low, high = _boot_mean(terms, n_boot, level, seed)
    return DREstimate(
        float(terms.mean()), low, high, effective_sample_size(w), clipped, len(data), level,
        max_weight, direct=float(q_target.mean()),
    )  # fmt: skip


def evaluate(
    data: LoggedBandit,
    target: TargetPolicy,
    *,
    reward_model: RewardModel | None = None,
    max_weight: float | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> OPEReport:
    """All three estimates with the same weights, bootstrap settings and seed."""
    probs = target_matrix(data, target)
    kw: dict[str, Any] = dict(max_weight=max_weight, n_boot=n_boot, level=level, seed=seed)
    return OPEReport(
        ips=ips(data, probs, **kw),
        snips=snips(data, probs, **kw),
        dr=dr(data, probs, reward_model=reward_model, **kw),
    )


# ------------------------------------------------------------------------------- reward model


def fit_reward_model(
    data: LoggedBandit,
    probs: np.ndarray,
    *,
    folds: int = 2,
    alpha: float = 1.0,
    seed: int = 0,
) -> RewardModel:
    """Per-action ridge regression of reward on features (with intercept), cross-fitted: each
    row's q̂ comes from a model fitted on the other folds, so DR's correction term is not
    biased by the model having seen the row's own reward. Without features, per-action means.

    An action with no logged rows in the training folds gets the training folds' mean reward.
    """
    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds: expected an integer >= 2, got {folds!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha: expected >= 0, got {alpha!r}")
    n = len(data)
    if n < folds:
        raise ValueError(f"folds: {folds} folds need at least {folds} rows, the log has {n}")
    x = data.features if data.features is not None else np.empty((n, 0))
    design = np.column_stack([np.ones(n), x])
    # Standardise on the whole log so the ridge penalty treats columns alike; the intercept is
    # left unpenalised.
    scale = design[:, 1:].std(axis=0)
    design[:, 1:] = (design[:, 1:] - design[:, 1:].mean(axis=0)) / np.where(scale > 0, scale, 1)
    penalty = alpha * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    fold = np.random.default_rng(seed).permutation(n) % folds
    q_all = np.empty((n, data.n_actions))
    for k in range(folds):
        train, test = fold != k, fold == k
        fallback = float(data.rewards[train].mean())
        for a in range(data.n_actions):
            rows = train & (data.actions == a)
            if not rows.any():
                q_all[test, a] = fallback
                continue
            xa, ya = design[rows], data.rewards[rows]
            # lstsq rather than solve: a tiny action with fewer rows than columns stays defined.
            beta = np.linalg.lstsq(xa.T @ xa + penalty, xa.T @ ya, rcond=None)[0]
            q_all[test, a] = design[test] @ beta
    return RewardModel(
        logged=q_all[np.arange(n), data.actions], target=np.sum(probs * q_all, axis=1)
    )


# ------------------------------------------------------------------------------------ adapter


def from_export(
    decisions: Any,
    outcomes: Any,
    *,
    features: Any = None,
    missing: str = "error",
) -> LoggedBandit:
    """Turn a ``ContactLedger.export_decisions`` frame plus an outcomes table into a log.

    ``decisions`` needs :data:`EXPORT_NEEDS`: the logged action is the *proposal* (``0`` when
    ``proposed_contact`` is false, else ``1 + proposed_offer_level``), because ``propensity`` is
    the acting policy's probability of what it proposed; the ledger's limits (which may have
    blocked it) are part of the environment the reward reflects, and a target policy is assumed
    to face the same ledger. ``outcomes`` needs :data:`OUTCOME_NEEDS` (one row per request id).
    ``features``, optional, is a frame with a ``request_id`` column and numeric feature columns
    (what the policy saw at decision time). A decision without an outcome is an error, or
    dropped with ``missing="drop"`` (outcomes not yet observed). Every row is used: filter the
    frame first to evaluate one arm or source (a ``rules`` row logs propensity 1.0, so it only
    supports target policies that agree with the rule).
    """
    import pandas as pd

    if missing not in ("error", "drop"):
        raise ValueError(f"missing: expected 'error' or 'drop', got {missing!r}")
    for name, frame, needs in (
        ("decisions", decisions, EXPORT_NEEDS),
        ("outcomes", outcomes, OUTCOME_NEEDS),
    ):
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"{name}: expected a pandas DataFrame, got {type(frame).__name__}")
        absent = [c for c in needs if c not in frame.columns]
        if absent:
            raise ValueError(f"{name}: missing columns {absent}")
    for name, frame in (("decisions", decisions), ("outcomes", outcomes)):
        dup = frame["request_id"].duplicated()
        if dup.any():
            first = frame["request_id"][dup].iloc[0]
            raise ValueError(
                f"{name}.request_id: duplicated ({int(dup.sum())} rows, e.g. {first!r})"
            )
    log = decisions[list(EXPORT_NEEDS)].copy()
    log["request_id"] = log["request_id"].astype(str)
    out = outcomes[list(OUTCOME_NEEDS)].copy()
    out["request_id"] = out["request_id"].astype(str)
    merged = log.merge(out, on="request_id", how="left", indicator=True)
    lacking = merged["_merge"] != "both"
    if lacking.any():
        if missing == "error":
            first = merged.loc[lacking, "request_id"].iloc[0]
            raise ValueError(
                f"outcomes: no reward for {int(lacking.sum())} decisions (e.g. {first!r}); "
                "pass missing='drop' to evaluate only the decided-and-observed ones"
            )
        merged = merged[~lacking]
    contact = merged["proposed_contact"].map(_as_bool, na_action="ignore")
    if contact.isna().any():
        raise ValueError("decisions.proposed_contact: expected booleans")
    level = pd.to_numeric(merged["proposed_offer_level"], errors="coerce")
    if level.isna().any() or (level % 1 != 0).any():
        raise ValueError("decisions.proposed_offer_level: expected integers")
    actions = np.where(contact.to_numpy(dtype=bool), 1 + level.to_numpy(), 0).astype(np.int64)
    x = None
    if features is not None:
        if not isinstance(features, pd.DataFrame) or "request_id" not in features.columns:
            raise ValueError("features: expected a DataFrame with a request_id column")
        feats = features.assign(request_id=features["request_id"].astype(str))
        feats = feats.drop_duplicates("request_id", keep=False).set_index("request_id")
        if len(feats) != len(features):
            raise ValueError("features.request_id: duplicated")
        absent = ~merged["request_id"].isin(feats.index)
        if absent.any():
            first = merged.loc[absent, "request_id"].iloc[0]
            raise ValueError(f"features: no row for {int(absent.sum())} decisions (e.g. {first!r})")
        try:
            x = feats.loc[merged["request_id"]].to_numpy(dtype=float)
        except (TypeError, ValueError) as err:
            raise ValueError(f"features: expected numeric columns ({err})") from err
    return LoggedBandit(
        actions=actions,
        propensities=pd.to_numeric(merged["propensity"], errors="coerce").to_numpy(dtype=float),
        rewards=pd.to_numeric(merged["reward"], errors="coerce").to_numpy(dtype=float),
        n_actions=N_ACTIONS,
        features=x,
        request_ids=tuple(merged["request_id"]),
    )


# ------------------------------------------------------------------------------------ helpers


def _as_bool(v: Any) -> bool | None:
    # A CSV export reads back as "True"/"False" strings; Parquet keeps bools.
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | np.integer) and v in (0, 1):
        return bool(v)
    return {"true": True, "false": False}.get(str(v).strip().lower())


def _check_max_weight(max_weight: float | None) -> None:
    if max_weight is not None and not (np.isfinite(max_weight) and max_weight > 0):
        raise ValueError(f"max_weight: expected a finite number > 0 or None, got {max_weight!r}")


def _model_array(values: np.ndarray, name: str, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite values")
    return arr


def _boot_indices(n: int, n_boot: int, level: float, seed: int) -> np.ndarray:
    if not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot: expected an integer >= 10, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a value in (0, 1), got {level!r}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def _boot_mean(terms: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    idx = _boot_indices(len(terms), n_boot, level, seed)
    return _percentiles(terms[idx].mean(axis=1), level)


def _boot_ratio(
    num: np.ndarray, den: np.ndarray, n_boot: int, level: float, seed: int
) -> tuple[float, float]:
    idx = _boot_indices(len(num), n_boot, level, seed)
    d = den[idx].sum(axis=1)
    # A resample with no weight at all has no SNIPS value; leaving it out is the usual choice
    # and only matters for logs where the target almost never agrees with the logger.
    ok = d > 0
    return _percentiles(num[idx].sum(axis=1)[ok] / d[ok], level)
