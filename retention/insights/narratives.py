"""Grounded narratives: the base language model phrases each fact sheet; the checker judges it.

Per journey phase (healthy share, test AUC, SHAP drivers) and per segment (size, revenue share,
CLV, churn, RFM profile) the writer's base model (``retention.messaging.base_model``: SmolLM2 on
the local profile, a tiny random Llama on tiny) writes two or three sentences from the sheet
alone, greedily first and then sampled, ``insights.narratives.attempts`` drafts in all. The first
draft the checker accepts is released; a subject with none gets its templated sentences, which
the checker accepts by construction. So every released narrative is grounded, and the share
written by the model (``acceptance_share``) says how much the model adds.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from retention.config import NarrativesConfig, Profile, WriterModelConfig
from retention.fileio import atomic_dir, read_json, write_json
from retention.insights.facts import FactSheet, phase_sheet, segment_sheet
from retention.insights.segments import META_FILE as SEGMENTS_FILE
from retention.models.outputs import METRICS_FILE, MODEL_DIR, SHAP_FILE
from retention.progress import Progress
from retention.results import NarrativesResult

NARRATIVES_FILE = "narratives.json"
SYSTEM = (
    "You write short, plain summaries for a business dashboard. Use only the facts you are "
    "given, copy every number exactly as it is written, and add no other names or numbers."
)
WHAT = {"phase": "the customer-journey phase", "segment": "the customer segment"}


def prompt(sheet: FactSheet, cfg: NarrativesConfig) -> list[dict[str, str]]:
    ask = (
        f"Facts about {WHAT[sheet.kind]} {sheet.subject!r}:\n{sheet.lines()}\n\n"
        f"Write {cfg.min_sentences} to {cfg.max_sentences} sentences about {sheet.subject} "
        "for a manager, using these facts only."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask}]


def tidy(text: str, max_sentences: int) -> str:
    """The draft as a paragraph: markup and quotes dropped, cut after ``max_sentences``."""
    text = re.sub(r"[*#`>]+", "", text).replace("\n", " ")
    text = re.sub(r"\s+", " ", text).strip().strip('"').strip()
    parts = re.split(r"(?<=[.!?])\s+", text)
    kept = [p for p in parts[:max_sentences] if p]
    if kept and not re.search(r"[.!?]$", kept[-1]):
        kept = kept[:-1]  # cut off mid-sentence by the token budget
    return " ".join(kept)


class Phraser:
    """The base language model, loaded once, phrasing chat prompts in batches."""

    def __init__(self, model_cfg: WriterModelConfig, seed: int = 0):
        from retention.messaging.base_model import load_base

        self.model, self.tok = load_base(model_cfg)
        self.model.eval()
        self.seed = seed
        self.source = model_cfg.source

    def generate(
        self, prompts: list[list[dict[str, str]]], max_new_tokens: int, sample: bool
    ) -> list[str]:
        import torch

        texts = [
            self.tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
        out: list[str] = []
        torch.manual_seed(self.seed)
        for i in range(0, len(texts), 8):
            batch = self.tok(texts[i : i + 8], return_tensors="pt", padding=True)
            batch = batch.to(self.model.device)
            kwargs: dict[str, Any] = {"do_sample": sample, "repetition_penalty": 1.15}
            if sample:
                kwargs |= {"temperature": 0.7, "top_p": 0.9}
            with torch.inference_mode():
                gen = self.model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=self.tok.pad_token_id,
                    eos_token_id=self.tok.eos_token_id,
                    **kwargs,
                )
            new = gen[:, batch["input_ids"].shape[1] :]
            out += [t.strip() for t in self.tok.batch_decode(new.cpu(), skip_special_tokens=True)]
        return out


def ground(
    sheets: list[FactSheet], cfg: NarrativesConfig, phraser: Phraser | None
) -> list[dict[str, Any]]:
    """One released narrative per sheet: the first accepted draft, else the template."""
    done: dict[int, dict[str, Any]] = {}
    rejected: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(sheets))}
    if phraser is not None:
        progress = Progress("narratives", cfg.attempts, unit="round")
        for attempt in range(cfg.attempts):
            todo = [i for i in range(len(sheets)) if i not in done]
            if not todo:
                break
            drafts = phraser.generate(
                [prompt(sheets[i], cfg) for i in todo], cfg.max_new_tokens, sample=attempt > 0
            )
            for i, raw in zip(todo, drafts, strict=True):
                text = tidy(raw, cfg.max_sentences)
                verdict = sheets[i].check(text, cfg.min_sentences, cfg.max_sentences)
                if verdict.ok:
                    done[i] = {"text": text, "source": "llm", "attempt": attempt + 1}
                else:
                    rejected[i].append({"draft": raw[:400], "problems": verdict.problems[:5]})
            progress.step(attempt + 1, f"{len(done)}/{len(sheets)} accepted")
    out = []
    for i, sheet in enumerate(sheets):
        chosen = done.get(i) or {"text": sheet.template, "source": "template", "attempt": None}
        out.append(
            {
                "subject": sheet.subject,
                "kind": sheet.kind,
                **chosen,
                "grounded": sheet.check(chosen["text"], cfg.min_sentences, cfg.max_sentences).ok,
                "rejected": rejected[i],
                "template": sheet.template,
            }
        )
    return out


def _model_dir(d: str | Path) -> Path:
    d = Path(d)
    return d / MODEL_DIR if (d / MODEL_DIR).is_dir() else d


def fact_sheets(phase_dir: str | Path, segments_dir: str | Path) -> tuple[list[FactSheet], dict]:
    """Every phase's and every segment's sheet, and the phase tables the dashboard shows."""
    phase = read_json(Path(phase_dir) / METRICS_FILE)["details"]
    seg = read_json(_model_dir(segments_dir) / SEGMENTS_FILE)
    sheets = [phase_sheet(p, phase["phases"][p]) for p in phase["phase_order"]]
    sheets += [segment_sheet(s, int(seg["churn_window_days"])) for s in seg["segments"]]
    shap_path = Path(phase_dir) / SHAP_FILE
    tables = {
        "phases": phase["phases"],
        "phase_order": phase["phase_order"],
        "shap": read_json(shap_path) if shap_path.is_file() else None,
    }
    return sheets, tables


def train_narratives(
    profile: Profile, phase_dir: str | Path, segments_dir: str | Path, out_dir: str | Path
) -> NarrativesResult:
    cfg = profile.insights.narratives
    sheets, tables = fact_sheets(phase_dir, segments_dir)
    start = time.perf_counter()
    phraser = Phraser(profile.writer.model, profile.seed) if cfg.use_llm else None
    items = ground(sheets, cfg, phraser)
    took = time.perf_counter() - start
    accepted = sum(1 for x in items if x["source"] == "llm")
    with atomic_dir(Path(out_dir) / MODEL_DIR) as tmp:
        write_json(
            tmp / NARRATIVES_FILE,
            {
                "narratives": items,
                "fact_sheets": [s.to_dict() for s in sheets],
                **tables,
                "model_source": phraser.source if phraser else None,
            },
        )
    result = NarrativesResult(
        narratives=len(items),
        llm_drafts=sum(len(x["rejected"]) + (x["source"] == "llm") for x in items),
        acceptance_share=accepted / len(items) if phraser else None,
        ungrounded_released=sum(1 for x in items if not x["grounded"]),
        generation_s=took,
        model_source=phraser.source if phraser else "template",
        details={"narratives": [{k: x[k] for k in ("subject", "source", "text")} for x in items]},
    )
    result.save(Path(out_dir) / METRICS_FILE)
    return result
