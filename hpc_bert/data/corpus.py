"""Corpus text: reading documents and splitting them into sentences.

Input format of the pipeline: a UTF-8 text file with one document per line, or a folder of
such files (read in name order). Sentences are found with a regular expression and a list
of abbreviations, so no model or download is needed; it is tuned for English prose, and a
wrong split only moves a sentence boundary inside a packed sequence.
"""
from __future__ import annotations

import os
import re
from typing import Iterator

from hpc_bert.errors import UserError

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


def input_files(path: str) -> list[str]:
    """The corpus files behind ``--input``: the file itself, or a folder's visible files."""
    if not os.path.exists(path):
        raise UserError(f"input {path} does not exist: pass a text file with one document per line "
                        "or a folder of such files (e.g. from `python -m hpc_bert.data fetch`)")
    if os.path.isfile(path):
        return [path]
    files = sorted(os.path.join(path, name) for name in os.listdir(path)
                   if not name.startswith(".") and os.path.isfile(os.path.join(path, name)))
    if not files:
        raise UserError(f"input folder {path} holds no files: put text files with one document per line in it")
    return files


def read_documents(path: str) -> Iterator[str]:
    """Yield each non-empty line of the corpus (one document per line), in file order."""
    for name in input_files(path):
        with open(name, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    yield line


def atomic_write_text(path: str, text: str) -> None:
    """Write a file so that readers see either nothing or the whole content."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
