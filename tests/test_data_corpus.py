"""Corpus reading, sentence splitting, wiki markup stripping and text sharding."""
from __future__ import annotations

import html
import io
import json

import pytest

from hpc_bert.data import shards as shards_module
from hpc_bert.data.config import InputConfig, SplitConfig
from hpc_bert.data.corpus import split_sentences
from hpc_bert.data.shards import assign, make_text_shards, read_text_shard, text_shard_files
from hpc_bert.data.sources import documents, input_files
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


def test_read_documents_file_and_folder_recursive(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    _write_corpus(tmp_path / "in" / "b.txt", ["second doc.", "", "third doc."])
    _write_corpus(tmp_path / "in" / "a.txt", ["first doc."])
    _write_corpus(tmp_path / "in" / "sub" / "c.txt", ["fourth doc."])
    (tmp_path / "in" / ".hidden").write_text("ignored\n")
    assert read(str(tmp_path / "in")) == ["first doc.", "second doc.", "third doc.", "fourth doc."]
    assert read(str(tmp_path / "in" / "b.txt")) == ["second doc.", "third doc."]


def read(path, text_field="text"):
    return list(documents(input_files(path), text_field))


def test_split_is_by_document_position_and_seed():
    split = SplitConfig(num_train_shards=8, num_test_shards=2, frac_test=0.05)
    where = [assign(i, 1, split) for i in range(10000)]
    test = [w for w in where if w[0] == "test"]
    assert abs(len(test) - 500) <= 3  # equidistributed: the fraction is exact to a few documents
    train_counts = [sum(1 for w in where if w == ("train", k)) for k in range(8)]
    test_counts = [sum(1 for w in test if w[1] == k) for k in range(2)]
    assert max(train_counts) - min(train_counts) <= 8 and max(test_counts) - min(test_counts) <= 8
    assert where == [assign(i, 1, split) for i in range(10000)]
    assert where != [assign(i, 2, split) for i in range(10000)]


def shards(corpus, out, train=4, test=1, frac=0.1, seed=42, workers=1, overwrite=False):
    return make_text_shards(InputConfig(input=corpus), out, SplitConfig(train, test, frac), seed, workers, overwrite)


def test_make_text_shards(tmp_path, monkeypatch):
    docs = synthetic_corpus(60, seed=1)
    corpus = _write_corpus(tmp_path / "corpus.txt", docs)
    manifest = shards(corpus, str(tmp_path / "text"))
    files = text_shard_files(str(tmp_path / "text"))
    assert [f.rsplit("/", 1)[1] for f in files] == [
        "test_shard_000.txt", "train_shard_000.txt", "train_shard_001.txt", "train_shard_002.txt",
        "train_shard_003.txt"]
    counts = {s["file"]: s["documents"] for s in manifest["shards"]}
    assert counts["test_shard_000.txt"] == 6 and sum(counts.values()) == 60
    assert all(12 <= counts[f"train_shard_00{i}.txt"] <= 15 for i in range(4))
    # every document lands in exactly one shard, sentence-split, whitespace preserved
    rebuilt = sorted(" ".join(d) for f in files for d in read_text_shard(f))
    assert rebuilt == sorted(" ".join(d.split()) for d in docs)
    assert json.loads((tmp_path / "text" / "shards.json").read_text())["num_documents"] == 60
    first = {f: open(f).read() for f in files}
    # small blocks, two workers: the same bytes
    monkeypatch.setattr(shards_module, "_BLOCK_CHARS", 500)
    shards(corpus, str(tmp_path / "two"), workers=2)
    assert first == {f: open(f.replace("/text/", "/two/")).read() for f in files}
    # the same inputs and settings again: kept as they are
    assert shards(corpus, str(tmp_path / "text")).get("reused")


def test_shard_errors(tmp_path):
    corpus = _write_corpus(tmp_path / "c.txt", synthetic_corpus(5))
    with pytest.raises(UserError, match="too few to fill 8 train"):
        shards(corpus, str(tmp_path / "t"), 8, 1, 0.05)
    with pytest.raises(UserError, match="disagree"):
        shards(corpus, str(tmp_path / "t"), 2, 0, 0.05)
    with pytest.raises(UserError, match="does not exist"):
        shards(str(tmp_path / "nope.txt"), str(tmp_path / "t"), 2, 1, 0.05)
    shards(corpus, str(tmp_path / "t"), 2, 1, 0.2)
    with pytest.raises(UserError, match="already holds text shards.*--overwrite"):
        shards(corpus, str(tmp_path / "t"), 2, 1, 0.2, seed=3)
    assert shards(corpus, str(tmp_path / "t"), 2, 1, 0.2, seed=3, overwrite=True)["key"]["seed"] == 3
