"""All preparation steps: corpus -> text shards -> tokenizer -> HDF5 samples -> prepare.json.

Output folder layout (``--output_dir DATA``, which is what ``--dataset_path`` points at):
  DATA/train_shard_NNN.hdf5, DATA/test_shard_NNN.hdf5   samples (the loader reads these)
  DATA/tokenizer/                                        the tokenizer that made them
  DATA/text_shards/                                      sentence-split text shards
  DATA/prepare.json                                      settings and counts

Three stages, so that a cluster can run them as jobs (hpc_bert.data.cluster): ``split_stage``
(text shards and the tokenizer), ``samples_stage`` (all sample shards, or a group of them),
``summary_stage`` (prepare.json from the shards' own counts). ``prepare`` runs them here, now.
Every stage resumes: outputs complete from an earlier run with the same settings are kept.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Callable

from hpc_bert.atomic import write_json_atomic
from hpc_bert.config.flags import build_config, flat_dict
from hpc_bert.data.config import PrepareConfig
from hpc_bert.data.fetch import fetch
from hpc_bert.data.samples import make_samples, shard_stats
from hpc_bert.data.shards import make_text_shards, text_shard_files
from hpc_bert.data.tokenizer import load_tokenizer, save_tokenizer, train_wordpiece
from hpc_bert.errors import UserError

TEXT_SHARD_DIR = "text_shards"
TOKENIZER_DIR = "tokenizer"
SUMMARY = "prepare.json"
_TRAINED_ON = "trained_on.json"  # in TOKENIZER_DIR: which split a trained vocab was trained on


def _quiet(_msg: str) -> None:
    pass


def prepare_config(**flags) -> PrepareConfig:
    """A PrepareConfig from flag names and values (``prepare_config(input=..., dup_factor=1)``)."""
    return build_config(PrepareConfig, flags)


def _train_sentences(text_dir: str):
    """Sentences of the train text shards: a trained vocab never sees held-out text."""
    for path in text_shard_files(text_dir):
        if os.path.basename(path).startswith("train"):
            with open(path, encoding="utf-8") as fh:
                yield from (line for line in fh if line.strip())


def text_dir(cfg: PrepareConfig) -> str:
    return os.path.join(cfg.output_dir, TEXT_SHARD_DIR)


def stage_tokenizer(cfg: PrepareConfig):
    """The tokenizer that makes the samples: the named one, or the one trained by the split stage."""
    if cfg.tokenizer.tokenizer_name:
        return load_tokenizer(cfg.tokenizer.tokenizer_name)
    tok_dir = os.path.join(cfg.output_dir, TOKENIZER_DIR)
    if not os.path.isfile(os.path.join(tok_dir, _TRAINED_ON)):
        raise UserError(f"no trained tokenizer in {tok_dir}: run the split stage first "
                        "(`python -m hpc_bert.data prepare` without --cluster does every stage)")
    return load_tokenizer(tok_dir)


def split_stage(cfg: PrepareConfig, log: Callable[[str], None] = _quiet) -> dict:
    """Text shards in DATA/text_shards and the tokenizer in DATA/tokenizer; returns the split's manifest."""
    tok = cfg.tokenizer
    if tok.tokenizer_name:  # a bad name fails before any work is done
        load_tokenizer(tok.tokenizer_name)
    inputs = cfg.inputs
    if not inputs.given:
        corpus = os.path.join(cfg.output_dir, "corpus")
        log(f"fetching the default corpora into {corpus}")
        fetch(corpus, ("wiki", "sotu"))
        inputs = dataclasses.replace(inputs, input=corpus)
    manifest = make_text_shards(inputs, text_dir(cfg), cfg.split, cfg.samples.seed, cfg.workers, cfg.overwrite,
                                cfg.progress_bar)
    log(f"{manifest['num_documents']} documents -> {len(manifest['shards'])} text shards in {text_dir(cfg)}"
        + (" (complete from an earlier run: kept)" if manifest.get("reused") else ""))
    tok_dir = os.path.join(cfg.output_dir, TOKENIZER_DIR)
    if tok.train_tokenizer:
        trained_on = {"split": hashlib.sha256(json.dumps(manifest["key"], sort_keys=True).encode()).hexdigest(),
                      "vocab_size": tok.vocab_size, "lowercase": tok.lowercase}
        try:
            with open(os.path.join(tok_dir, _TRAINED_ON)) as fh:
                current = json.load(fh) == trained_on
        except (OSError, ValueError):
            current = False
        if not current:
            tokenizer = train_wordpiece(_train_sentences(text_dir(cfg)), vocab_size=tok.vocab_size,
                                        lowercase=tok.lowercase)
            save_tokenizer(tokenizer, tok_dir)
            write_json_atomic(os.path.join(tok_dir, _TRAINED_ON), trained_on)
    else:
        save_tokenizer(load_tokenizer(tok.tokenizer_name), tok_dir)
    log(f"tokenizer saved to {tok_dir}")
    return manifest


def samples_stage(cfg: PrepareConfig, only: set[str] | None = None, log: Callable[[str], None] = _quiet) -> list[dict]:
    """Sample shards from the text shards (``only``: these text shard names)."""
    return make_samples(text_shard_files(text_dir(cfg)), cfg.output_dir, stage_tokenizer(cfg), cfg.samples,
                        cfg.workers, cfg.overwrite, cfg.progress_bar, only=only, log=log)


def summary_stage(cfg: PrepareConfig, started: float | None = None, log: Callable[[str], None] = _quiet) -> dict:
    """prepare.json from the counts each sample shard recorded."""
    shards = []
    for path in text_shard_files(text_dir(cfg)):
        name = os.path.basename(path).replace(".txt", ".hdf5")
        stats = shard_stats(os.path.join(cfg.output_dir, name))
        if stats is None:
            raise UserError(f"sample shard {name} is missing in {cfg.output_dir}: run the samples stage again "
                            "(a re-run of the same command makes only the missing shards)")
        shards.append({k: v for k, v in stats.items() if k != "key"})
    seq_len = cfg.samples.max_seq_length
    slots = sum(s["samples"] for s in shards) * seq_len
    real = sum(s["real_tokens"] for s in shards)
    summary = {**{k: v for k, v in flat_dict(cfg).items() if k not in ("progress_bar", "overwrite")},
               "input": os.path.abspath(cfg.inputs.input) if cfg.inputs.input else cfg.inputs.input,
               "vocab_size_used": len(stage_tokenizer(cfg)),
               "train_samples": sum(s["samples"] for s in shards if s["split"] == "train"),
               "test_samples": sum(s["samples"] for s in shards if s["split"] == "test"),
               "real_token_fraction": round(real / slots, 6) if slots else 0.0,
               "seconds": round(time.perf_counter() - started, 2) if started is not None else None,
               "shards": shards}
    write_json_atomic(os.path.join(cfg.output_dir, SUMMARY), summary)
    log(f"{summary['train_samples']} train and {summary['test_samples']} test samples in {cfg.output_dir}, "
        f"{100 * summary['real_token_fraction']:.2f}% real tokens; train with --dataset_path {cfg.output_dir} "
        f"--tokenizer_name {os.path.join(cfg.output_dir, TOKENIZER_DIR)}")
    return summary


def prepare(cfg: PrepareConfig, log: Callable[[str], None] = _quiet) -> dict:
    """Run every stage here; returns the summary also written to ``output_dir/prepare.json``.

    No --input and no --dataset_name fetches the embedded default corpora (Wikipedia
    excerpt + State of the Union addresses) into ``output_dir/corpus``.
    """
    started = time.perf_counter()
    split_stage(cfg, log)
    for s in samples_stage(cfg, log=log):
        log(f"{s['file']}: {s['samples']} samples from {s['documents']} documents")
    return summary_stage(cfg, started, log)
