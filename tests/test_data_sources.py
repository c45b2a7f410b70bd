"""Corpus inputs: every format a user has, made here as small files; bad inputs are one line."""
from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pytest

from hpc_bert.data.cli import main
from hpc_bert.data.sources import check_inputs, dataset_documents, documents, file_format, input_files
from hpc_bert.errors import UserError

DOCS = ["The first document. It has two sentences.", "Second document here.", "Third, with ünïcode café."]


def read(path, text_field="text"):
    files = input_files(str(path))
    check_inputs(files, text_field)
    return list(documents(files, text_field))


def lines(docs=DOCS) -> bytes:
    return "".join(d + "\n" for d in docs).encode()


@pytest.mark.parametrize("suffix,compress", [
    (".txt", lambda b: b), (".txt.gz", gzip.compress), (".txt.bz2", bz2.compress), (".txt.xz", lzma.compress),
    (".txt.zst", lambda b: __import__("zstandard").ZstdCompressor().compress(b))])
def test_text_plain_and_compressed(tmp_path, suffix, compress):
    path = tmp_path / f"corpus{suffix}"
    path.write_bytes(compress(lines()))
    assert read(path) == DOCS


def test_wikiextractor_blocks_and_json(tmp_path):
    blocks = "".join(f'<doc id="{i}" url="https://en.wikipedia.org/wiki?curid={i}" title="T{i}">\nT{i}\n\n'
                     f"{d}\nMore   text.\n</doc>\n" for i, d in enumerate(DOCS))
    (tmp_path / "AA").mkdir()
    (tmp_path / "AA" / "wiki_00").write_text(blocks, encoding="utf-8")
    assert file_format(str(tmp_path / "AA" / "wiki_00")) == "wikiextractor"
    assert read(tmp_path / "AA") == [f"{d} More text." for d in DOCS]  # the title line is dropped
    # wikiextractor --json: one object per line with id, url, title, text
    records = [json.dumps({"id": str(i), "url": "u", "title": f"T{i}", "text": d}) for i, d in enumerate(DOCS)]
    (tmp_path / "AB").mkdir()
    (tmp_path / "AB" / "wiki_00.jsonl.bz2").write_bytes(bz2.compress("\n".join(records).encode()))
    assert read(tmp_path / "AB") == DOCS


def test_json_lines_with_text_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"body": d, "n": i}) + "\n" for i, d in enumerate(DOCS)))
    assert read(path, "body") == DOCS


def test_parquet_and_arrow_from_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"content": DOCS, "id": [1, 2, 3]})
    ds.to_parquet(str(tmp_path / "c.parquet"))
    assert read(tmp_path / "c.parquet", "content") == DOCS
    ds.save_to_disk(str(tmp_path / "saved"))  # data-00000-of-00001.arrow + state.json + dataset_info.json
    assert read(tmp_path / "saved", "content") == DOCS


def test_dataset_name_streams_a_local_parquet_copy_offline(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "wikipedia" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"text": DOCS}).to_parquet(str(tmp_path / "wikipedia" / "data" / "train.parquet"))
    assert list(dataset_documents(str(tmp_path / "wikipedia"), None)) == DOCS
    with pytest.raises(UserError) as e:
        list(dataset_documents("wikimedia/wikipedia", "20231101.en"))
    assert "cannot stream dataset 'wikimedia/wikipedia' (20231101.en)" in str(e.value) and "\n" not in str(e.value)


def one_line_cli(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("hpc_bert: error: ") and err.count("\n") == 1
    return err


def test_bad_inputs_are_one_line_before_any_work(tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]) + "\n")
    good = tmp_path / "in" / "a.txt"
    good.parent.mkdir()
    good.write_bytes(lines())
    bad = tmp_path / "in" / "b.txt.gz"
    bad.write_bytes(b"this is not gzip at all")
    out = tmp_path / "out"
    args = ("prepare", "--output_dir", str(out), "--tokenizer_name", str(vocab), "--progress_bar", "false")
    err = one_line_cli(capsys, *args, "--input", str(tmp_path / "in"))
    assert f"cannot read input file {bad}" in err
    assert not (out / "text_shards" / "train_shard_000.txt").exists()  # nothing was written
    bad.unlink()
    (tmp_path / "in" / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    err = one_line_cli(capsys, *args, "--input", str(tmp_path / "in"))
    assert "c.jsonl line 1 has no field 'text' (it has: body): pass --text_field NAME" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("\n  \n")
    assert "holds no text" in one_line_cli(capsys, *args, "--input", str(tmp_path / "empty"))
    (tmp_path / "nothing").mkdir()
    assert "holds no files" in one_line_cli(capsys, *args, "--input", str(tmp_path / "nothing"))
    assert "--packing 'full' is not valid: choose one of full_sentences, doc_sentences" in one_line_cli(
        capsys, *args, "--input", str(good), "--packing", "full")


def test_shipped_data_config_parses_into_sections(tmp_path):
    from hpc_bert.config.flags import parse_config
    from hpc_bert.data.config import PrepareConfig
    from pretrain_fixtures import REPO

    cfg, _ = parse_config(PrepareConfig, ["--config", f"{REPO}/configs/data/bert128.yaml", "--input", "corpus",
                                          "--output_dir", str(tmp_path), "--tokenizer_name", "vocab.txt",
                                          "--dup_factor", "2"], prog="test")
    assert (cfg.split.num_train_shards, cfg.samples.packing, cfg.jobs.shards_per_task) == (256, "full_sentences", 4)
    assert cfg.samples.dup_factor == 2  # the command line wins over the file
