"""Wikipedia XML dump -> plain article text, one article per line.

A small, dependency-free markup stripper, good enough for pretraining text: it keeps the
prose of main-namespace articles and drops what is not running text (templates, tables,
references, file links, lists, headings, and the trailing reference sections). It is not a
full MediaWiki parser; nested constructs are removed innermost-first until none is left.
"""
from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from typing import IO, Iterator

# Sections after which an article has no more prose worth training on.
_TAIL_SECTIONS = {"references", "external links", "see also", "further reading", "notes",
                  "bibliography", "sources", "footnotes", "citations", "notes and references"}
# Link namespaces whose target is not text (interlanguage links are caught by _INTERWIKI).
_DROP_LINK_NS = {"file", "image", "category", "media", "wikipedia", "wp", "template", "help",
                 "portal", "special", "user", "talk"}

_COMMENT = re.compile(r"<!--.*?-->", re.S)
# Whole elements whose content is not prose (references, math, code, galleries ...).
_DROP_ELEMENTS = re.compile(
    r"<(ref|math|gallery|timeline|score|syntaxhighlight|source|pre|imagemap|chem|ce|hiero|"
    r"graph|mapframe|templatedata|nowiki)\b[^>]*?(?:/>|>.*?</\1\s*>)", re.S | re.I)
_TAG = re.compile(r"</?[a-zA-Z][^>]*?/?>")
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.S)
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]+\s*([^\]]*)\]")
_BOLD_ITALIC = re.compile(r"'{2,5}")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
_INTERWIKI = re.compile(r"^[a-z]{2,3}(?:-[a-z]+)?:")
_SPACES = re.compile(r"[ \t\u00a0]+")
_EMPTY_PARENS = re.compile(r"\(\s*[,;]?\s*\)")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def _replace_until_stable(pattern: re.Pattern, repl, text: str) -> str:
    """Apply ``pattern`` until nothing matches: removes nested constructs from the inside out."""
    while True:
        new = pattern.sub(repl, text)
        if new == text:
            return text
        text = new


def _template_text(match: re.Match) -> str:
    """Most templates are metadata; a few carry words that belong to the sentence."""
    parts = [p.strip() for p in match.group(0)[2:-2].split("|")]
    name = parts[0].lower()
    if name in ("lang", "lang-en", "transl") and len(parts) >= 3:
        return parts[-1]
    if name.startswith("lang-") and len(parts) >= 2:
        return parts[1]
    if name in ("convert", "cvt") and len(parts) >= 3:
        return f"{parts[1]} {parts[2]}"
    if name in ("nowrap", "nobr", "small", "smallcaps", "em", "sic") and len(parts) >= 2:
        return parts[1]
    return ""


def _link_text(match: re.Match) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    namespace = target.split(":", 1)[0].strip().lower() if ":" in target else ""
    if namespace in _DROP_LINK_NS or (namespace and _INTERWIKI.match(target.strip().lower())
                                      and "|" not in inner):
        return ""
    # the label may hold a template with its own "|" ([[aleph|{{transl|ar|alif}}]]): keep
    # it whole, templates are expanded next
    return (label if label else target).strip()


def strip_markup(wikitext: str) -> str:
    """Plain prose of one article's wikitext, paragraphs joined by single spaces."""
    text = html.unescape(wikitext)  # dumps escape twice in places: &amp;nbsp;
    text = _COMMENT.sub("", text)
    text = _DROP_ELEMENTS.sub("", text)
    text = re.sub(r"<ref\b[^>]*/>", "", text, flags=re.I)
    # Links before templates: a link's "|" inside a template would split the template's
    # arguments in the wrong place ({{nowrap|2.9 billion [[barrel (unit)|barrels]]}}).
    text = _replace_until_stable(_LINK, _link_text, text)
    text = _replace_until_stable(_TEMPLATE, _template_text, text)
    text = _replace_until_stable(_TABLE, "", text)
    text = _EXTERNAL.sub(lambda m: m.group(1), text)
    text = _TAG.sub("", text)
    text = _BOLD_ITALIC.sub("", text)

    paragraphs: list[str] = []
    for raw in text.split("\n"):
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading:
            if heading.group(2).strip().lower() in _TAIL_SECTIONS:
                break
            continue
        # Lists, table rows, leftover template braces and magic words are not prose.
        if not line or line[0] in "*#|!{}[" or line.startswith("__"):
            continue
        line = line.lstrip(":;").strip()
        line = _EMPTY_PARENS.sub("", line)
        line = _SPACES.sub(" ", line)
        line = _SPACE_BEFORE_PUNCT.sub(r"\1", line)
        # A paragraph without any sentence end is usually a caption or a leftover fragment.
        if len(line) >= 20 and re.search(r"[.!?]", line):
            paragraphs.append(line)
    return " ".join(paragraphs)


def iter_articles(xml_stream: IO[bytes], min_chars: int = 200) -> Iterator[tuple[str, str]]:
    """Yield (title, plain text) for each main-namespace, non-redirect page of a dump."""
    title, namespace, redirect, body = "", "", False, ""
    for _event, elem in ET.iterparse(xml_stream, events=("end",)):
        tag = elem.tag.rsplit("}", 1)[-1]
        if tag == "title":
            title = elem.text or ""
        elif tag == "ns":
            namespace = (elem.text or "").strip()
        elif tag == "redirect":
            redirect = True
        elif tag == "text":
            body = elem.text or ""
        elif tag == "page":
            if namespace == "0" and not redirect and not body.lstrip().upper().startswith("#REDIRECT"):
                plain = strip_markup(body)
                if len(plain) >= min_chars:
                    yield title, plain
            title, namespace, redirect, body = "", "", False, ""
            elem.clear()  # keep memory flat on big dumps
