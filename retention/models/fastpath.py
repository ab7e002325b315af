"""The compiled path of the tabular models: request dicts in, calibrated answers out, no pandas.

What a decision asks of risk and accept, done the cheap way and proved equal to the training-time
way (``tests/test_fastpath.py`` fuzzes one against the other):

* rows are read by the model version's ``RowEncoder`` (built once: feature index, level -> code
  maps) straight into a float32 matrix, with ``TabularPreprocessor.transform``'s rules;
* probabilities are ``BinaryModel.proba_matrix`` on that matrix: each member's margin (XGBoost's
  ``inplace_predict``, no DMatrix; LightGBM; the linear member's product), the blend, the
  model's own calibrator, so they are ``predict_proba``'s to the bit;
* the four offer levels of a customer are one 4-row batch (``accept.curve_of_rows``);
* factors come from the same float32 row (``BinaryModel.contributions_matrix``: TreeSHAP of the
  tree members, exact contributions of the linear one, by the blend weights), only on request
  (``explain``);
* each member predicts on ``nthread`` threads (1 when serving: a decision is one row, and
  concurrent requests are the parallelism; more threads per row only contend).

A factor is only ever a feature the row gave a usable value for; the features it lacked or that
the model could not read are listed instead (``missing_features``, ``unrecognised_features``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retention.models.accept import OFFER, curve_of_rows
from retention.models.binary import BinaryModel, rank_factors
from retention.models.preprocess import EncodedRows, RowEncoder, display_value

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Factor:
    """One feature's push on the score, in margin units (SHAP), with the value sent."""

    feature: str
    value: Any
    shap: float

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "shap": self.shap}


@dataclass(frozen=True)
class RiskScore:
    churn_probability: float
    factors: tuple[Factor, ...]
    missing_features: tuple[str, ...]
    unrecognised_features: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "churn_probability": self.churn_probability,
            "factors": [f.to_dict() for f in self.factors],
            "missing_features": list(self.missing_features),
            "unrecognised_features": list(self.unrecognised_features),
        }


@dataclass(frozen=True)
class AcceptCurve:
    accept_probability: tuple[float, ...]  # one per offer level, 0..3
    missing_features: tuple[str, ...]
    unrecognised_features: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accept_probability": list(self.accept_probability),
            "missing_features": list(self.missing_features),
            "unrecognised_features": list(self.unrecognised_features),
        }


class CompiledBinary:
    """A loaded ``BinaryModel`` prepared for serving. It owns its members' thread settings."""

    def __init__(self, model: BinaryModel, fixed: Iterable[str] = (), nthread: int = 1):
        if nthread < 0:
            raise ValueError(f"nthread must be >= 0 (0: all cores), got {nthread}")
        for member in model.members:
            names = getattr(getattr(member, "booster", None), "feature_names", None)
            if names is not None and list(names) != model.pre.features:
                raise ValueError(
                    f"the {member.kind} member's features {names} are not its preprocessing's "
                    f"{model.pre.features}"
                )
        self.model = model
        self.nthread = nthread
        # Per-member settings (XGBoost's context, LightGBM's predict argument), not process-wide.
        model.set_threads(nthread)
        self.encoder = RowEncoder(model.pre, fixed)

    @property
    def features(self) -> list[str]:
        return self.model.pre.features

    def encode(self, rows: Sequence[Row]) -> EncodedRows:
        """The rows as the model reads them; ``FeatureValueError`` names a value it cannot."""
        return self.encoder.encode(rows)

    def proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.proba_matrix(x)

    def factors(
        self, rows: Sequence[Row], enc: EncodedRows, k: int = 3
    ) -> list[tuple[Factor, ...]]:
        """The ``k`` usable features pushing each row's score up the most."""
        contrib = self.model.contributions_matrix(enc.x)[:, :-1]
        usable = ~np.isnan(enc.x)
        names = self.features
        return [
            tuple(
                Factor(names[j], display_value(row[names[j]]), round(float(c[j]), 4))
                for j in rank_factors(c, ok, k)
            )
            for row, c, ok in zip(rows, contrib, usable, strict=True)
        ]


class CompiledRisk(CompiledBinary):
    """P(churn), calibrated, with the top TreeSHAP factors."""

    def score(self, rows: Sequence[Row], explain: bool = True, k: int = 3) -> list[RiskScore]:
        enc = self.encode(rows)
        p = self.proba(enc.x)
        factors = self.factors(rows, enc, k) if explain else [()] * len(rows)
        return [
            RiskScore(float(p[i]), factors[i], enc.missing[i], enc.unrecognised[i])
            for i in range(len(rows))
        ]


class CompiledAccept(CompiledBinary):
    """P(accept) at every offer level, the levels of a row as one batch."""

    def __init__(self, model: BinaryModel, nthread: int = 1):
        # The offer level is set here for each level, never read from the caller's row.
        super().__init__(model, fixed=(OFFER,), nthread=nthread)

    def curves(self, rows: Sequence[Row]) -> list[AcceptCurve]:
        enc = self.encode(rows)
        curve = curve_of_rows(self.model, enc.x)
        return [
            AcceptCurve(tuple(float(v) for v in curve[i]), enc.missing[i], enc.unrecognised[i])
            for i in range(len(rows))
        ]
