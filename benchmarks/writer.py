"""The message writer: sft + rm + ppo-text on a profile, the release, and its serving speed.

Runs the three steps in-process as the DAG would (sft and rm are independent; ppo-text needs
both) for each seed asked, then loads the released writer as serving does (``WriterPredictor``)
and times one message at a time through it: median and p90 latency, tokens per second. The
checklist pass rate of the served writer (int8 on a CPU) is measured beside the full-precision
one on the same held-out prompts, so a speed-up that costs quality shows.

Everything lands in one JSON file (``make bench-writer`` -> ``bench-results/writer.json``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from retention.config import load_profile
from retention.fileio import write_json
from retention.messaging.ppo_text import release_examples, train_ppo_text
from retention.messaging.reward import train_rm
from retention.messaging.sft import distinct_2, train_sft
from retention.messaging.shield import check_message, shielded
from retention.messaging.writer import MessageWriter
from retention.models.outputs import MODEL_DIR

# sft + rm + ppo-text on the local profile, on 2 cores (issue 15).
TARGET_S = 480.0


def served_quality(model_dir: Path, profile, items) -> dict:
    """Pass rate as written of the writer as served (int8 on a CPU) and in full precision."""
    out = {}
    facts, levels = [e.facts for e in items], [e.offer_level for e in items]
    for label, q in (("int8", True), ("float32", False)):
        w = MessageWriter.load(model_dir, profile.contract, cache_dir=profile.writer.model.cache_dir,
                               max_new_tokens=profile.writer.serve.max_new_tokens,
                               quantize_int8=q)  # fmt: skip
        msgs = w.write(facts, levels)
        verdicts = [check_message(m, e.facts, e.offer_level, e.contract)
                    for m, e in zip(msgs, items, strict=True)]  # fmt: skip
        by_rule: dict[str, int] = {}
        for v in verdicts:
            for x in v.violations:
                by_rule[x.rule] = by_rule.get(x.rule, 0) + 1
        out[label] = {
            "released": w.released,
            "pass_rate_as_written": float(np.mean([v.passed for v in verdicts])),
            "distinct_2": round(distinct_2(msgs), 3),
            "violations_by_rule": dict(sorted(by_rule.items())),
            "failed": [{"message": m, "violations": [x.detail for x in v.violations]}
                       for m, v in zip(msgs, verdicts, strict=True) if not v.passed][:12],
        }  # fmt: skip
        if w.released == "template":
            break  # no language model: nothing to quantize
    return out


def predictor_speed(model_dir: Path, profile, items) -> dict:
    """One message at a time through the writer predictor, as the transformer calls it."""
    from serving.predictors import WriterPredictor

    pred = WriterPredictor.from_profile(profile, model_dir)
    t = time.perf_counter()
    pred.load()
    load_s = time.perf_counter() - t
    tok = pred.writer.tokenizer
    rows = [{"facts": e.facts, "offer_level": e.offer_level} for e in items]
    pred.predict_rows(rows[:1])  # warm-up: the first call allocates
    latencies, tokens, replaced = [], 0, 0
    for r, e in zip(rows, items, strict=True):
        t = time.perf_counter()
        (out,) = pred.predict_rows([r])
        latencies.append(time.perf_counter() - t)
        msg = out["message"]
        # New tokens: the message's tokens and the end-of-turn token it stopped on.
        tokens += len(tok(msg)["input_ids"]) + 1 if tok is not None else 0
        replaced += not shielded(msg, e.facts, e.offer_level, e.contract)[1].passed
    return {
        "released": pred.writer.released,
        "quantize_int8": profile.writer.serve.quantize_int8,
        "messages": len(items),
        "max_new_tokens": pred.writer.max_new_tokens,
        "load_s": round(load_s, 2),
        "tokens_per_s": round(tokens / sum(latencies), 1),
        "latency_s_median": round(statistics.median(latencies), 3),
        "latency_s_p90": round(float(np.quantile(latencies, 0.9)), 3),
        "latency_s_max": round(max(latencies), 3),
        "mean_new_tokens": round(tokens / len(items), 1),
        "shield_replaced": replaced,
    }


def speed(model_dir: Path, profile, n: int) -> dict:
    items = release_examples(profile)
    return {
        "predictor": predictor_speed(model_dir, profile, items[:n]),
        "served_quality": served_quality(model_dir, profile, items),
    }


def one_seed(profile, d: Path) -> dict:
    steps = {}
    t = time.perf_counter()
    sft = train_sft(profile, d / "sft")
    steps["sft_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rm = train_rm(profile, d / "rm")
    steps["rm_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ppo = train_ppo_text(profile, d / "sft", d / "rm", d / "ppo")
    steps["ppo_text_s"] = time.perf_counter() - t
    total = sum(steps.values())
    return {
        "seed": profile.seed,
        **{k: round(v, 1) for k, v in steps.items()},
        "total_s": round(total, 1),
        "within_target": total <= TARGET_S,
        "sft": sft.model_dump(exclude={"details": {"samples"}}),
        "rm": rm.model_dump(),
        "writer": ppo.model_dump(exclude={"details": {"history"}}),
        "ppo_history": ppo.details["history"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="local")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="bench-results/writer.json")
    ap.add_argument(
        "--seeds", type=int, nargs="+", help="train once per seed (default: the profile's)"
    )
    ap.add_argument("--messages", type=int, default=16, help="messages timed through the predictor")
    ap.add_argument("--model-dir", help="time and judge this trained writer only (no training)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    profile = load_profile(args.profile, overrides=args.set)
    if args.model_dir:
        doc = {"profile": profile.name, "model_dir": args.model_dir,
               **speed(Path(args.model_dir), profile, args.messages)}  # fmt: skip
        write_json(Path(args.out), doc)
        p = doc["predictor"]
        print(f"writer ({p['released']}): {p['tokens_per_s']} tokens/s, one message in "
              f"{p['latency_s_median']} s (p90 {p['latency_s_p90']} s)")  # fmt: skip
        return 0
    seeds = args.seeds or [profile.seed]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        for seed in seeds:
            p = load_profile(args.profile, overrides=[*args.set, f"seed={seed}"])
            runs.append(one_seed(p, Path(tmp) / str(seed)))
        first = load_profile(args.profile, overrides=[*args.set, f"seed={seeds[0]}"])
        served = speed(Path(tmp) / str(seeds[0]) / "ppo" / MODEL_DIR, first, args.messages)
    gates = profile.gates
    doc = {
        "profile": profile.name,
        "base_model": profile.writer.model.model_dump(),
        "target_total_s": TARGET_S,
        "seeds": seeds,
        "runs": runs,
        "summary": [
            {
                k: r["writer"][k]
                for k in (
                    "released",
                    "win_rate_rm",
                    "win_rate_rm_low",
                    "win_rate_rm_high",
                    "win_rate_checklist",
                    "win_rate_checklist_low",
                    "win_rate_checklist_high",
                    "ppo_pass_rate_as_written",
                    "sft_pass_rate_as_written",
                    "pass_rate_as_written",
                    "violation_rate_after_shield",
                    "distinct_2",
                    "eval_prompts",
                )
            }
            | {"seed": r["seed"], "total_s": r["total_s"], "rm_accuracy": r["rm"]["accuracy"]}
            for r in runs
        ],  # fmt: skip
        "served_seed": seeds[0],
        **served,
        "gates": {"rm": gates["rm"].model_dump(), "writer": gates["writer"].model_dump()},
    }
    write_json(Path(args.out), doc)
    for r in doc["summary"]:
        print(
            f"seed {r['seed']}: {r['total_s']:.0f} s (target <= {TARGET_S:.0f}); RM accuracy "
            f"{r['rm_accuracy']:.3f}; PPO over SFT: RM {r['win_rate_rm']:.2f} "
            f"[{r['win_rate_rm_low']:.2f}, {r['win_rate_rm_high']:.2f}], checklist "
            f"{r['win_rate_checklist']:.2f} [{r['win_rate_checklist_low']:.2f}, "
            f"{r['win_rate_checklist_high']:.2f}]; released {r['released']}: "
            f"{r['pass_rate_as_written']:.2f} pass as written, "
            f"{r['violation_rate_after_shield']:.2f} violations after the shield"
        )
    p = doc["predictor"]
    print(f"served ({p['released']}): {p['tokens_per_s']} tokens/s, one message in "
          f"{p['latency_s_median']} s (p90 {p['latency_s_p90']} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
