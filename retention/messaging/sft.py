"""sft: LoRA supervised fine-tuning of the base model on domain examples (trl ``SFTTrainer``).

Prompt/completion chat format, loss on the completion only, LoRA on the attention projections,
bf16 autocast with gradient checkpointing off (the fast setting on a CPU). The held-out prompts
(other seeds than the training examples) are generated for after training, and the messages are
judged by the shield: pass rate, violations by rule, distinct-2.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from retention.config import Profile, WriterConfig
from retention.fileio import atomic_dir, write_json
from retention.messaging.base_model import load_base
from retention.messaging.data import Example, examples
from retention.messaging.device import bf16_ok, device
from retention.messaging.public_data import public_sft_rows
from retention.messaging.shield import check_message
from retention.models.outputs import METRICS_FILE, MODEL_DIR
from retention.progress import Progress
from retention.results import SftResult

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 10_000  # evaluation prompts come from other seeds than any training data


def lora_config(cfg: WriterConfig, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    lo = cfg.sft.lora
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=list(lo.target_modules),
        task_type=task_type,
    )


def trainer_kwargs(out: Path, steps: int, batch_size: int, lr: float, max_length: int,
                   bf16: bool, seed: int) -> dict[str, Any]:  # fmt: skip
    """The settings SFT and RM share: bf16 where the hardware has it, no checkpointing, nothing
    saved; the GPU when there is one. Turns off datasets' bars (one per tokenising and filtering
    pass) for the process: the step progress is what a person reads."""
    from datasets.utils.tqdm import disable_progress_bars

    disable_progress_bars()
    return {
        "output_dir": str(out / "trainer"),
        "max_steps": steps,
        "per_device_train_batch_size": batch_size,
        "learning_rate": lr,
        "max_length": max_length,
        "bf16": bf16_ok(bf16),
        "gradient_checkpointing": False,
        "use_cpu": device().type == "cpu",
        "logging_steps": max(1, steps // 10),
        "save_strategy": "no",
        "report_to": "none",
        "seed": seed,
        # step_progress reports the steps; the trainer's own bar and log dicts would repeat them.
        "disable_tqdm": True,
    }


def without_log_prints(trainer):
    """The trainer without the callback that prints each log dict (tqdm off turns it on):
    ``step_progress`` reports the steps and the loss once, readably."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def step_progress(what: str):
    """A transformers ``TrainerCallback`` that reports the trainer's steps through the progress
    helper (step k/n, s/step, the last logged loss); built here so transformers loads only when a
    trainer does."""
    from transformers import TrainerCallback

    class StepProgress(TrainerCallback):
        def __init__(self) -> None:
            self.progress: Progress | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.progress = Progress(what, state.max_steps, unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            # The loss is logged every ``logging_steps``; show the latest one.
            loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
            detail = f"loss {loss:.3f}" if loss is not None else ""
            self.progress.step(min(state.global_step, state.max_steps), detail)

    return StepProgress()


def sft_rows(items: list[Example]) -> list[dict[str, Any]]:
    return [
        {"prompt": e.prompt(), "completion": [{"role": "assistant", "content": e.message}]}
        for e in items
    ]


def generate(model, tok, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
    """Greedy completions for chat prompts, batched, decoded without special tokens."""
    import torch

    texts = [
        tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts
    ]
    out = []
    model.eval()
    for i in range(0, len(texts), 8):
        batch = tok(texts[i : i + 8], return_tensors="pt", padding=True).to(model.device)
        with torch.inference_mode():
            gen = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        new = gen[:, batch["input_ids"].shape[1] :]
        out += [t.strip() for t in tok.batch_decode(new.cpu(), skip_special_tokens=True)]
    return out


def distinct_2(texts: list[str]) -> float:
    """Distinct bigrams over all bigrams: 1.0 is all different, near 0 is one message repeated."""
    grams = [tuple(w[i : i + 2]) for w in (t.split() for t in texts) for i in range(len(w) - 1)]
    return len(set(grams)) / max(len(grams), 1)


def judge(messages: list[str], items: list[Example]) -> dict[str, Any]:
    results = [
        check_message(m, e.facts, e.offer_level, e.contract)
        for m, e in zip(messages, items, strict=True)
    ]
    by_rule: dict[str, int] = {}
    for r in results:
        for v in r.violations:
            by_rule[v.rule] = by_rule.get(v.rule, 0) + 1
    return {
        "shield_pass_rate": sum(r.passed for r in results) / max(len(results), 1),
        "violations_by_rule": by_rule,
        "distinct_2": distinct_2(messages),
        "failed": [{"message": m, "violations": [v.detail for v in r.violations]}
                   for m, r in zip(messages, results, strict=True) if not r.passed][:12],
    }  # fmt: skip


def eval_examples(profile: Profile) -> list[Example]:
    return examples(
        profile.writer.sft.eval_prompts, profile.seed + EVAL_SEED_OFFSET, profile.contract
    )


def train_sft(profile: Profile, out_dir: str | Path) -> SftResult:
    """Train the LoRA adapter; write ``model/`` (adapter + tokenizer) and ``metrics.json``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    cfg = profile.writer
    model, tok = load_base(cfg.model)
    train = examples(
        cfg.sft.examples, profile.seed, profile.contract, cfg.sft.flawed_share, tuple(cfg.sft.flaws)
    )
    out = Path(out_dir)
    s = cfg.sft
    args = SFTConfig(
        **trainer_kwargs(
            out, s.steps, s.batch_size, s.learning_rate, s.max_length, s.bf16, profile.seed
        ),  # fmt: skip
        completion_only_loss=True,
    )
    trainer = without_log_prints(
        SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(
                sft_rows(train) + public_sft_rows(cfg.sft.public, out / "public")
            ),
            processing_class=tok,
            peft_config=lora_config(cfg),
            callbacks=[step_progress("sft")],
        )
    )
    t = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - t
    metrics = SftResult(
        train_loss=float(result.training_loss),
        steps=cfg.sft.steps,
        train_s=train_s,
        s_per_step=train_s / cfg.sft.steps,
    )
    if cfg.sft.evaluate:
        held_out = eval_examples(profile)
        t = time.perf_counter()
        messages = generate(trainer.model, tok, [e.prompt() for e in held_out],
                            cfg.sft.max_new_tokens)  # fmt: skip
        verdict = judge(messages, held_out)
        metrics.eval_prompts = len(held_out)
        metrics.generation_s = time.perf_counter() - t
        metrics.shield_pass_rate = verdict["shield_pass_rate"]
        metrics.distinct_2 = verdict["distinct_2"]
        metrics.details = {
            "violations_by_rule": verdict["violations_by_rule"],
            "failed": verdict["failed"],
            "samples": messages[:8],
        }
    with atomic_dir(out / MODEL_DIR) as tmp:
        trainer.model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        write_json(tmp / "writer.json", {"stage": "sft", "base": cfg.model.model_dump()})
    metrics.save(out / METRICS_FILE)
    shield = metrics.shield_pass_rate
    log.info("sft: loss %.3f, shield pass %s", metrics.train_loss,
             "not evaluated (ppo-text compares)" if shield is None else f"{shield:.2f}")  # fmt: skip
    return metrics
