"""The customer book: each customer scored by the trained risk, accept and lifetime-value models.

The three models learn from three tables (customers, offers, orders) that share no key, as the
public datasets do. The book therefore couples them explicitly, and says how:

* churn_prob: the risk model on the customer's own row.
* accept: the accept model at offer levels 0–3 on an offer-table profile drawn for the customer
  (seeded, with replacement): the acceptance behaviour of a comparable contact.
* effect: the uplift model on a campaign-table profile drawn for the customer (seeded, with
  replacement, as for accept): the estimated uplift of a comparable customer of the randomised
  campaign over the average estimate (``uplift.effect_multiplier``), which scales the offer's
  hazard cut in the env.
* value: ``LtvModel.customer_values``, the one function serving and the batch path call too. A
  customer of the book has no order history, so it is the LTV model's book mapping (fitted when
  the LTV model was trained): the rank of ``decision.env.value_column`` matched to the model's
  values of the order-log customers (the bigger bill gets the bigger value).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from retention.config import Profile
from retention.data.split import PARTS, read_split
from retention.decision.env import Book
from retention.models.accept import acceptance_curve
from retention.models.binary import BinaryModel
from retention.models.ltv import LtvModel
from retention.models.outputs import MODEL_DIR
from retention.models.uplift import effect_multiplier, load_effects


def _model_dir(d: str | Path) -> Path:
    d = Path(d)
    return d / MODEL_DIR if (d / MODEL_DIR).is_dir() else d


def build_books(
    profile: Profile,
    split_dir: str | Path,
    risk_dir: str | Path,
    accept_dir: str | Path,
    ltv_dir: str | Path,
    uplift_dir: str | Path,
) -> dict[str, Book]:
    """``{"train": ..., "eval": ...}``: training customers, and the held-out valid + test ones."""
    spec = profile.data.customers
    rng = np.random.default_rng(profile.seed + 7)
    risk = BinaryModel.load(_model_dir(risk_dir))
    accept = BinaryModel.load(_model_dir(accept_dir))
    ltv = LtvModel(_model_dir(ltv_dir))
    uplift, mean_uplift, cap = load_effects(_model_dir(uplift_dir))
    campaign = pd.concat([read_split(split_dir, "campaign", p) for p in PARTS], ignore_index=True)

    offers = pd.concat([read_split(split_dir, "offers", p) for p in PARTS], ignore_index=True)
    mapping = ltv.book_mapping
    if mapping is None or mapping.column != profile.decision.env.value_column:
        raise ValueError(
            f"the LTV model in {ltv_dir} maps customers by "
            f"{None if mapping is None else mapping.column!r}, this profile's "
            f"decision.env.value_column is {profile.decision.env.value_column!r}: retrain ltv"
        )

    books = {}
    for name, parts in (("train", ("train",)), ("eval", ("valid", "test"))):
        customers = pd.concat([read_split(split_dir, "customers", p) for p in parts])
        customers = customers.reset_index(drop=True)
        n = len(customers)
        churn = risk.predict_proba(customers)
        profiles = offers.iloc[rng.integers(0, len(offers), n)].reset_index(drop=True)
        acc = acceptance_curve(accept, profiles)
        value = ltv.customer_values(customers).value
        drawn = campaign.iloc[rng.integers(0, len(campaign), n)].reset_index(drop=True)
        effect = effect_multiplier(uplift.predict(drawn[uplift.features]), mean_uplift, cap)
        ids = (
            customers[spec.id_column].astype(str).to_numpy(dtype=object)
            if spec.id_column in customers.columns
            else np.empty(0, dtype=object)
        )
        books[name] = Book(churn, acc, value, ids, effect)
    return books
