"""Seeded generators of realistic synthetic tables with the schemas of the real datasets.

Every table carries signal spread over many columns through a latent logit plus noise, so a model can
learn it but no single column separates the classes. The coefficients follow the directions reported
for the public datasets (month-to-month contracts, fibre and electronic checks churn more; long tenure
and support add-ons churn less; bigger offers are accepted more often).

The offers and messages tables follow the profile's contact contract (``retention.contract``):
acceptance grows with each level's discount, and a message states the contract's words for it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from retention.contract import ContactContract

PHASES = ("Learn", "Buy", "Get", "Use", "Pay", "Renew")

FIRST_NAMES = (
    "Sam", "Alex", "Maria", "Chen", "Fatima", "Jonas", "Priya", "Lucas", "Aisha", "Noah",
    "Elena", "Kenji", "Olivia", "Mateo", "Zara", "Liam", "Sofia", "Omar", "Hannah", "Diego",
)  # fmt: skip
PLANS = ("Basic", "Plus", "Pro")
TIMEZONES = ("Europe/Berlin", "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "UTC")
# A reference message: opener, body, then the offer line (or a check-in for level 0).
OPENERS = ("Hi {n},", "Hello {n},", "Dear {n},", "Hey {n},")
BODIES = (
    " thanks for {t} months with us on {p}.",
    " we value your {t} months on the {p} plan.",
    " it has been {t} months since you joined {p}.",
)
CHECK_INS = (
    " If you have a minute, tell us how we can help.",
    " Just reply if anything could be better.",
)
OFFER_LINES = (
    " Enjoy {offer}, just reply YES.",
    " Here is {offer} if you stay.",
    " Stay with us and get {offer}.",
    " Enjoy {offer}.",
)
# Log-odds of acceptance per unit of discount: 0.45 per 5 points, as the default levels had.
ACCEPT_PER_DISCOUNT = 9.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _ids(prefix: str, n: int) -> np.ndarray:
    width = max(4, len(str(n)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(1, n + 1)])


def telco_customers(n: int, seed: int) -> pd.DataFrame:
    """A table with the IBM Telco churn columns (``Churn`` Yes/No, ~26 % positive)."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n, p=[0.55, 0.21, 0.24])
    tenure_scale = np.select(
        [contract == "Month-to-month", contract == "One year"], [14.0, 35.0], 50.0
    )
    tenure = np.clip(rng.gamma(1.4, tenure_scale / 1.4), 0, 72).round().astype(int)
    internet = rng.choice(["DSL", "Fiber optic", "No"], n, p=[0.34, 0.44, 0.22])
    has_net = internet != "No"
    phone = rng.random(n) < 0.9

    def addon(p: float) -> np.ndarray:
        yes = rng.random(n) < p
        return np.where(~has_net, "No internet service", np.where(yes, "Yes", "No"))

    security, backup, protection, support = addon(0.35), addon(0.44), addon(0.44), addon(0.36)
    tv, movies = addon(0.5), addon(0.5)
    multiple = np.where(~phone, "No phone service", np.where(rng.random(n) < 0.47, "Yes", "No"))
    payment = rng.choice(
        [
            "Electronic check",
            "Mailed check",
            "Bank transfer (automatic)",
            "Credit card (automatic)",
        ],
        n,
        p=[0.34, 0.23, 0.22, 0.21],
    )
    paperless = np.where(rng.random(n) < 0.59, "Yes", "No")
    senior = (rng.random(n) < 0.16).astype(int)
    partner = np.where(rng.random(n) < 0.48, "Yes", "No")
    dependents = np.where(rng.random(n) < np.where(partner == "Yes", 0.5, 0.12), "Yes", "No")
    monthly = (
        20
        + np.where(internet == "Fiber optic", 50, np.where(internet == "DSL", 25, 0))
        + 5 * (multiple == "Yes")
        + 10 * ((tv == "Yes").astype(int) + (movies == "Yes").astype(int))
        + 5 * ((security == "Yes").astype(int) + (backup == "Yes").astype(int))
        + rng.normal(0, 3, n)
    ).round(2)
    total = (monthly * tenure * rng.uniform(0.95, 1.05, n)).round(2)

    logit = (
        -1.6
        + 1.3 * (contract == "Month-to-month")
        - 0.9 * (contract == "Two year")
        - 0.045 * tenure
        + 0.8 * (internet == "Fiber optic")
        - 0.6 * (internet == "No")
        + 0.55 * (payment == "Electronic check")
        - 0.45 * (security == "Yes")
        - 0.45 * (support == "Yes")
        + 0.3 * (paperless == "Yes")
        + 0.3 * senior
        - 0.2 * (dependents == "Yes")
        + 0.012 * (monthly - 65)
        + rng.normal(0, 0.7, n)
    )
    churn = np.where(rng.random(n) < _sigmoid(logit), "Yes", "No")
    total_str = np.where(tenure == 0, " ", total.astype(str))  # the real file has blanks here
    return pd.DataFrame(
        {
            "customerID": _ids("C-", n),
            "gender": rng.choice(["Female", "Male"], n),
            "SeniorCitizen": senior,
            "Partner": partner,
            "Dependents": dependents,
            "tenure": tenure,
            "PhoneService": np.where(phone, "Yes", "No"),
            "MultipleLines": multiple,
            "InternetService": internet,
            "OnlineSecurity": security,
            "OnlineBackup": backup,
            "DeviceProtection": protection,
            "TechSupport": support,
            "StreamingTV": tv,
            "StreamingMovies": movies,
            "Contract": contract,
            "PaperlessBilling": paperless,
            "PaymentMethod": payment,
            "MonthlyCharges": monthly,
            "TotalCharges": total_str,
            "Churn": churn,
        }
    )


def reference_message(
    name: str, tenure: int, plan: str, offer_level: int, contract: ContactContract, rng
) -> str:
    """A message that passes the shield: greeting, tenure, and the contract's words for the offer."""
    offer = contract.offer_phrase(offer_level)
    tail = str(rng.choice(OFFER_LINES)).format(offer=offer) if offer else str(rng.choice(CHECK_INS))
    return (
        str(rng.choice(OPENERS)).format(n=name)
        + str(rng.choice(BODIES)).format(t=tenure, p=plan)
        + tail
    )


def bank_offers(n: int, seed: int, contract: ContactContract) -> pd.DataFrame:
    """A Bank-Marketing-like contact table with an explicit ``offer_level`` 0–3 and ``y`` yes/no;
    acceptance grows with the contract's discount of the level."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(40, 10, n), 18, 95).round().astype(int)
    job = rng.choice(
        ["admin.", "blue-collar", "technician", "services", "management", "retired", "student"],
        n,
        p=[0.25, 0.22, 0.16, 0.1, 0.14, 0.07, 0.06],
    )
    marital = rng.choice(["married", "single", "divorced"], n, p=[0.6, 0.28, 0.12])
    education = rng.choice(
        ["basic.9y", "high.school", "professional.course", "university.degree"],
        n,
        p=[0.2, 0.3, 0.15, 0.35],
    )
    housing = rng.choice(["yes", "no"], n, p=[0.52, 0.48])
    loan = rng.choice(["yes", "no"], n, p=[0.15, 0.85])
    contact = rng.choice(["cellular", "telephone"], n, p=[0.63, 0.37])
    previous = rng.poisson(0.17, n)
    poutcome = np.where(
        previous == 0, "nonexistent", np.where(rng.random(n) < 0.3, "success", "failure")
    )
    euribor = rng.choice([0.7, 1.3, 4.1, 4.86, 4.96], n, p=[0.1, 0.1, 0.15, 0.35, 0.3])
    campaign = 1 + rng.poisson(1.5, n)
    offer = rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
    logit = (
        -2.6
        + ACCEPT_PER_DISCOUNT * np.asarray(contract.discounts)[offer]
        + 1.7 * (poutcome == "success")
        - 0.35 * (euribor - 3.5)
        + 0.6 * np.isin(job, ["retired", "student"])
        + 0.4 * (contact == "cellular")
        - 0.08 * (campaign - 2)
        + 0.015 * np.abs(age - 40)
        + 0.2 * (education == "university.degree")
        + rng.normal(0, 0.6, n)
    )
    y = np.where(rng.random(n) < _sigmoid(logit), "yes", "no")
    return pd.DataFrame(
        {
            "contact_id": _ids("K-", n),
            "age": age,
            "job": job,
            "marital": marital,
            "education": education,
            "housing": housing,
            "loan": loan,
            "contact": contact,
            "campaign": campaign,
            "previous": previous,
            "poutcome": poutcome,
            "euribor3m": euribor,
            "offer_level": offer,
            "y": y,
        }
    )


def journey(n_customers: int, seed: int) -> pd.DataFrame:
    """Customers × 6 phases: 5 touchpoint metrics in [0, 1], 1 operational metric, health 0/1."""
    rng = np.random.default_rng(seed)
    rows = []
    base = rng.normal(
        0, 0.6, n_customers
    )  # a customer who struggles in one phase tends to in others
    for p_idx, phase in enumerate(PHASES):
        weights = np.roll(np.array([1.6, 1.2, 0.9, 0.6, 0.4]), p_idx % 5)
        m = np.clip(rng.beta(4, 2.5, (n_customers, 5)) + 0.08 * base[:, None], 0, 1)
        ops = rng.gamma(3.0, 30.0 + 10 * p_idx, n_customers)  # e.g. minutes waited, days to deliver
        logit = (
            (m - 0.6) @ weights * 3.0
            - 0.012 * (ops - ops.mean())
            + 0.8 * base
            + 0.9
            + rng.normal(0, 0.8, n_customers)
        )
        health = (rng.random(n_customers) < _sigmoid(logit)).astype(int)
        rows.append(
            pd.DataFrame(
                {
                    "customer_id": _ids("J-", n_customers),
                    "phase": phase,
                    **{f"metric_{k + 1}": m[:, k].round(4) for k in range(5)},
                    "operational_metric": ops.round(2),
                    "health": health,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def orders(n_customers: int, seed: int) -> pd.DataFrame:
    """A CDNOW-like order log: customers arrive over 12 weeks, buy at a Poisson rate, then drop out."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-01")
    horizon_days = 546  # 78 weeks, like CDNOW
    first = rng.integers(0, 84, n_customers)
    rate = rng.gamma(0.8, 1 / 60, n_customers)  # purchases per day (heterogeneous, BG/NBD-like)
    dropout_p = rng.beta(1.0, 3.0, n_customers)  # chance to become inactive after each purchase
    spend = rng.gamma(6.0, 6.0, n_customers)  # each customer's typical basket value
    cids, dates, amounts = [], [], []
    for i in range(n_customers):
        day = int(first[i])
        while day < horizon_days:
            cids.append(f"O-{i + 1:05d}")
            dates.append(start + np.timedelta64(day, "D"))
            amounts.append(round(float(rng.gamma(4.0, spend[i] / 4.0)), 2))
            if rng.random() < dropout_p[i]:
                break
            day += 1 + int(rng.exponential(1 / max(rate[i], 1e-4)))
    return pd.DataFrame(
        {"customer_id": cids, "date": pd.to_datetime(dates), "amount": np.asarray(amounts)}
    )


def messages(n: int, seed: int, contract: ContactContract) -> pd.DataFrame:
    """Customer facts plus a decision, and a reference message written for them."""
    rng = np.random.default_rng(seed)
    names = rng.choice(FIRST_NAMES, n)
    plans = rng.choice(PLANS, n)
    tenure = rng.integers(1, 72, n)
    offer = rng.choice(4, n, p=[0.25, 0.35, 0.25, 0.15])
    texts = [
        reference_message(names[i], tenure[i], plans[i], int(offer[i]), contract, rng)
        for i in range(n)
    ]
    return pd.DataFrame(
        {
            "example_id": _ids("M-", n),
            "name": names,
            "plan": plans,
            "tenure": tenure,
            "timezone": rng.choice(TIMEZONES, n),
            "offer_level": offer,
            "message": texts,
        }
    )


HISTORY_SEGMENTS = (
    (100, "1) $0 - $100"),
    (200, "2) $100 - $200"),
    (350, "3) $200 - $350"),
    (500, "4) $350 - $500"),
    (750, "5) $500 - $750"),
    (1000, "6) $750 - $1,000"),
    (np.inf, "7) $1,000 +"),
)
CAMPAIGN_ARMS = ("Womens E-Mail", "Mens E-Mail", "No E-Mail")


def campaign(n: int, seed: int) -> pd.DataFrame:
    """A randomised e-mail campaign with the Hillstrom table's schema: a third of the customers
    per arm, outcome ``visit`` (with ``conversion`` and ``spend``).

    The e-mails' effect differs by customer, as a policy needs it to: strongest for recent,
    web-shopping buyers of the e-mail's own line (persuadables), about nil for those who visit
    anyway (sure things) or whose last purchase is a year old (lost causes), and slightly
    negative for the newest phone customers (do not disturb). Base visit rate ~11 %, the
    women's e-mail adds ~4.5 points on average, as in the public data.
    """
    rng = np.random.default_rng(seed)
    recency = rng.integers(1, 13, n)
    history = np.round(29.99 + rng.lognormal(5.0, 0.95, n), 2)
    line = rng.choice(3, n, p=[0.45, 0.45, 0.10])  # mens, womens, both
    mens = (line != 1).astype(int)
    womens = (line != 0).astype(int)
    zip_code = rng.choice(["Surburban", "Urban", "Rural"], n, p=[0.45, 0.40, 0.15])
    newbie = (rng.random(n) < 0.5).astype(int)
    channel = rng.choice(["Web", "Phone", "Multichannel"], n, p=[0.44, 0.44, 0.12])
    arm = rng.choice(len(CAMPAIGN_ARMS), n)
    web = channel != "Phone"
    base = (
        -2.35
        + 0.22 * np.log(history / 100.0)
        - 0.07 * (recency - 6)
        - 0.25 * newbie
        + 0.2 * (zip_code == "Rural")
        + 0.15 * web
        + rng.normal(0, 0.35, n)
    )
    sure = base > -1.3  # visit anyway: the e-mail adds little

    def effect(own_line: np.ndarray) -> np.ndarray:
        tau = 0.05 + 0.3 * own_line + 0.3 * (recency <= 4) + 0.15 * web
        tau = np.where(recency >= 11, 0.02, tau)  # a year since the last purchase: lost
        tau = np.where(sure, 0.05, tau)
        return np.where((newbie == 1) & ~web & (recency > 8), -0.2, tau)

    logit = base + np.select(
        [arm == 0, arm == 1], [effect(womens == 1), 0.8 * effect(mens == 1)], default=0.0
    )
    visit = (rng.random(n) < _sigmoid(logit)).astype(int)
    conversion = visit * (rng.random(n) < 0.09).astype(int)
    spend = np.round(conversion * rng.gamma(2.0, 60.0, n), 2)
    bounds = np.array([b for b, _ in HISTORY_SEGMENTS])
    labels = np.array([lbl for _, lbl in HISTORY_SEGMENTS])
    return pd.DataFrame(
        {
            "recency": recency,
            "history_segment": labels[np.searchsorted(bounds, history)],
            "history": history,
            "mens": mens,
            "womens": womens,
            "zip_code": zip_code,
            "newbie": newbie,
            "channel": channel,
            "segment": np.asarray(CAMPAIGN_ARMS)[arm],
            "visit": visit,
            "conversion": conversion,
            "spend": spend,
        }
    )


GENERATORS: dict[str, Callable[..., pd.DataFrame]] = {
    "customers": telco_customers,
    "offers": bank_offers,
    "journey": journey,
    "orders": orders,
    "messages": messages,
    "campaign": campaign,
}
# The tables whose offers are the contract's; the others take only (rows, seed).
CONTRACT_TABLES = ("offers", "messages")


def generate(name: str, rows: int, seed: int, contract: ContactContract) -> pd.DataFrame:
    try:
        gen = GENERATORS[name]
    except KeyError:
        raise ValueError(
            f"no synthetic generator for dataset '{name}' (known: {', '.join(GENERATORS)})"
        ) from None
    return gen(rows, seed, contract) if name in CONTRACT_TABLES else gen(rows, seed)
