"""Corpus text: splitting a document into sentences (reading the inputs: hpc_bert.data.sources).

Sentences are found with a regular expression and a list
of abbreviations, so no model or download is needed; it is tuned for English prose, and a
wrong split only moves a sentence boundary inside a packed sequence.
"""
from __future__ import annotations

import re

# Words that end with a period without ending a sentence (lower-cased, without the period).
_ABBREVIATIONS = frozenset("""
mr mrs ms dr prof st sr jr rev hon gen col lt capt cmdr sgt maj adm gov sen rep pres supt
vs etc e.g i.e cf ca approx al viz fig figs vol vols no nos pp p op ed eds est dept univ assn
inc ltd co corp bros mt ft ave blvd rd jan feb mar apr jun jul aug sep sept oct nov dec
a.m p.m u.s u.k u.n d.c b.c a.d ph.d
""".split())
# A sentence end: terminal punctuation, optional closing quotes/brackets, whitespace, then
# something that can start a sentence (an opening quote/bracket, a capital letter or digit).
_BOUNDARY = re.compile(r"([.!?]+)([\"'\u201d\u2019)\]]*)\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9\u00c0-\u00de])")
_INITIAL_OR_ACRONYM = re.compile(r"^(?:[A-Za-z]\.)*[A-Za-z]$")


def _ends_with_abbreviation(text: str, punct_start: int) -> bool:
    """True when the period at ``punct_start`` belongs to an abbreviation or an initial."""
    if text[punct_start] != ".":
        return False
    word_start = max(text.rfind(" ", 0, punct_start), text.rfind("(", 0, punct_start)) + 1
    word = text[word_start:punct_start].lstrip("\"'\u201c\u2018[")
    if not word:
        return False
    if word.lower() in _ABBREVIATIONS:
        return True
    # "J. R. R. Tolkien", "U.S.A." — single letters separated by periods.
    return bool(_INITIAL_OR_ACRONYM.match(word)) and (len(word) == 1 or "." in word)


def split_sentences(document: str) -> list[str]:
    """Split one document into sentences (whitespace-normalised, none empty)."""
    text = " ".join(document.split())
    if not text:
        return []
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        if _ends_with_abbreviation(text, m.start(1)):
            continue
        end = m.end(2)
        sentences.append(text[start:end])
        start = m.end()
    if start < len(text):
        sentences.append(text[start:])
    return [s for s in sentences if s.strip()]
