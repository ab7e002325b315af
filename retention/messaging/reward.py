"""rm: a Bradley-Terry reward model (trl ``RewardTrainer``) on seeded preference pairs.

A 1-logit sequence classifier on the base model with LoRA (the score head trained in full).
``RewardScorer`` scores a (prompt, message) in exactly the text the trainer saw: the chat
template applied to the prompt turns plus the message as the assistant turn, with the pad token
distinct from EOS, so a rollout's last real token is the one the model learned to read.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from retention.config import Profile
from retention.fileio import atomic_dir, write_json
from retention.messaging.base_model import load_base
from retention.messaging.data import preference_pairs
from retention.messaging.public_data import public_pairs
from retention.messaging.sft import (
    lora_config,
    step_progress,
    trainer_kwargs,
    without_log_prints,
)
from retention.models.outputs import METRICS_FILE, MODEL_DIR
from retention.results import RewardResult

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 20_000


def rm_rows(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "prompt": p["prompt"],
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
        }
        for p in pairs
    ]


class RewardScorer:
    """Scores (prompt turns, message) pairs with a reward model, in its training format."""

    def __init__(self, model, tokenizer, max_length: int = 192):
        self.model, self.tok, self.max_length = model.eval(), tokenizer, max_length

    def text(self, prompt: list[dict[str, str]], message: str) -> str:
        turns = [*prompt, {"role": "assistant", "content": message}]
        return self.tok.apply_chat_template(turns, tokenize=False)

    def score(self, prompts: list[list[dict[str, str]]], messages: list[str]) -> np.ndarray:
        import torch

        out = []
        texts = [self.text(p, m) for p, m in zip(prompts, messages, strict=True)]
        side = self.tok.padding_side
        self.tok.padding_side = "right"  # the classifier reads the last non-pad token
        try:
            for i in range(0, len(texts), 16):
                batch = self.tok(
                    texts[i : i + 16],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    add_special_tokens=False,
                ).to(self.model.device)
                with torch.inference_mode():
                    out.append(self.model(**batch).logits[:, 0].float().cpu().numpy())
        finally:
            self.tok.padding_side = side
        return np.concatenate(out) if out else np.empty(0)


def pairwise_accuracy(scorer: RewardScorer, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    prompts = [p["prompt"] for p in pairs]
    chosen = scorer.score(prompts, [p["chosen"] for p in pairs])
    rejected = scorer.score(prompts, [p["rejected"] for p in pairs])
    win = chosen > rejected
    by_rule: dict[str, list[bool]] = {}
    for p, w in zip(pairs, win, strict=True):
        by_rule.setdefault(p["rule"], []).append(bool(w))
    return {
        "accuracy": float(win.mean()),
        "accuracy_by_rule": {k: float(np.mean(v)) for k, v in sorted(by_rule.items())},
        "mean_margin": float((chosen - rejected).mean()),
    }


def train_rm(profile: Profile, out_dir: str | Path) -> RewardResult:
    """Train the reward model; write ``model/`` (adapter + score head + tokenizer), metrics."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    cfg = profile.writer
    model, tok = load_base(cfg.model, for_sequence_classification=True)
    out = Path(out_dir)
    r = cfg.rm
    args = RewardConfig(
        **trainer_kwargs(
            out, r.steps, r.batch_size, r.learning_rate, r.max_length, r.bf16, profile.seed
        )  # fmt: skip
    )
    trainer = without_log_prints(
        RewardTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(
                rm_rows(
                    preference_pairs(cfg.rm.pairs, profile.seed, profile.contract)
                    + public_pairs(cfg.rm.public, out / "public")
                )
            ),
            processing_class=tok,
            peft_config=lora_config(cfg, task_type="SEQ_CLS"),
            callbacks=[step_progress("rm")],
        )
    )
    t = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - t
    scorer = RewardScorer(trainer.model, tok, cfg.rm.max_length)
    held_out = preference_pairs(
        cfg.rm.eval_pairs, profile.seed + EVAL_SEED_OFFSET, profile.contract
    )
    judged = pairwise_accuracy(scorer, held_out)
    metrics = RewardResult(
        train_loss=float(result.training_loss),
        steps=cfg.rm.steps,
        train_s=train_s,
        s_per_step=train_s / cfg.rm.steps,
        eval_pairs=len(held_out),
        accuracy=judged["accuracy"],
        mean_margin=judged["mean_margin"],
        details={"accuracy_by_rule": judged["accuracy_by_rule"]},
    )
    with atomic_dir(out / MODEL_DIR) as tmp:
        trainer.model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        write_json(tmp / "writer.json", {"stage": "rm", "base": cfg.model.model_dump()})
    metrics.save(out / METRICS_FILE)
    log.info("rm: held-out pairwise accuracy %.3f", metrics.accuracy)
    return metrics
