"""Tabular models on the real public files in ../shared/data (stratified 80/10/10, seed 42).

Writes one JSON document. Reads the files in place; skips a dataset whose file is absent. For
risk (Telco) and accept (Bank Marketing without ``duration``) the reported CV is nested (the
whole recipe refitted in each outer fold) and every candidate's own nested score stands beside
the released model's. ``--only telco_risk`` runs one dataset.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from retention.config import BinaryTrainerConfig, DatasetSpec, SplitConfig, load_profile
from retention.data.split import split_frame
from retention.data.validate import parse_table, validate_table
from retention.fileio import read_bytes, write_json
from retention.models.accept import MONOTONE, bank_marketing_adapter
from retention.models.binary import Columns, train_binary
from retention.models.ltv import build_dataset, cross_fit_predict, fit_and_evaluate

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
KEYS = ("test_auc", "test_auc_ci_low", "test_auc_ci_high", "test_ece", "test_brier",
        "cv_auc", "cv_auc_std", "oof_ece", "oof_brier", "calibration", "best_iteration")  # fmt: skip


def _binary(df, spec, cfg, monotone=None, targets=None):
    parts = split_frame(df, spec, SplitConfig(), 42)
    cols = Columns(target=spec.target, id_column=spec.id_column)
    t = time.perf_counter()
    cpu = time.process_time()
    _, metrics, _ = train_binary(
        parts["train"], parts["valid"], parts["test"], cols, cfg, 42, monotone
    )
    d = metrics.details
    out = {k: v for k, v in metrics.model_dump().items() if k in KEYS}
    # The whole recipe: fit (candidates, blend, calibration) + test metrics + nested 5-fold CV.
    out["train_seconds_with_cv"] = round(time.perf_counter() - t, 1)
    out["train_cpu_seconds_with_cv"] = round(time.process_time() - cpu, 1)
    out["fit_seconds"] = d["fit_seconds"]
    out["nested_cv_seconds"] = d.get("cv_seconds")
    out["recipe"] = cfg.recipe
    out["released"] = {k: d["ensemble"][k] for k in ("chosen", "members", "weights")}
    out["chosen_per_outer_fold"] = d.get("cv_chosen")
    # Every candidate alone, refitted and calibrated inside the same outer folds.
    out["candidates_nested_cv"] = d.get("cv_candidates")
    out["candidates_inner_cross_fitted_log_loss"] = d["ensemble"]["inner_cross_fitted_log_loss"]
    out["candidates_test_auc"] = d["ensemble"]["candidates_test_auc"]
    out["hyperparameters"] = d["hyperparameters"]
    if targets:
        out["targets"] = targets
        out["met"] = {
            "cv_auc": out["cv_auc"] >= targets["cv_auc_min"],
            "oof_ece": out["oof_ece"] <= targets["oof_ece_max"],
            "seconds": out["train_seconds_with_cv"] <= targets["seconds_max"],
        }
    return out


def telco(cfg: BinaryTrainerConfig) -> dict:
    path = DATA / "telco.csv"
    spec = DatasetSpec(target="Churn", positive="Yes", labels=["Yes", "No"], id_column="customerID",
                       columns={"tenure": "integer", "TotalCharges": "number"})  # fmt: skip
    df = validate_table(parse_table(read_bytes(str(path)), str(path), spec), str(path), spec)
    targets = {"cv_auc_min": 0.855, "oof_ece_max": 0.01, "seconds_max": 60}
    return {"file": str(path), "rows": len(df), **_binary(df, spec, cfg, targets=targets)}


def bank(cfg: BinaryTrainerConfig) -> dict:
    path = DATA / "bank-additional-full.csv"
    spec = DatasetSpec(target="y", positive="yes", labels=["yes", "no"], sep=";", drop=["duration"])
    raw = parse_table(read_bytes(str(path)), str(path), spec)
    df = validate_table(bank_marketing_adapter(raw), str(path), spec)
    targets = {"cv_auc_min": 0.805, "oof_ece_max": 0.012, "seconds_max": 180}
    return {"file": str(path), "rows": len(df), **_binary(df, spec, cfg, MONOTONE, targets)}


def cdnow(profile) -> dict:
    path = DATA / "CDNOW_master.txt"
    orders = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str, "date": str})
    orders["date"] = pd.to_datetime(orders["date"], format="%Y%m%d")
    start = orders["date"].min()
    cutoff = start + pd.Timedelta(weeks=39)
    t = time.perf_counter()
    f, y = build_dataset(orders, cutoff, 39 * 7, "customer_id", "date", "dollar_value")
    res = fit_and_evaluate(f, y, profile)
    seconds = round(time.perf_counter() - t, 1)
    return {"file": str(path), "customers": len(f), "calibration_weeks": 39, "holdout_weeks": 39,
            "split_80_10_10": res["metrics"], "train_seconds": seconds,
            "all_customers_5fold_out_of_fold": cross_fit_predict(f, y, profile)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-results/models.json")
    ap.add_argument("--profile", default="local")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--only", action="append", default=[], help="dataset key(s) to run")
    args = ap.parse_args()
    profile = load_profile(args.profile, overrides=args.overrides)
    results = {"profile": profile.name}
    for name, fn, arg in (("telco_risk", telco, profile.risk), ("bank_accept", bank, profile.accept),
                          ("cdnow_ltv", cdnow, profile)):  # fmt: skip
        if args.only and name not in args.only:
            continue
        try:
            results[name] = fn(arg)
        except FileNotFoundError as exc:
            results[name] = {"skipped": str(exc)}
        print(name, json.dumps(results[name], default=str)[:2000], flush=True)
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
