"""The trained message writer as one object: load a pushed ``writer`` model, write messages.

A pushed writer holds two LoRA adapters (``sft_adapter``, ``ppo_adapter``) and ``writer.json``
naming the base model and which writer ppo-text released (champion/challenger): ``ppo`` merges
both adapters into the base, ``sft`` the SFT adapter alone, ``template`` loads no language model
at all and writes the contract's template (the LLM writers missed the bar). Merged, generation
runs on a plain causal LM with no adapter overhead. int8 dynamic quantization of its linear
layers is an option (``writer.serve.quantize_int8``), off: on the SFT SmolLM2 writer it broke the
messages (pass rate as written 0.92 -> 0.02 on 64 held-out prompts; per-channel weights too), as
int8 activations do on a model with outlier features. Prompts state the offer in the words of the
contact contract the writer serves under. What comes out is the raw text: callers send it only
through ``shield.shielded``.

One writer is used by one thread at a time: a fast tokenizer is not safe to share across threads
(it fails with "Already borrowed") and concurrent ``generate`` calls on one model only contend for
the same cores, so calls from the server's worker threads queue on a lock.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retention.config import WriterModelConfig
from retention.contract import ContactContract
from retention.fileio import read_json
from retention.messaging.base_model import load_base
from retention.messaging.data import build_prompt
from retention.messaging.shield import template_message


class WriterLoadError(RuntimeError):
    pass


@dataclass
class MessageWriter:
    model: Any
    tokenizer: Any
    contract: ContactContract
    max_new_tokens: int = 60
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    released: str = "ppo"

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        contract: ContactContract,
        *,
        cache_dir: str | None = None,
        max_new_tokens: int = 60,
        quantize_int8: bool = False,
    ) -> MessageWriter:
        from peft import PeftModel

        d = Path(model_dir)
        meta_path = d / "writer.json"
        if not meta_path.is_file():
            raise WriterLoadError(f"{d}: not a writer model (writer.json is missing)")
        meta = read_json(meta_path)
        stage = meta.get("stage")
        released = meta.get("released", stage)
        chains = {
            ("ppo", "ppo"): ["sft_adapter", "ppo_adapter"],
            ("ppo", "sft"): ["sft_adapter"],
            ("ppo", "template"): [],
            ("sft", "sft"): ["."],
        }
        chain = chains.get((stage, released))
        if chain is None:
            raise WriterLoadError(
                f"{meta_path}: stage {stage!r} released {released!r} is not a writer"
            )
        if not chain:
            return cls(None, None, contract, max_new_tokens, released="template")
        base_cfg = WriterModelConfig.model_validate(meta["base"])
        if cache_dir is not None:
            base_cfg = base_cfg.model_copy(update={"cache_dir": cache_dir})
        model, tok = load_base(base_cfg)
        for name in chain:
            adapter = d / name
            if not (adapter / "adapter_config.json").is_file():
                raise WriterLoadError(f"{adapter}: adapter_config.json is missing")
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model.eval()
        if quantize_int8:
            model = quantized(model)
        return cls(model, tok, contract, max_new_tokens, released=released)

    def write(self, facts: list[dict[str, Any]], offer_levels: list[int]) -> list[str]:
        """Greedy messages for a batch of (facts, decided offer level); raw, not yet shielded."""
        from retention.messaging.sft import generate

        pairs = list(zip(facts, offer_levels, strict=True))
        if self.model is None:
            return [template_message(f, lvl, self.contract) for f, lvl in pairs]
        prompts = [build_prompt(f, lvl, self.contract) for f, lvl in pairs]
        with self._lock:
            return generate(self.model, self.tokenizer, prompts, self.max_new_tokens)

    def timed_write(self, facts: dict[str, Any], offer_level: int) -> tuple[str, int, float]:
        """One message with its new-token count and seconds: what the benchmark reports."""
        import torch

        if self.model is None:
            t = time.perf_counter()
            text = template_message(facts, offer_level, self.contract)
            return text, 0, time.perf_counter() - t
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


def quantized(model):
    """The model with its linear layers int8 dynamically quantized, where that runs: a CPU."""
    import torch

    if next(model.parameters()).device.type != "cpu":
        return model
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # Deprecated in favour of torchao, which is not in this stack; it still runs in 2.13.
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
