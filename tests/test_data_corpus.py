"""Corpus reading, sentence splitting, wiki markup stripping and text sharding."""
from __future__ import annotations

import html
import io
import json

import pytest

from hpc_bert.data.corpus import read_documents, split_sentences
from hpc_bert.data.shards import balance, make_text_shards, read_text_shard, split_documents, text_shard_files
from hpc_bert.testing.synthetic import synthetic_corpus
from hpc_bert.data.wikitext import iter_articles, strip_markup
from hpc_bert.errors import UserError


def test_sentences_split_at_ends_but_not_abbreviations():
    text = ('Mr. Smith went to Washington D.C. on Jan. 5. He met J. R. R. Tolkien there! '
            '"Is it?" she asked. The U.S. Senate met in 1790. It rained.')
    assert split_sentences(text) == [
        "Mr. Smith went to Washington D.C. on Jan. 5.", "He met J. R. R. Tolkien there!",
        '"Is it?" she asked.', "The U.S. Senate met in 1790.", "It rained."]


def test_sentences_keep_all_text():
    doc = " ".join(synthetic_corpus(1, seed=3)[0].split())
    assert " ".join(split_sentences(doc)) == doc
    assert split_sentences("   ") == []
    assert split_sentences("no end mark") == ["no end mark"]


WIKI_TEXT = (
    "{{Redirect2|Anarchist}}\n{{Infobox|name=x|{{nested|y}}}}\n"
    "'''Anarchism''' is a [[political philosophy]] that advocates [[self-governance|self-governed]] "
    "societies.<ref>{{cite book|title=T}}</ref> It comes from the Greek {{lang|grc|ἀναρχία}} "
    "(see [http://example.org the site]).\n"
    "[[File:A.jpg|thumb|A [[caption]] here.]]\n"
    '{| class="wikitable"\n| cell || cell\n|}\n'
    "==History==\n* a list item that is dropped.\n"
    "The first anarchist was [[Pierre-Joseph Proudhon]]<ref name=x/> in 1840.<!-- hidden -->\n"
    "==References==\nEverything after this heading is dropped.\n[[Category:Anarchism]]\n"
)
WIKI_XML = (
    '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">'
    "<page><title>Anarchism</title><ns>0</ns><id>12</id><revision>"
    f'<text xml:space="preserve">{html.escape(WIKI_TEXT)}</text></revision></page>'
    '<page><title>Redirected</title><ns>0</ns><redirect title="Anarchism"/>'
    "<revision><text>#REDIRECT [[Anarchism]]</text></revision></page>"
    "<page><title>Wikipedia:About</title><ns>4</ns>"
    "<revision><text>Project page text that is long enough to be kept otherwise.</text></revision></page>"
    "</mediawiki>"
)


def test_wiki_markup_is_stripped_to_prose():
    articles = list(iter_articles(io.BytesIO(WIKI_XML.encode()), min_chars=10))
    assert [t for t, _ in articles] == ["Anarchism"]
    text = articles[0][1]
    assert text == ("Anarchism is a political philosophy that advocates self-governed societies. It comes from "
                    "the Greek ἀναρχία (see the site). The first anarchist was Pierre-Joseph Proudhon in 1840.")


def test_strip_markup_handles_nesting():
    assert strip_markup("{{a|{{b|{{c}}}}}}Text [[x|[[y]]]] here, really.") == "Text y here, really."


def _write_corpus(path, docs):
    path.write_text("".join(d + "\n" for d in docs), encoding="utf-8")
    return str(path)


def test_read_documents_file_and_folder(tmp_path):
    (tmp_path / "in").mkdir()
    _write_corpus(tmp_path / "in" / "b.txt", ["second doc.", "", "third doc."])
    _write_corpus(tmp_path / "in" / "a.txt", ["first doc."])
    (tmp_path / "in" / ".hidden").write_text("ignored\n")
    assert list(read_documents(str(tmp_path / "in"))) == ["first doc.", "second doc.", "third doc."]
    assert list(read_documents(str(tmp_path / "in" / "b.txt"))) == ["second doc.", "third doc."]


def test_split_is_by_document_and_seeded():
    train, test = split_documents(100, 0.05, 1, 8, seed=1)
    assert len(test) == 5 and len(train) == 95 and not set(train) & set(test)
    assert sorted(train + test) == list(range(100))
    assert (train, test) == split_documents(100, 0.05, 1, 8, seed=1)
    assert (train, test) != split_documents(100, 0.05, 1, 8, seed=2)


def test_balance_keeps_shards_within_one_document():
    sizes = [(i * 7919) % 1000 + 1 for i in range(300)]
    shards = balance(list(range(300)), sizes, 8)
    totals = [sum(sizes[d] for d in s) for s in shards]
    assert max(totals) - min(totals) <= max(sizes)
    assert sorted(d for s in shards for d in s) == list(range(300))


def test_make_text_shards(tmp_path):
    docs = synthetic_corpus(60, seed=1)
    corpus = _write_corpus(tmp_path / "corpus.txt", docs)
    manifest = make_text_shards(corpus, str(tmp_path / "text"), 4, 1, 0.1, seed=42)
    files = text_shard_files(str(tmp_path / "text"))
    assert [f.rsplit("/", 1)[1] for f in files] == [
        "test_shard_000.txt", "train_shard_000.txt", "train_shard_001.txt", "train_shard_002.txt",
        "train_shard_003.txt"]
    assert [s["documents"] for s in manifest["shards"]] == [14, 13, 14, 13, 6]
    # every document lands in exactly one shard, sentence-split, whitespace preserved
    rebuilt = sorted(" ".join(d) for f in files for d in read_text_shard(f))
    assert rebuilt == sorted(" ".join(d.split()) for d in docs)
    assert json.loads((tmp_path / "text" / "shards.json").read_text())["num_documents"] == 60
    first = {f: open(f).read() for f in files}
    make_text_shards(corpus, str(tmp_path / "text"), 4, 1, 0.1, seed=42, overwrite=True)
    assert first == {f: open(f).read() for f in files}


def test_shard_errors(tmp_path):
    corpus = _write_corpus(tmp_path / "c.txt", synthetic_corpus(5))
    with pytest.raises(UserError, match="too few for 8 train"):
        make_text_shards(corpus, str(tmp_path / "t"), 8, 1, 0.05)
    with pytest.raises(UserError, match="disagree"):
        make_text_shards(corpus, str(tmp_path / "t"), 2, 0, 0.05)
    with pytest.raises(UserError, match="does not exist"):
        make_text_shards(str(tmp_path / "nope.txt"), str(tmp_path / "t"), 2, 1, 0.05)
    make_text_shards(corpus, str(tmp_path / "t"), 2, 1, 0.2)
    with pytest.raises(UserError, match="already holds text shards.*--overwrite"):
        make_text_shards(corpus, str(tmp_path / "t"), 2, 1, 0.2)
