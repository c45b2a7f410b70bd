"""Sample generation: exact counts, reproducibility, HDF5 layout, masking statistics."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from hpc_bert.data import samples as samples_module
from hpc_bert.data import shards as shards_module
from hpc_bert.data.config import SampleConfig
from hpc_bert.data.packing import FullSentencePacker, SpecialIds, mask_rows, pack_document
from hpc_bert.data.pipeline import prepare, prepare_config
from hpc_bert.testing.synthetic import synthetic_corpus
from hpc_bert.data.tokenizer import save_tokenizer, train_wordpiece
from hpc_bert.errors import UserError

ARGS = dict(max_seq_length=64, dup_factor=3, masked_lm_prob=0.15, max_predictions_per_seq=12,
            num_train_shards=3, num_test_shards=1, frac_test=0.1, seed=42, packing="doc_sentences",
            progress_bar=False)


def run(corpus, out, vocab, **over):
    return prepare(prepare_config(input=corpus, output_dir=str(out), tokenizer_name=vocab, **{**ARGS, **over}))


@pytest.fixture(scope="module")
def corpus_and_vocab(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    docs = synthetic_corpus(60, seed=11)
    (root / "corpus.txt").write_text("".join(d + "\n" for d in docs), encoding="utf-8")
    save_tokenizer(train_wordpiece(docs, vocab_size=500), str(root / "tok"))
    return str(root / "corpus.txt"), str(root / "tok" / "vocab.txt")


@pytest.fixture(scope="module")
def prepared(corpus_and_vocab, tmp_path_factory):
    corpus, vocab = corpus_and_vocab
    out = tmp_path_factory.mktemp("data")
    summary = run(corpus, out, vocab, num_workers=1)
    return out, summary


def read(path):
    with h5py.File(path) as f:
        return {k: f[k][()] for k in f}, dict(f.attrs)


def test_exact_reproducible_sample_counts(prepared):
    out, summary = prepared
    assert [(s["file"], s["samples"]) for s in summary["shards"]] == [
        ("test_shard_000.hdf5", 33), ("train_shard_000.hdf5", 376), ("train_shard_001.hdf5", 377),
        ("train_shard_002.hdf5", 299)]
    assert summary["train_samples"] == 1052 and summary["test_samples"] == 33
    assert json.loads((out / "prepare.json").read_text())["train_samples"] == 1052


def test_same_seed_same_bytes_any_worker_count_other_seed_differs(prepared, corpus_and_vocab, tmp_path, monkeypatch):
    out, _ = prepared
    corpus, vocab = corpus_and_vocab
    # small blocks and no minimum of text per worker, so that two workers really share both stages
    monkeypatch.setattr(samples_module, "MIN_BYTES_PER_WORKER", 1)
    monkeypatch.setattr(shards_module, "_BLOCK_CHARS", 3000)
    run(corpus, tmp_path / "two", vocab, num_workers=2)
    for name in ("train_shard_000.hdf5", "train_shard_001.hdf5", "train_shard_002.hdf5", "test_shard_000.hdf5"):
        assert (out / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    for name in os.listdir(out / "text_shards"):
        assert (out / "text_shards" / name).read_bytes() == (tmp_path / "two" / "text_shards" / name).read_bytes()
    run(corpus, tmp_path / "other", vocab, num_workers=1, seed=7)
    assert not np.array_equal(read(out / "train_shard_000.hdf5")[0]["input_ids"][:50],
                              read(tmp_path / "other" / "train_shard_000.hdf5")[0]["input_ids"][:50])


def test_full_sentences_packing_fills_rows(corpus_and_vocab, tmp_path):
    corpus, vocab = corpus_and_vocab
    summary = run(corpus, tmp_path / "full", vocab, num_workers=1, packing="full_sentences")
    assert summary["real_token_fraction"] >= 0.99 and summary["packing"] == "full_sentences"
    doc = run(corpus, tmp_path / "doc", vocab, num_workers=1, packing="doc_sentences")
    assert doc["real_token_fraction"] < 0.9  # BERT's per-document packing pads a lot
    stats = {s["file"]: s for s in summary["shards"]}
    for name in ("train_shard_000.hdf5", "test_shard_000.hdf5"):
        data, attrs = read(tmp_path / "full" / name)
        lengths = data["input_mask"].sum(1).astype(int)
        assert (lengths == 64).sum() == len(lengths) - attrs["dup_factor"]  # only each pass's last row is short
        ids = data["input_ids"]
        assert (ids[:, 0] == 101).all() and (ids[np.arange(len(ids)), lengths - 1] == 102).all()
        # every token once per pass, plus one [SEP] between consecutive documents
        s = stats[name]
        assert (lengths - 2).sum() == attrs["dup_factor"] * (s["tokens"] + s["documents"] - 1)
        used = data["masked_lm_positions"] > 0
        assert (data["masked_lm_ids"][used] != 102).all()  # a document [SEP] is never a label


def test_full_sentence_packer_does_not_depend_on_chunking():
    tokens = np.arange(200, 300, dtype=np.int32)
    bounds = [[0, 10, 30], [30, 31], [31, 31], [31, 70, 100]]  # the third document has no tokens

    def pack(cuts):
        packer, rows = FullSentencePacker(16, 102), []
        for a, b in zip(cuts[:-1], cuts[1:]):
            chunk = bounds[a:b]
            start = chunk[0][0]
            stream, slices = packer.add(tokens[start:chunk[-1][-1]], [[x - start for x in d] for d in chunk])
            rows += [stream[i:j].tolist() for i, j in slices]
        stream, slices = packer.finish()
        return rows + [stream[i:j].tolist() for i, j in slices]

    rows = pack([0, 4])
    flat = [t for r in rows for t in r]
    assert flat == list(range(200, 230)) + [102, 230, 102] + list(range(231, 300))
    assert all(len(r) == 16 for r in rows[:-1]) and 0 < len(rows[-1]) <= 16
    assert pack([0, 1, 2, 3, 4]) == pack([0, 2, 4]) == rows


def test_layout_dtypes_and_attributes(prepared):
    out, _ = prepared
    assert sorted(os.listdir(out)) == ["prepare.json", "test_shard_000.hdf5", "text_shards", "tokenizer",
                                       "train_shard_000.hdf5", "train_shard_001.hdf5", "train_shard_002.hdf5"]
    with h5py.File(out / "train_shard_000.hdf5") as f:
        n = f["input_ids"].shape[0]
        assert {k: (f[k].shape, str(f[k].dtype)) for k in f} == {
            "input_ids": ((n, 64), "uint16"), "input_mask": ((n, 64), "uint8"), "segment_ids": ((n, 64), "uint8"),
            "masked_lm_positions": ((n, 12), "uint16"), "masked_lm_ids": ((n, 12), "uint16"),
            "next_sentence_labels": ((n,), "uint8")}
        assert all(f[k].compression is None for k in f)
        attrs = f.attrs
        assert (attrs["max_seq_length"], attrs["max_predictions_per_seq"], attrs["mask_token_id"]) == (64, 12, 103)
        assert f.attrs["vocab_size"] == len((out / "tokenizer" / "vocab.txt").read_text().splitlines())


def test_rows_are_cls_text_sep_and_packing_drops_no_token(prepared):
    out, summary = prepared
    tokens = {s["file"]: s["tokens"] for s in summary["shards"]}
    for name in ("train_shard_000.hdf5", "test_shard_000.hdf5"):
        data, attrs = read(out / name)
        lengths = data["input_mask"].sum(1).astype(int)
        rows = np.arange(len(lengths))
        assert (data["input_ids"][:, 0] == 101).all() and (data["input_ids"][rows, lengths - 1] == 102).all()
        assert ((data["input_ids"] == 0) == (data["input_mask"] == 0)).all()
        assert (data["segment_ids"] == 0).all() and lengths.max() == 64
        # every token of the shard appears once per pass
        assert (lengths - 2).sum() == attrs["dup_factor"] * tokens[name]
    assert read(out / "test_shard_000.hdf5")[1]["dup_factor"] == 1  # held-out text is not repeated


def test_masking_statistics(prepared):
    out, _ = prepared
    data, _ = read(out / "train_shard_000.hdf5")
    for name in ("train_shard_001.hdf5", "train_shard_002.hdf5"):
        more, _ = read(out / name)
        data = {k: np.concatenate([data[k], more[k]]) for k in data}
    lengths = data["input_mask"].sum(1).astype(int)
    pos, ids = data["masked_lm_positions"].astype(int), data["masked_lm_ids"].astype(int)
    count = (pos > 0).sum(1)
    # BERT's count rule, exactly: round(15% of the tokens), at least 1, at most max_predictions
    assert (count == np.clip(np.rint(lengths * 0.15), 1, 12)).all()
    assert abs(count.sum() / lengths.sum() - 0.15) < 0.01
    for p, c, n in zip(pos, count, lengths):  # sorted, distinct, inside the text, 0-padded
        assert (np.diff(p[:c]) > 0).all() and p[0] >= 1 and p[c - 1] <= n - 2 and not p[c:].any()
    rows = np.broadcast_to(np.arange(len(pos))[:, None], pos.shape)
    used = pos > 0
    shown = data["input_ids"][rows[used], pos[used]].astype(int)
    original = ids[used]
    as_mask = (shown == 103).mean()
    kept = (shown == original).mean()
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(1 - as_mask - kept - 0.1) < 0.02
    assert (original != 103).all() and (original > 103).all()  # labels are real text tokens


def test_pack_document_targets_and_cuts():
    import random

    out = []
    pack_document([0, 5, 10, 40, 42], max_tokens=12, short_seq_prob=0.0, rng=random.Random(0), out=out)
    # sentences of 5 and 5 fill 10 (the next does not fit), a 30-token sentence is cut into
    # 12 + 12 + 6, the last one (2) joins the 6
    assert out == [(0, 10), (10, 22), (22, 34), (34, 42)]
    out = []
    pack_document([0, 3, 6, 9, 12], max_tokens=12, short_seq_prob=1.0, rng=random.Random(1), out=out)
    assert sum(e - s for s, e in out) == 12 and all(e - s <= 12 for s, e in out) and len(out) > 1


def test_mask_rows_never_touches_specials_or_padding():
    ids = SpecialIds(pad=0, cls=101, sep=102, mask=103, vocab_size=500)
    rows = np.zeros((200, 16), np.int32)
    lengths = np.random.default_rng(0).integers(1, 15, size=200)
    for i, n in enumerate(lengths):
        rows[i, 0], rows[i, 1:n + 1], rows[i, n + 1] = 101, 200 + np.arange(n), 102
    masked, pos, lab = mask_rows(rows, lengths, SampleConfig(max_seq_length=16, max_predictions_per_seq=4),
                                 ids, np.random.default_rng(1))
    changed = masked != rows
    assert not changed[:, 0].any() and not changed[np.arange(200), lengths + 1].any()
    assert not changed[np.arange(16)[None, :] > (lengths + 1)[:, None]].any()
    assert ((pos > 0).sum(1) >= 1).all() and (lab[pos > 0] >= 200).all()


def test_sample_config_errors():
    with pytest.raises(UserError, match="--max_predictions_per_seq must lie in"):
        SampleConfig(max_seq_length=16, max_predictions_per_seq=20)
    with pytest.raises(UserError, match="--masked_lm_prob"):
        SampleConfig(masked_lm_prob=1.5)
    with pytest.raises(UserError, match="--dup_factor"):
        SampleConfig(dup_factor=0)


def test_rerun_with_other_settings_needs_overwrite(prepared, corpus_and_vocab):
    out, _ = prepared
    corpus, vocab = corpus_and_vocab
    with pytest.raises(UserError, match="already holds .*--overwrite"):
        run(corpus, out, vocab, num_workers=1, dup_factor=2)


def test_cli_prepare_with_a_trained_tokenizer_feeds_the_loader(corpus_and_vocab, tmp_path, capsys):
    from hpc_bert.data.cli import main
    from hpc_bert.data.loader import PretrainingDataLoader
    from hpc_bert.data.tokenizer import load_tokenizer

    corpus, _ = corpus_and_vocab
    assert main(["prepare", "--input", corpus, "--output_dir", str(tmp_path), "--train_tokenizer",
                 "--vocab_size", "400", "--max_seq_length", "32", "--dup_factor", "2",
                 "--max_predictions_per_seq", "5", "--num_train_shards", "2", "--num_test_shards", "1",
                 "--frac_test", "0.1", "--seed", "1"]) == 0
    assert "train with --dataset_path" in capsys.readouterr().out
    tok = load_tokenizer(str(tmp_path / "tokenizer"))
    assert len(tok) <= 400 and tok.mask_token_id == 103
    loader = PretrainingDataLoader(str(tmp_path), 8, max_seq_length=32, vocab_size=len(tok))
    batch = next(iter(loader)).tensors
    assert batch["input_ids"].shape == (8, 32) and int(batch["input_ids"].max()) < len(tok)
    assert len(loader.validation_batches(4, 12)) == 3
