"""The grounding checker: a text may only use the numbers and names of its fact sheet.

A number in the text passes when some fact rounds to it at the precision the text shows (a
percentage against a share times 100 as well); a name (a capitalised word that is not ordinary
sentence English, or an identifier such as ``MonthlyCharges`` or ``operational_metric``) passes
when it is one of the sheet's names or a word of one. Beyond grounding, a narrative must name its
subject, use at least one fact, have the sheet's number of sentences and not loop (the same three
words three times), which is what a small model does when it runs out of things to say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?%?")
WORD = re.compile(r"[A-Za-z][A-Za-z0-9_'-]*")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
# Capitalised words that are ordinary English at the start of a sentence or in a title.
COMMON = frozenset(
    """a an the this that these those their there they them its it our we you your i in on at
    of for with by from to as and or but so if when while since because after before over
    under about around across among between into onto than then also both each every most
    more many much few some all any no not only overall however meanwhile still yet here
    customers customer segment segments phase phases health healthy revenue value values
    lifetime churn churned share shares buyers buyer spend spending orders order mean average
    typical drivers driver strongest next top higher lower high low recent recently nearly
    almost roughly about together group groups members member people base total he she one
    two three four five six seven eight nine ten half quarter third days day weeks months
    month year years period window cut-off cutoff test auc shap clv rfm""".split()  # noqa: SIM905
)


@dataclass
class Check:
    ok: bool
    problems: list[str] = field(default_factory=list)


def _decimals(token: str) -> int:
    core = token.rstrip("%").replace(",", "")
    return len(core.split(".", 1)[1]) if "." in core else 0


def _matches(token: str, values: list[float], shares: list[float]) -> bool:
    try:
        x = float(token.rstrip("%").replace(",", ""))
    except ValueError:
        return False
    d = _decimals(token)
    tol = 0.5 * 10**-d + 1e-9
    candidates = list(values)
    candidates += [100 * s for s in shares]
    if not token.endswith("%"):
        candidates += shares
    return any(abs(c - x) <= tol for c in candidates)


def _sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def _is_identifier(word: str) -> bool:
    return "_" in word or bool(re.search(r"[a-z][A-Z]", word)) or bool(re.search(r"\d", word))


def check(
    text: str,
    *,
    subject: str,
    values: list[float],
    shares: list[float],
    names: list[str],
    min_sentences: int = 1,
    max_sentences: int = 3,
) -> Check:
    """Whether ``text`` is grounded in the sheet (``values``: numbers as they are; ``shares``:
    fractions also shown as percentages; ``names``: every name the text may use)."""
    problems = []
    if not text or not text.strip():
        return Check(False, ["empty"])
    for tok in NUMBER.findall(text):
        tok = tok.rstrip(",")
        if not _matches(tok.lstrip("+-"), values, shares):
            problems.append(f"number {tok!r} is not in the fact sheet")
    allowed = {n.lower() for n in names}
    allowed |= {w.lower() for n in names for w in WORD.findall(n)}
    for sentence in _sentences(text):
        for m in WORD.finditer(sentence):
            w = m.group(0).strip("'-")
            if not w or w.lower() in allowed:
                continue
            identifier = _is_identifier(w) and not NUMBER.fullmatch(w)
            if identifier or (w[0].isupper() and w.lower() not in COMMON):
                problems.append(f"name {w!r} is not in the fact sheet")
    n = len(_sentences(text))
    if not min_sentences <= n <= max_sentences:
        problems.append(f"{n} sentences, expected {min_sentences}-{max_sentences}")
    if subject.lower() not in text.lower():
        problems.append(f"does not name its subject {subject!r}")
    if not NUMBER.search(text):
        problems.append("uses no figure of the fact sheet")
    words = [w.lower() for w in WORD.findall(text)]
    grams: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - 2):
        g = tuple(words[i : i + 3])
        grams[g] = grams.get(g, 0) + 1
    if grams and max(grams.values()) >= 3:
        problems.append("repeats itself")
    return Check(not problems, problems)
