"""Batch decisions over a synthetic customer base: risk-scoring speed and the whole decision path.

Needs a pushed release in the profile's model store (``make run`` first). In one run:

1. ``--rows`` customers (1,000,000 by default) from ``retention.data.synthetic``'s Telco-like
   generator, seeded, written to parquet;
2. ``risk_scoring``: the batch path's risk step (``serving.batch.risk_scores``: each chunk's
   Arrow columns read by the model's ``ColumnEncoder``, ``inplace_predict``, the calibrator)
   against raw ``xgboost`` ``inplace_predict`` on the same matrices, same booster, same threads,
   same chunks; each the best of ``--repeats`` passes over the whole base (target >= 0.8x);
3. ``decision``: ``retention decide-batch`` on the file, in a child process with a fresh ledger:
   its wall time, rows/s and peak memory (the child's maximum resident set).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from retention.config import load_profile
from retention.data.synthetic import telco_customers
from retention.fileio import write_json
from serving.batch import BatchModels, _chunks, risk_scores

TARGET_RATIO = 0.8


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def risk_scoring(profile, path: Path, repeats: int) -> dict:
    models = BatchModels.load(profile)
    model, chunk = models.risk, profile.batch.chunk_rows
    levels = {*model.pre.categorical, *models.accept.pre.categorical}
    tables = list(_chunks(path, chunk, levels))  # the chunks decide-batch reads
    matrices = [risk_scores(models, t)[0] for t in tables]  # the very matrices the path builds
    booster = model.booster
    raw_s = _best(lambda: [booster.inplace_predict(x, missing=np.nan) for x in matrices], repeats)
    path_s = _best(lambda: [risk_scores(models, t) for t in tables], repeats)
    encode_s = _best(lambda: [models.risk_columns.encode(t) for t in tables], repeats)
    n = sum(t.num_rows for t in tables)
    return {
        "rows": n,
        "chunk_rows": chunk,
        "booster_threads": profile.batch.threads or os.cpu_count(),
        "trees": booster.num_boosted_rounds(),
        "features": len(model.pre.features),
        "raw_inplace_predict_rows_per_s": n / raw_s,
        "batch_path_rows_per_s": n / path_s,
        "ratio": raw_s / path_s,
        "target_ratio": TARGET_RATIO,
        "met": raw_s / path_s >= TARGET_RATIO,
        "encode_share_of_path": encode_s / path_s,
    }


def decision(args, path: Path, tmp: Path) -> dict:
    out = tmp / "decisions.parquet"
    cmd = [
        sys.executable, "-m", "retention_cli.main", "decide-batch", "--profile", args.profile,
        *[x for s in args.set for x in ("--set", s)],
        "--set", f"serving.ledger.url=sqlite:///{tmp / 'ledger.sqlite'}",
        "--input", str(path), "--out", str(out), "--run-id", "bench",
    ]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"decide-batch failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(out.with_name("decisions.summary.json").read_text())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return {
        "wall_s": wall,
        "rows_per_s": summary["rows"] / wall,
        "rows_per_s_inside": summary["rows_per_s"],
        "peak_rss_bytes": peak,
        "peak_rss_gib": peak / 2**30,
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="local")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench-results/batch.json")
    args = ap.parse_args(argv)
    profile = load_profile(args.profile, overrides=args.set)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        d = Path(tmp)
        t = time.perf_counter()
        frame = telco_customers(args.rows, args.seed).drop(columns=["Churn"])
        path = d / "customers.parquet"
        frame.to_parquet(path, index=False)
        generate_s = time.perf_counter() - t
        del frame
        scoring = risk_scoring(profile, path, args.repeats)
        whole = decision(args, path, d)
    doc = {
        "profile": profile.name,
        "rows": args.rows,
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "generate_s": generate_s,
        "risk_scoring": scoring,
        "decision": whole,
    }
    write_json(args.out, doc)
    print(
        f"wrote {args.out}: risk scoring {scoring['batch_path_rows_per_s']:,.0f} rows/s vs raw "
        f"inplace_predict {scoring['raw_inplace_predict_rows_per_s']:,.0f} "
        f"({scoring['ratio']:.2f}x, target {TARGET_RATIO}x); whole decision "
        f"{whole['rows_per_s']:,.0f} rows/s, peak {whole['peak_rss_gib']:.2f} GiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
