"""What the dashboard shows, read from the model store's production release and, when one
answers, the serving stack; plain functions, so pages stay thin and tests can call them."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from retention.config import Profile, load_profile
from retention.fileio import read_json
from retention.insights.narratives import NARRATIVES_FILE
from retention.insights.segments import SegmentModel
from retention.store.model_store import ModelStore


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``streamlit run dashboard/app.py -- --profile local [--model-store DIR] [--serving URL]``."""
    p = argparse.ArgumentParser(prog="dashboard")
    p.add_argument("--profile", default="local")
    p.add_argument("--config", default=None)
    p.add_argument("--model-store", default=None)
    p.add_argument("--serving", default=None, help="the transformer's URL; default the profile's")
    args, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args


@dataclass
class Release:
    """The production release of a model store, read lazily, one model at a time."""

    profile: Profile
    serving_url: str
    _dirs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def open(cls, argv: list[str] | None = None, **overrides: str) -> Release:
        args = parse_args(argv)
        store = overrides.get("model_store") or args.model_store
        sets = [f"model_store={store}"] if store else []
        profile = load_profile(
            None if args.config else (overrides.get("profile") or args.profile),
            config=args.config,
            overrides=sets,
        )
        url = (
            overrides.get("serving")
            or args.serving
            or f"http://{profile.serving.host}:{profile.serving.port}"
        )
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--serving: expected an http:// or https:// URL, got {url[:80]!r}")
        return cls(profile, url.rstrip("/"))

    @cached_property
    def store(self) -> ModelStore:
        return ModelStore(self.profile.model_store)

    @cached_property
    def pointer(self) -> dict[str, Any] | None:
        return self.store.production()

    def has(self, model: str) -> bool:
        return bool(self.pointer and model in self.pointer.get("models", {}))

    def dir(self, model: str) -> Path:
        if model not in self._dirs:
            self._dirs[model] = self.store.resolve(model)
        return self._dirs[model]

    @cached_property
    def segments(self) -> SegmentModel:
        return SegmentModel(self.dir("segments"))

    @cached_property
    def narratives(self) -> dict[str, Any]:
        return read_json(self.dir("narratives") / NARRATIVES_FILE)

    def narrative(self, subject: str, kind: str) -> dict[str, Any] | None:
        for n in self.narratives["narratives"]:
            if n["subject"] == subject and n["kind"] == kind:
                return n
        return None

    # ------------------------------------------------------------------ serving

    def call(self, path: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """POST to the serving stack; raises OSError when it does not answer."""
        req = urllib.request.Request(  # noqa: S310 - open() allows http(s) URLs only
            f"{self.serving_url}{path}",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - our URL
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:300]
            raise ValueError(f"{path}: HTTP {err.code}: {detail}") from None

    def serving_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.serving_url}/healthz", timeout=1):  # noqa: S310
                return True
        except OSError:
            return False


def phase_rows(narratives: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per phase, in journey order: healthy share, test AUC, drivers."""
    out = []
    for phase in narratives["phase_order"]:
        v = narratives["phases"][phase]
        out.append(
            {
                "phase": phase,
                "healthy_share": v["healthy_share"],
                "test_auc": v["test_auc"],
                "drivers": ", ".join(d["feature"] for d in v["drivers"]),
            }
        )
    return out


def shap_frame(narratives: dict[str, Any]):
    """Mean |SHAP| by phase and feature (long form), for the SHAP plots."""
    import pandas as pd

    shap = narratives.get("shap")
    if not shap:
        return pd.DataFrame(columns=["phase", "feature", "mean_abs_shap"])
    rows = [
        {"phase": ph, "feature": f, "mean_abs_shap": v}
        for ph in shap["phases"]
        for f, v in zip(shap["features"], shap["mean_abs_shap"][ph], strict=True)
    ]
    return pd.DataFrame(rows)


def local_scores(release: Release, facts: dict[str, Any]) -> dict[str, Any]:
    """Risk with its factors, the accept curve and the value from the released models, in this
    process (the predictors' own code), for when no serving stack answers."""
    from serving.predictors import predictor_class

    out: dict[str, Any] = {}
    for service, key in (("risk", "risk"), ("accept", "accept"), ("ltv", "value")):
        from retention import catalogue

        model = catalogue.by_service(service).name
        if not release.has(model):
            continue
        p = predictor_class(service)(release.dir(model))
        p.load()
        out[key] = p.predict_rows([facts])[0]
    return out
