"""Readers for public instruction and preference data, mixed into training on the gcp profile.

* OASST1 messages (the flat ``*.messages.jsonl`` export, or its parquet): each best-ranked
  assistant reply with its conversation so far becomes an SFT row.
* HH-RLHF (``{"chosen": transcript, "rejected": transcript}`` JSONL): the shared conversation is
  the prompt, the two last assistant turns are chosen and rejected.
* SHP-2 (``history``, ``human_ref_A``, ``human_ref_B``, ``labels``; 1 means A is preferred).

Rows come out in the formats the trainers already take (``sft.sft_rows``, ``reward.rm_rows``).
A malformed record is an error naming the file and line, never a silent skip; records that are
merely out of scope (another language, a deleted message) are skipped and counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Turns = list[dict[str, str]]


class DataFormatError(ValueError):
    pass


def local_copy(uri: str, folder: str | Path) -> Path:
    """A local path for ``uri``: itself, or a copy of a gs:// / https:// object in ``folder``."""
    if "://" not in uri:
        return Path(uri)
    from retention.fileio import read_bytes

    name = uri.rstrip("/").rsplit("/", 1)[-1] or "data.jsonl"
    dest = Path(folder) / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(read_bytes(uri))
    return dest


def _records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    path = Path(path)
    if path.suffix in (".parquet", ".pq"):
        import pandas as pd

        for i, row in enumerate(pd.read_parquet(path).to_dict("records"), start=1):
            yield i, row
        return
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path}: line {i}: not JSON ({err.msg})") from None
            if not isinstance(rec, dict):
                raise DataFormatError(f"{path}: line {i}: expected a JSON object")
            yield i, rec


def _need(rec: dict[str, Any], key: str, path, line: int, kind=str) -> Any:
    if key not in rec:
        raise DataFormatError(f"{path}: line {line}: field '{key}' is missing")
    value = rec[key]
    if not isinstance(value, kind):
        raise DataFormatError(f"{path}: line {line}: field '{key}' is not {kind.__name__}")
    return value


def read_oasst1(path: str | Path, lang: str | None = "en", limit: int | None = None) -> list[dict]:
    """SFT rows from OASST1 messages: every rank-0 assistant reply, with its conversation."""
    by_id: dict[str, dict[str, Any]] = {}
    for line, rec in _records(path):
        mid = _need(rec, "message_id", path, line)
        role = _need(rec, "role", path, line)
        if role not in ("prompter", "assistant"):
            raise DataFormatError(f"{path}: line {line}: field 'role' is {role!r}")
        _need(rec, "text", path, line)
        by_id[mid] = {**rec, "_line": line}
    rows = []
    for msg in by_id.values():
        if msg["role"] != "assistant" or msg.get("deleted") or msg.get("rank") not in (0, None):
            continue
        if lang and msg.get("lang") not in (lang, None):
            continue
        turns: Turns = []
        parent = msg.get("parent_id")
        while parent:
            p = by_id.get(parent)
            if p is None:
                raise DataFormatError(
                    f"{path}: line {msg['_line']}: parent_id {parent!r} is not in the file"
                )
            role = "user" if p["role"] == "prompter" else "assistant"
            turns.insert(0, {"role": role, "content": p["text"]})
            parent = p.get("parent_id")
        if not turns or turns[-1]["role"] != "user":
            continue
        rows.append(
            {"prompt": turns, "completion": [{"role": "assistant", "content": msg["text"]}]}
        )
        if limit and len(rows) >= limit:
            break
    return rows


def _hh_turns(text: str, path, line: int, field: str) -> Turns:
    parts = text.split("\n\nHuman: ")
    turns: Turns = []
    for chunk in parts[1:]:
        human, *rest = chunk.split("\n\nAssistant: ")
        turns.append({"role": "user", "content": human.strip()})
        for reply in rest:
            turns.append({"role": "assistant", "content": reply.strip()})
    if not turns or turns[-1]["role"] != "assistant":
        raise DataFormatError(
            f"{path}: line {line}: field '{field}' does not end with an Assistant turn"
        )
    return turns


def read_hh_rlhf(path: str | Path, limit: int | None = None) -> list[dict]:
    """Preference pairs from Anthropic HH-RLHF transcripts."""
    pairs = []
    for line, rec in _records(path):
        chosen = _hh_turns(_need(rec, "chosen", path, line), path, line, "chosen")
        rejected = _hh_turns(_need(rec, "rejected", path, line), path, line, "rejected")
        if chosen[:-1] != rejected[:-1]:
            raise DataFormatError(f"{path}: line {line}: chosen and rejected differ before the end")
        pairs.append({"prompt": chosen[:-1], "chosen": chosen[-1]["content"],
                      "rejected": rejected[-1]["content"], "rule": "hh-rlhf"})  # fmt: skip
        if limit and len(pairs) >= limit:
            break
    return pairs


def read_shp2(path: str | Path, limit: int | None = None) -> list[dict]:
    """Preference pairs from Stanford Human Preferences 2 (``labels`` 1: A preferred)."""
    pairs = []
    for line, rec in _records(path):
        history = _need(rec, "history", path, line)
        a = _need(rec, "human_ref_A", path, line)
        b = _need(rec, "human_ref_B", path, line)
        label = rec.get("labels")
        if label not in (0, 1):
            raise DataFormatError(f"{path}: line {line}: field 'labels' must be 0 or 1")
        chosen, rejected = (a, b) if label == 1 else (b, a)
        pairs.append({"prompt": [{"role": "user", "content": history}], "chosen": chosen,
                      "rejected": rejected, "rule": "shp-2"})  # fmt: skip
        if limit and len(pairs) >= limit:
            break
    return pairs


READERS = {"hh-rlhf": read_hh_rlhf, "shp-2": read_shp2}


def public_sft_rows(cfg, folder: str | Path) -> list[dict]:
    """The profile's OASST1 rows (``writer.sft.public``), or none."""
    if cfg is None:
        return []
    return read_oasst1(local_copy(cfg.uri, folder), lang=cfg.lang, limit=cfg.limit)


def public_pairs(cfgs, folder: str | Path) -> list[dict]:
    """The profile's public preference pairs (``writer.rm.public``), in order."""
    out: list[dict] = []
    for c in cfgs:
        out += READERS[c.format](local_copy(c.uri, folder), limit=c.limit)
    return out
