"""The message writer: sft + rm + ppo-text on a profile, its quality gates, and its speed.

Runs the three steps in-process as the DAG would (sft and rm are independent; ppo-text needs
both), then loads the final writer as serving does and times generation: tokens per second over
a batch of held-out prompts, and the latency of one message of at most 60 new tokens.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from retention.config import load_profile
from retention.fileio import write_json
from retention.messaging.ppo_text import train_ppo_text
from retention.messaging.reward import train_rm
from retention.messaging.sft import eval_examples, train_sft
from retention.messaging.shield import shielded
from retention.messaging.writer import MessageWriter
from retention.models.outputs import MODEL_DIR

TARGET_S = 360.0


def generation_speed(model_dir: Path, profile, n: int = 8) -> dict:
    writer = MessageWriter.load(
        model_dir, profile.contract, cache_dir=profile.writer.model.cache_dir
    )
    items = eval_examples(profile)[:n]
    writer.timed_write(items[0].facts, items[0].offer_level)  # warm-up: first call allocates
    latencies, tokens, blocked = [], 0, 0
    for e in items:
        text, new, seconds = writer.timed_write(e.facts, e.offer_level)
        latencies.append(seconds)
        tokens += new
        blocked += shielded(text, e.facts, e.offer_level, e.contract)[1].passed is False
    return {
        "messages": len(items),
        "max_new_tokens": writer.max_new_tokens,
        "tokens_per_s": round(tokens / sum(latencies), 1),
        "latency_s_median": round(statistics.median(latencies), 3),
        "latency_s_max": round(max(latencies), 3),
        "mean_new_tokens": round(tokens / len(items), 1),
        "shield_replaced": blocked,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="local")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="bench-results/writer.json")
    ap.add_argument(
        "--model-dir", help="time generation only, of this trained writer (no training)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    profile = load_profile(args.profile, overrides=args.set)
    if args.model_dir:
        speed = generation_speed(Path(args.model_dir), profile)
        write_json(Path(args.out), {"profile": profile.name, "model_dir": args.model_dir,
                                    "generation": speed})  # fmt: skip
        print(f"writer: {speed['tokens_per_s']} tokens/s, one message in "
              f"{speed['latency_s_median']} s")  # fmt: skip
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        d = Path(tmp)
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
        speed = generation_speed(d / "ppo" / MODEL_DIR, profile)
    gates = profile.gates
    doc = {
        "profile": profile.name,
        "base_model": profile.writer.model.model_dump(),
        **{k: round(v, 1) for k, v in steps.items()},
        "total_s": round(total, 1),
        "target_total_s": TARGET_S,
        "within_target": total <= TARGET_S,
        "sft": sft.model_dump(exclude={"details": {"samples"}}),
        "rm": rm.model_dump(),
        "ppo_text": ppo.model_dump(exclude={"details": {"samples", "history"}}),
        "samples": ppo.details["samples"][:4],
        "generation": speed,
        "gates": {"rm": gates["rm"].model_dump(), "writer": gates["writer"].model_dump()},
    }
    write_json(Path(args.out), doc)
    print(
        f"writer: sft {steps['sft_s']:.0f} s + rm {steps['rm_s']:.0f} s + ppo-text "
        f"{steps['ppo_text_s']:.0f} s = {total:.0f} s (target <= {TARGET_S:.0f}); RM accuracy "
        f"{rm.accuracy:.3f}; win rate vs SFT: RM {ppo.win_rate_rm:.2f}, checklist "
        f"{ppo.win_rate_checklist:.2f}; violations after shield "
        f"{ppo.violation_rate_after_shield:.2f}; {speed['tokens_per_s']} tokens/s, one "
        f"message in {speed['latency_s_median']} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
