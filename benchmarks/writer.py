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

from retention.config import PpoTextConfig, load_profile
from retention.fileio import write_json
from retention.messaging.ppo_text import release_examples, train_ppo_text
from retention.messaging.reward import train_rm
from retention.messaging.sft import distinct_2, train_sft
from retention.messaging.shield import check_message, shielded
from retention.messaging.writer import MessageWriter
from retention.models.outputs import MODEL_DIR

# sft + rm + ppo-text on the local profile, on 2 cores (issue 15).
TARGET_S = 480.0
# Best-of-n samples as PPO's rollouts do by default: near the greedy message, still varied.
BEST_OF_TEMPERATURE = PpoTextConfig.model_fields["temperature"].default


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


def best_of_n(model_dir: Path, rm_dir: Path, profile, items, n: int) -> dict:
    """Best-of-n against greedy, one message at a time as serving would write it: ``n``
    messages sampled from the released writer, the reward model's best among those the shield
    passes as written (the best of all when none does). Whether it pays for its time: its pass
    rate as written and its RM win rate over the greedy message, beside the seconds of each."""
    import torch

    from retention.messaging.ppo_text import load_reward_model, win_rate

    w = MessageWriter.load(model_dir, profile.contract, cache_dir=profile.writer.model.cache_dir,
                           max_new_tokens=profile.writer.serve.max_new_tokens)  # fmt: skip
    if w.model is None:
        return {"n": n, "skipped": "the template is released: nothing to sample"}
    rm, tok = load_reward_model(profile, rm_dir), w.tokenizer
    torch.manual_seed(profile.seed)
    rows = {"greedy": ([], []), "best_of_n": ([], [])}  # messages, seconds
    for e in items:
        t = time.perf_counter()
        (g,) = w.write([e.facts], [e.offer_level])
        rows["greedy"][0].append(g)
        rows["greedy"][1].append(time.perf_counter() - t)
        t = time.perf_counter()
        text = tok.apply_chat_template(e.prompt(), tokenize=False, add_generation_prompt=True)
        batch = tok(text, return_tensors="pt")
        with torch.inference_mode():
            out = w.model.generate(**batch, do_sample=True, temperature=BEST_OF_TEMPERATURE, top_k=0, top_p=1.0,
                                   num_return_sequences=n, max_new_tokens=w.max_new_tokens,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
        new = out[:, batch["input_ids"].shape[1] :]
        cands = [c.strip() for c in tok.batch_decode(new, skip_special_tokens=True)]
        scores = rm.score([e.prompt()] * n, cands)
        ok = [check_message(c, e.facts, e.offer_level, e.contract).passed for c in cands]
        best = max(range(n), key=lambda i: (ok[i], scores[i]))
        rows["best_of_n"][0].append(cands[best])
        rows["best_of_n"][1].append(time.perf_counter() - t)
    prompts = [e.prompt() for e in items]
    out_doc: dict = {"n": n, "prompts": len(items), "temperature": BEST_OF_TEMPERATURE}
    rm_scores = {}
    for name, (msgs, secs) in rows.items():
        passed = [check_message(m, e.facts, e.offer_level, e.contract).passed
                  for m, e in zip(msgs, items, strict=True)]  # fmt: skip
        rm_scores[name] = rm.score(prompts, msgs)
        out_doc[name] = {
            "pass_rate_as_written": float(np.mean(passed)),
            "rm_score": float(rm_scores[name].mean()),
            "latency_s_median": round(statistics.median(secs), 3),
            "latency_s_p90": round(float(np.quantile(secs, 0.9)), 3),
            "samples": msgs[:4],
        }
    rate, low, high = win_rate(rm_scores["best_of_n"], rm_scores["greedy"], 0.95)
    out_doc["win_rate_rm_over_greedy"] = {"rate": rate, "low": low, "high": high}
    return out_doc


def speed(model_dir: Path, profile, n: int, rm_dir: Path | None = None, best_of: int = 0) -> dict:
    items = release_examples(profile)
    doc = {
        "predictor": predictor_speed(model_dir, profile, items[:n]),
        "served_quality": served_quality(model_dir, profile, items),
    }
    if rm_dir is not None and best_of > 1:
        doc["best_of_n"] = best_of_n(model_dir, rm_dir, profile, items[: 2 * n], best_of)
    return doc


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
        "--seeds", type=int, nargs="+",
        help="train once per seed (default: three, the profile's and the next two)",
    )  # fmt: skip
    ap.add_argument("--messages", type=int, default=16, help="messages timed through the predictor")
    ap.add_argument("--model-dir", help="time and judge this trained writer only (no training)")
    ap.add_argument("--rm-dir", help="with --model-dir: the reward model best-of-n reranks with")
    ap.add_argument("--best-of", type=int, default=4,
                    help="n of the best-of-n trial on 2 x --messages prompts (0: none)")  # fmt: skip
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    profile = load_profile(args.profile, overrides=args.set)
    if args.model_dir:
        doc = {"profile": profile.name, "model_dir": args.model_dir,
               **speed(Path(args.model_dir), profile, args.messages,
                       Path(args.rm_dir) if args.rm_dir else None, args.best_of)}  # fmt: skip
        write_json(Path(args.out), doc)
        p = doc["predictor"]
        print(f"writer ({p['released']}): {p['tokens_per_s']} tokens/s, one message in "
              f"{p['latency_s_median']} s (p90 {p['latency_s_p90']} s)")  # fmt: skip
        print_best_of_n(doc.get("best_of_n"))
        return 0
    seeds = args.seeds or [profile.seed, profile.seed + 1, profile.seed + 2]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        for seed in seeds:
            p = load_profile(args.profile, overrides=[*args.set, f"seed={seed}"])
            runs.append(one_seed(p, Path(tmp) / str(seed)))
        first = load_profile(args.profile, overrides=[*args.set, f"seed={seeds[0]}"])
        d = Path(tmp) / str(seeds[0])
        served = speed(d / "ppo" / MODEL_DIR, first, args.messages, d / "rm" / MODEL_DIR,
                       args.best_of)  # fmt: skip
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
    print_best_of_n(doc.get("best_of_n"))
    return 0


def print_best_of_n(b: dict | None) -> None:
    if not b or "skipped" in b:
        return
    g, n, w = b["greedy"], b["best_of_n"], b["win_rate_rm_over_greedy"]
    print(f"best-of-{b['n']} over greedy on {b['prompts']} prompts: RM win {w['rate']:.2f} "
          f"[{w['low']:.2f}, {w['high']:.2f}], pass as written {n['pass_rate_as_written']:.2f} vs "
          f"{g['pass_rate_as_written']:.2f}, {n['latency_s_median']} s vs {g['latency_s_median']} s "
          "a message (median)")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
