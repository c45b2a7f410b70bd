"""All preparation steps in one call: corpus -> text shards -> tokenizer -> HDF5 samples.

Output folder layout (``--output_dir DATA``, which is what ``--dataset_path`` points at):
  DATA/train_shard_NNN.hdf5, DATA/test_shard_NNN.hdf5   samples (the loader reads these)
  DATA/tokenizer/                                        the tokenizer that made them
  DATA/text_shards/                                      sentence-split text shards
  DATA/prepare.json                                      settings and counts
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

from hpc_bert.data.corpus import atomic_write_text
from hpc_bert.data.samples import SampleConfig, make_samples
from hpc_bert.data.shards import make_text_shards, text_shard_files
from hpc_bert.data.tokenizer import load_tokenizer, save_tokenizer, train_wordpiece
from hpc_bert.errors import UserError

TEXT_SHARD_DIR = "text_shards"
TOKENIZER_DIR = "tokenizer"


def _quiet(_msg: str) -> None:
    pass


def _train_sentences(text_dir: str):
    """Sentences of the train text shards: a trained vocab never sees held-out text."""
    for path in text_shard_files(text_dir):
        if os.path.basename(path).startswith("train"):
            with open(path, encoding="utf-8") as fh:
                yield from (line for line in fh if line.strip())


def resolve_tokenizer(tokenizer_name: str | None, train_tokenizer: bool, text_dir: str, vocab_size: int,
                      lowercase: bool, min_frequency: int = 2):
    if train_tokenizer:
        if tokenizer_name:
            raise UserError("--tokenizer_name and --train_tokenizer are both given: choose one")
        return train_wordpiece(_train_sentences(text_dir), vocab_size=vocab_size, lowercase=lowercase,
                               min_frequency=min_frequency)
    if not tokenizer_name:
        raise UserError("no tokenizer: pass --tokenizer_name VOCAB_TXT_OR_DIR (BERT's vocab: "
                        "`python -m hpc_bert.data fetch --sources vocab --output_dir DIR`) or --train_tokenizer")
    return load_tokenizer(tokenizer_name)


def prepare(input_path: str | None, output_dir: str, tokenizer_name: str | None = None,
            train_tokenizer: bool = False, vocab_size: int = 30522, lowercase: bool = True,
            max_seq_length: int = 128, dup_factor: int = 5, masked_lm_prob: float = 0.15,
            max_predictions_per_seq: int = 20, short_seq_prob: float = 0.1, num_train_shards: int = 8,
            num_test_shards: int = 1, frac_test: float = 0.05, seed: int = 42,
            num_workers: int | None = None, overwrite: bool = False,
            log: Callable[[str], None] = _quiet) -> dict:
    """Run every step; returns the summary also written to ``output_dir/prepare.json``.

    ``input_path`` None fetches the embedded default corpora (Wikipedia excerpt + State of
    the Union addresses) into ``output_dir/corpus``.
    """
    config = SampleConfig(max_seq_length=max_seq_length, dup_factor=dup_factor, masked_lm_prob=masked_lm_prob,
                          max_predictions_per_seq=max_predictions_per_seq, short_seq_prob=short_seq_prob,
                          seed=seed)  # validates before any work
    started = time.perf_counter()
    # a named tokenizer is loaded first so that a bad name fails before any work is done
    tokenizer = None if train_tokenizer and not tokenizer_name else \
        resolve_tokenizer(tokenizer_name, train_tokenizer, "", vocab_size, lowercase)
    if input_path is None:
        from hpc_bert.data.fetch import fetch

        input_path = os.path.join(output_dir, "corpus")
        log(f"fetching the default corpora into {input_path}")
        fetch(input_path, ("wiki", "sotu"))
    text_dir = os.path.join(output_dir, TEXT_SHARD_DIR)
    manifest = make_text_shards(input_path, text_dir, num_train_shards, num_test_shards, frac_test, seed,
                                overwrite=overwrite)
    log(f"{manifest['num_documents']} documents -> {len(manifest['shards'])} text shards in {text_dir}")
    if tokenizer is None:
        tokenizer = resolve_tokenizer(None, True, text_dir, vocab_size, lowercase)
    tok_dir = save_tokenizer(tokenizer, os.path.join(output_dir, TOKENIZER_DIR))
    log(f"tokenizer with {len(tokenizer)} tokens saved to {tok_dir}")
    shards = make_samples(text_shard_files(text_dir), output_dir, tokenizer, config, num_workers, overwrite)
    summary = {
        "input": os.path.abspath(input_path), "tokenizer": tokenizer_name or "trained", "vocab_size": len(tokenizer),
        "max_seq_length": max_seq_length, "dup_factor": dup_factor, "masked_lm_prob": masked_lm_prob,
        "max_predictions_per_seq": max_predictions_per_seq, "short_seq_prob": short_seq_prob,
        "num_train_shards": num_train_shards, "num_test_shards": num_test_shards, "frac_test": frac_test,
        "seed": seed, "train_samples": sum(s["samples"] for s in shards if s["split"] == "train"),
        "test_samples": sum(s["samples"] for s in shards if s["split"] == "test"),
        "seconds": round(time.perf_counter() - started, 2), "shards": shards,
    }
    atomic_write_text(os.path.join(output_dir, "prepare.json"), json.dumps(summary, indent=1) + "\n")
    log(f"{summary['train_samples']} train and {summary['test_samples']} test samples in {output_dir} "
        f"({summary['seconds']} s); train with --dataset_path {output_dir} --tokenizer_name {tok_dir}")
    return summary
