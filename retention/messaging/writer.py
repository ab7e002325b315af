"""The trained message writer as one object: load a pushed ``writer`` model, write messages.

A pushed writer holds two LoRA adapters (``sft_adapter``, ``ppo_adapter``) and ``writer.json``
naming the base model. Both adapters are merged into the base at load, so generation runs on a
plain causal LM with no adapter overhead. Prompts state the offer in the words of the contact
contract the writer serves under. What comes out is the raw text: callers send it only through
``shield.shielded``.

One writer is used by one thread at a time: a fast tokenizer is not safe to share across threads
(it fails with "Already borrowed") and concurrent ``generate`` calls on one model only contend for
the same cores, so calls from the server's worker threads queue on a lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retention.config import WriterModelConfig
from retention.contract import ContactContract
from retention.fileio import read_json
from retention.messaging.base_model import load_base
from retention.messaging.data import build_prompt


class WriterLoadError(RuntimeError):
    pass


@dataclass
class MessageWriter:
    model: Any
    tokenizer: Any
    contract: ContactContract
    max_new_tokens: int = 60
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        contract: ContactContract,
        *,
        cache_dir: str | None = None,
        max_new_tokens: int = 60,
    ) -> MessageWriter:
        from peft import PeftModel

        d = Path(model_dir)
        meta_path = d / "writer.json"
        if not meta_path.is_file():
            raise WriterLoadError(f"{d}: not a writer model (writer.json is missing)")
        meta = read_json(meta_path)
        base_cfg = WriterModelConfig.model_validate(meta["base"])
        if cache_dir is not None:
            base_cfg = base_cfg.model_copy(update={"cache_dir": cache_dir})
        model, tok = load_base(base_cfg)
        chain = {"ppo": ["sft_adapter", "ppo_adapter"], "sft": ["."]}.get(meta.get("stage"))
        if chain is None:
            raise WriterLoadError(f"{meta_path}: stage {meta.get('stage')!r} is not a writer")
        for name in chain:
            adapter = d / name
            if not (adapter / "adapter_config.json").is_file():
                raise WriterLoadError(f"{adapter}: adapter_config.json is missing")
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model.eval()
        return cls(model, tok, contract, max_new_tokens)

    def write(self, facts: list[dict[str, Any]], offer_levels: list[int]) -> list[str]:
        """Greedy messages for a batch of (facts, decided offer level); raw, not yet shielded."""
        from retention.messaging.sft import generate

        prompts = [
            build_prompt(f, lvl, self.contract) for f, lvl in zip(facts, offer_levels, strict=True)
        ]
        with self._lock:
            return generate(self.model, self.tokenizer, prompts, self.max_new_tokens)

    def timed_write(self, facts: dict[str, Any], offer_level: int) -> tuple[str, int, float]:
        """One message with its new-token count and seconds: what the benchmark reports."""
        import torch

        tok = self.tokenizer
        prompt = build_prompt(facts, offer_level, self.contract)
        with self._lock:
            text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            batch = tok(text, return_tensors="pt")
            t = time.perf_counter()
            with torch.inference_mode():
                out = self.model.generate(
                    **batch,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
            seconds = time.perf_counter() - t
            new = out[0, batch["input_ids"].shape[1] :]
            message = tok.decode(new, skip_special_tokens=True).strip()
        return message, int(new.shape[0]), seconds
